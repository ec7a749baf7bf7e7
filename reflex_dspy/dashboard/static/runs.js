// The runs list: most recent first, branches right under their parent (└─ ⎇ parent/iter).
import { badge, h, score, when } from "./util.js";

const COLUMNS = ["ID", "Created", "Status", "Strategy", "Model", "Iters", "Baseline", "Best", "Final", "Target",
  "Dataset", "Reasoning"];

export function renderRuns(data, ui) {
  if (!data.runs.length) return emptyState(data.root);
  const rows = data.runs.map((run) => row(run, ui));
  return h("section", { class: "card" },
    h("div", { class: "card-title" }, `Runs`, h("span", { class: "muted" }, ` · ${data.runs.length} in ${data.root}`)),
    h("div", { class: "table-wrap" },
      h("table", { class: "runs", id: "runs-table" },
        h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { class: numeric(c) ? "num" : null }, c)))),
        h("tbody", {}, rows))));
}

function numeric(column) {
  return ["Iters", "Baseline", "Best", "Final"].includes(column);
}

function idCell(run) {
  if (!run.branched_from) return h("td", { class: "id" }, h("span", { class: "run-id" }, run.id));
  const parent = run.branched_from;
  return h("td", { class: "id" },
    h("span", { class: "indent", style: { "padding-left": `${(run.depth - 1) * 1.4}em` } }, "└─ "),
    h("span", { class: "run-id" }, run.id), " ",
    h("span", { class: "branch-badge", title: `branched from run ${parent.run_id}, iteration ${parent.iteration}` },
      `⎇ ${parent.run_id}/${parent.iteration}`));
}

function datasetCell(run, ui) {
  if (!run.dataset) return h("td", { class: "muted" }, "–");
  const open = ui.openDatasets.has(run.id);
  const button = h("button", {
    type: "button", class: "link dataset", title: open ? "hide the full path" : run.dataset,
    onclick: (event) => {
      event.stopPropagation();
      if (open) ui.openDatasets.delete(run.id); else ui.openDatasets.add(run.id);
      ui.rerender();
    },
  }, open ? run.dataset : run.dataset_name);
  return h("td", {}, button);
}

function row(run, ui) {
  const iters = run.max_iterations ? `${run.iterations}/${run.max_iterations}` : String(run.iterations);
  return h("tr", {
    class: `run-row${run.branched_from ? " branch-row" : ""}`, tabindex: "0", "data-run": run.id,
    onclick: () => { location.hash = `#/runs/${run.id}`; },
    onkeydown: (e) => { if (e.key === "Enter") location.hash = `#/runs/${run.id}`; },
  },
  idCell(run),
  h("td", { class: "nowrap" }, when(run.created)),
  h("td", {}, badge(run.status), run.silence && run.silence.stale
    ? h("span", { class: "stale", title: "the runner's process is alive but has stopped sending heartbeats" },
      ` no word for ${Math.round(run.silence.seconds)} s`) : null),
  h("td", {}, run.strategy || "–"),
  h("td", { class: "model" }, run.model || "–"),
  h("td", { class: "num" }, iters),
  h("td", { class: "num" }, score(run.baseline)),
  h("td", { class: "num best" }, score(run.best)),
  h("td", { class: "num" }, score(run.final)),
  h("td", { class: "target" }, run.target.text),
  datasetCell(run, ui),
  h("td", { class: "model" }, run.reasoning_model || "–"));
}

function emptyState(root) {
  return h("section", { class: "card empty", id: "empty-state" },
    h("h2", {}, "No runs yet"),
    h("p", {}, "Nothing has been recorded in ", h("code", {}, root), ". Start a first run:"),
    h("pre", { class: "command" }, "reflex-dspy optimize DATA PROMPT"),
    h("p", { class: "muted" },
      "for example ", h("code", {}, "reflex-dspy optimize data.jsonl prompt.md --metric exact"),
      ". It appears here as soon as it starts (this page checks again every few seconds). ",
      "Runs recorded elsewhere: ", h("code", {}, "reflex-dspy dashboard --run-dir DIR"), "."));
}
