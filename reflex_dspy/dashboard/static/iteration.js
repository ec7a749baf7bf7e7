// The iteration detail panel: Current / Diff / Initial prompt tabs (per predictor), the reasoning
// without the auto strategy's "[axis phase N]" prefix (stripped by the server), and the scores.
import { h, phaseClass, score, signed } from "./util.js";

const TABS = [["current", "Current"], ["diff", "Diff"], ["initial", "Initial prompt"]];

export function renderIteration(it, ui) {
  if (!it) {
    return h("div", { class: "muted detail-empty" },
      "Select an iteration card to see its prompt, the diff against the previous one, and the reasoning.");
  }
  const names = it.predictors.map((p) => p.name);
  const name = names.includes(ui.predictor) ? ui.predictor : names[0];
  const pred = it.predictors.find((p) => p.name === name);
  const tab = ui.tab || "current";
  return h("div", { class: "iteration", "data-iteration": it.iteration },
    h("div", { class: "detail-head" },
      h("h2", {}, it.iteration === 0 ? "Initial prompt" : `Iteration ${it.iteration}`),
      it.phase ? h("span", { class: `phase-tag ${phaseClass(it.phase)}` }, it.phase) : null,
      it.score !== undefined ? h("span", {}, `train ${score(it.score)}`) : null,
      it.delta !== undefined ? h("span", { class: "muted" }, `Δ ${signed(it.delta)}`) : null,
      it.val_score !== undefined && it.val_score !== null ? h("span", {}, `val ${score(it.val_score)}`) : null),
    it.change_summary ? h("p", { class: "change-summary" }, it.change_summary) : null,
    names.length > 1 ? h("div", { class: "tabs predictor-tabs", role: "tablist" }, names.map((n) =>
      h("button", { type: "button", role: "tab", class: `tab${n === name ? " active" : ""}`, "data-predictor": n,
        onclick: () => ui.set({ predictor: n }) }, n))) : null,
    h("div", { class: "tabs", role: "tablist" }, TABS.map(([key, label]) =>
      h("button", { type: "button", role: "tab", class: `tab${key === tab ? " active" : ""}`, "data-tab": key,
        onclick: () => ui.set({ tab: key }) }, label))),
    tabBody(it, pred, tab),
    demos(pred),
    it.reasoning ? section("Reasoning", h("pre", { class: "reasoning" }, it.reasoning)) : null,
    it.scores_by_metric && Object.keys(it.scores_by_metric).length
      ? section("Scores", h("div", { class: "iter-metrics" }, Object.entries(it.scores_by_metric)
        .map(([m, v]) => h("span", { class: "chip" }, `${m}: ${score(v)}`)))) : null,
    it.details && Object.keys(it.details).length
      ? h("details", { class: "raw-details" }, h("summary", {}, "Details"),
        h("pre", {}, JSON.stringify(it.details, null, 2))) : null);
}

function section(title, body) {
  return h("div", { class: "detail-section" }, h("h3", {}, title), body);
}

function tabBody(it, pred, tab) {
  if (tab === "initial") return h("pre", { class: "prompt", id: "prompt-initial" }, pred.initial || "(empty)");
  if (tab === "diff") {
    const against = it.previous === 0 ? "the initial prompt" : `iteration ${it.previous}`;
    return h("div", {},
      h("div", { class: "muted diff-caption" },
        pred.changed ? `Against ${against}: added lines green, removed lines red.` : `Same instructions as ${against}.`),
      h("pre", { class: "diff", id: "prompt-diff" }, pred.diff.map((line) => h("div", {
        class: line.op === "+" ? "diff-add" : line.op === "-" ? "diff-del" : "diff-same",
      }, `${line.op === "=" ? " " : line.op} ${line.text}`))));
  }
  return h("pre", { class: "prompt", id: "prompt-current" }, pred.current || "(empty)");
}

function demos(pred) {
  if (!pred.demos.length) return null;
  return h("details", { class: "demos" },
    h("summary", {}, `${pred.demos.length} demo${pred.demos.length === 1 ? "" : "s"} attached to ${pred.name}`),
    pred.demos.map((d) => h("pre", { class: "demo" },
      Object.entries(d).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join("\n"))));
}
