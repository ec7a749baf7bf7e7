// One run: six tiles, the held-out test result, and the flow graph (baseline → phases → cards → best).
import { liveCards, liveNotices, phaseLine } from "./live.js";
import { badge, h, phaseClass, score, seconds, signed, tokens, when } from "./util.js";

export function renderRun(run, ui) {
  return h("div", { class: "run-view", "data-run": run.id },
    header(run),
    phaseLine(run),
    notices(run),
    liveNotices(run),
    tiles(run),
    testResult(run),
    liveCards(run),
    h("div", { class: "columns" },
      h("section", { class: "card flow-card" },
        h("div", { class: "card-title" }, "Flow"),
        flow(run, ui)),
      h("section", { class: "card detail-card", id: "iteration-detail" }, ui.detail)));
}

function header(run) {
  const parent = run.branched_from;
  return h("div", { class: "run-header" },
    h("a", { href: "#/", class: "back" }, "← Runs"),
    h("h1", {}, `Run ${run.id}`), badge(run.status),
    h("span", { class: "muted" }, when(run.created)),
    parent ? h("a", { class: "branch-badge", href: `#/runs/${parent.run_id}/${parent.iteration}` },
      `⎇ branched from ${parent.run_id}/${parent.iteration}`) : null,
    run.children.map((c) => h("a", { class: "branch-badge child", href: `#/runs/${c.id}` }, `⎇ ${c.id} (from ${c.iteration})`)),
    run.mlflow_url ? h("a", { class: "mlflow", href: run.mlflow_url, target: "_blank", rel: "noopener noreferrer" },
      "MLflow ↗") : null,
    h("div", { class: "run-meta muted" },
      `${run.model || "–"} · reasoning ${run.reasoning_model || "–"} · metric ${run.metrics.join(", ") || "–"}`,
      run.dataset ? ` · ${run.dataset}` : "",
      run.split_sizes.train !== undefined
        ? ` · train/val/test ${run.split_sizes.train}/${run.split_sizes.val}/${run.split_sizes.test}` : ""));
}

function notices(run) {
  const out = [];
  if (run.status === "running") {
    out.push(h("div", { class: "notice notice-running" },
      "Running: iterations appear here as they finish (the page updates by itself)."));
  }
  if (run.status === "interrupted") {
    out.push(h("div", { class: "notice notice-interrupted" },
      "Interrupted: the data up to its last checkpoint is shown. ",
      run.resume_hint ? ["Continue it with ", h("code", {}, run.resume_hint), "."] : "Resume it with compile(resume=...)."));
  }
  for (const w of run.warnings) out.push(h("div", { class: "notice notice-warning" }, `Warning: ${w}`));
  return out;
}

function tile(label, value, sub, cls = "") {
  return h("div", { class: `tile ${cls}` },
    h("div", { class: "tile-label" }, label),
    h("div", { class: "tile-value" }, value),
    h("div", { class: "tile-sub" }, sub || " "));
}

// What a mean leaves out (failed examples) or scored 0 without an answer, as the summary says it.
function caveats(m) {
  return m && m.caveats && m.caveats.length ? `, ${m.caveats.join(", ")}` : "";
}

// The eval tile's calls: the task model's, and apart those an LLM judge (the metric) made.
function evalCalls(u) {
  if (u.lm_calls == null) return "–";
  const judged = u.metric_lm_calls || 0;
  return `${u.lm_calls - judged} task calls` + (judged ? ` + ${judged} by the metric` : "") + ", whole run";
}

function tiles(run) {
  const b = run.baseline_detail;
  const best = run.best_detail;
  // aevyra-reflex's baseline.json records no sample count or split: say what is known
  const baseSub = b ? (b.n != null ? `on ${b.n}-sample ${b.split || "test"}` : "on test") + caveats(b)
    + (b.n_runs > 1 ? ` · ±${score(b.std, 4)} (${b.n_runs} runs)` : "") : "not measured yet";
  const where = best.name || "";
  const bestSub = best.improvement
    ? `${best.improvement.text} vs initial on ${best.by}`
    : best.score != null ? [best.label, where].filter(Boolean).join(", ") : "";
  const max = run.settings.max_iterations;
  return h("div", { class: "tiles", id: "tiles" },
    tile("Baseline", score(b && b.mean, 4), baseSub),
    tile(best.selected ? "Selected" : "Best", score(best.score, 4),
      bestSub + (best.improvement && where ? ` (${where})` : ""), "tile-best"),
    tile("Iterations", String(run.iterations), [max ? `of at most ${max}` : run.settings.budget
      ? `as the budget of ${run.settings.budget} metric calls allows` : "", run.stop_reason].filter(Boolean).join(" · ")),
    tile("Strategy", run.strategy || "–", run.phases.length > 1 ? `${run.phases.length} phases` : ""),
    tile("Eval tokens", tokens(run.tokens.eval), evalCalls(run.usage)),
    tile("Reasoning tokens", tokens(run.tokens.reasoning), run.usage.reasoning_calls != null ? `${run.usage.reasoning_calls} reasoning calls` : "–"));
}

function testResult(run) {
  const r = run.result;
  if (!r) {
    return h("div", { class: "test-result muted", id: "test-result" },
      "Held-out test: measured once, on the selected candidate, when the run completes.");
  }
  const sig = r.significant === true ? "sig-yes" : r.significant === false ? "sig-no" : "sig-na";
  // aevyra-reflex's result.json records the best score only, not which candidate or split
  const chosen = r.selected_iteration == null ? `best score ${score(r.selected_score, 4)}`
    : `selected ${r.selected_name} (${r.selected_label}: ${score(r.selected_score, 4)})`;
  return h("div", { class: "test-result", id: "test-result" },
    h("strong", {}, "Held-out test: "),
    `${score(run.baseline_detail && run.baseline_detail.mean, 4)} → ${score(r.final && r.final.mean, 4)}`,
    r.final && r.final.caveats && r.final.caveats.length
      ? h("span", { class: "caveats", id: "final-caveats" }, ` (on ${r.final.n}-sample ${r.final.split}${caveats(r.final)})`) : "",
    r.improvement ? h("span", { class: r.improvement.delta >= 0 ? "up" : "down" }, ` (${r.improvement.text})`) : "",
    " · ", h("span", { class: sig }, r.significance || "no significance test"),
    ` · ${chosen}`,
    r.selection_note ? h("span", { class: "muted", id: "selection-note" }, ` · ${r.selection_note}`) : "",
    r.duration_seconds != null ? ` · ${seconds(r.duration_seconds)}` : "");
}

function flow(run, ui) {
  const threshold = run.target.threshold;
  const items = [h("div", { class: "pill pill-baseline", id: "baseline-pill" },
    `Baseline ${score(run.baseline_detail && run.baseline_detail.mean, 4)}`,
    h("span", { class: "pill-sub" }, `target ${run.target.text}`))];
  const cards = run.iteration_cards;
  let i = 0;
  for (const phase of run.phases) {
    items.push(h("div", { class: `phase-header ${phaseClass(phase.phase)}`, "data-phase": phase.phase },
      `${phase.phase} ×${phase.count}`));
    for (let k = 0; k < phase.count; k += 1, i += 1) items.push(card(run, cards[i], threshold, ui));
  }
  if (!cards.length) items.push(h("div", { class: "muted flow-empty" }, run.status === "running"
    ? "Waiting for the first iteration…" : "No iterations recorded."));
  const best = run.best_detail;
  if (best.score != null) {
    const where = best.name || "";
    items.push(h("div", { class: "pill pill-best", id: "best-pill" },
      `${best.selected ? "Selected" : "Best"} ${score(best.score, 4)} on ${best.by}`,
      h("span", { class: "pill-sub" }, `${where}${best.improvement ? ` · ${best.improvement.text}` : ""}`)));
  }
  return h("div", { class: "flow", id: "flow" }, items);
}

function card(run, c, threshold, ui) {
  const useVal = c.val_score !== null && c.val_score !== undefined;
  const barValue = useVal ? c.val_score : c.score;
  const selected = ui.iteration === c.iteration;
  const deltaClass = c.delta > 0.005 ? "up" : c.delta < -0.005 ? "down" : "flat";
  const batch = c.is_full_eval ? "full eval" : `batch ${c.batch_size}`;
  return h("div", {
    class: `iter-card ${phaseClass(c.phase)}${selected ? " selected" : ""}${c.best ? " is-best" : ""}`,
    "data-iteration": c.iteration, tabindex: "0",
    onclick: () => { location.hash = `#/runs/${run.id}/${c.iteration}`; },
    onkeydown: (e) => { if (e.key === "Enter") location.hash = `#/runs/${run.id}/${c.iteration}`; },
  },
  h("button", {
    type: "button", class: "branch-btn", title: `Branch a new run from iteration ${c.iteration}`,
    "aria-label": `branch from iteration ${c.iteration}`,
    onclick: (e) => { e.stopPropagation(); ui.openBranch(run, c.iteration); },
  }, "⎇"),
  h("div", { class: "iter-top" },
    h("span", { class: "iter-num" }, `#${c.iteration}`),
    c.best ? h("span", { class: "star", title: "the selected (best) candidate" }, "★") : null,
    h("span", { class: "iter-score-label" }, c.is_full_eval ? "train" : "batch"),
    h("span", { class: "iter-score", title: "mean score on this iteration's train examples" }, score(c.score)),
    h("span", { class: `delta ${deltaClass}` }, `Δ ${signed(c.delta)}`),
    useVal ? h("span", { class: "val" }, `val ${score(c.val_score)}`) : null,
    h("span", { class: `eval-badge${c.is_full_eval ? " full" : ""}` }, batch)),
  bar(barValue, threshold, useVal ? "val" : "train"),
  h("div", { class: "iter-metrics" },
    Object.entries(c.scores_by_metric).map(([m, v]) => h("span", { class: "chip" }, `${m}: ${score(v)}`))),
  h("div", { class: "iter-foot muted" },
    `eval ${c.tokens_text.eval} · reasoning ${c.tokens_text.reasoning} tok · ${seconds(c.elapsed_seconds)} · ${when(c.timestamp)}`),
  c.change_summary ? h("div", { class: "iter-change" }, c.change_summary) : null);
}

function bar(value, threshold, what) {
  const pct = (v) => `${Math.max(0, Math.min(1, v || 0)) * 100}%`;
  const reached = value !== null && threshold !== null && value >= threshold;
  return h("div", { class: "bar", title: `${what} ${score(value)} · threshold ${score(threshold, 2)}` },
    h("div", { class: `bar-fill${reached ? " reached" : ""}`, style: { width: pct(value) } }),
    threshold !== null ? h("div", { class: "bar-threshold", style: { left: pct(threshold) } }) : null);
}
