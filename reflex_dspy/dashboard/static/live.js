// The live page of a run (GET /api/runs/<id>/live): what the runner is doing now and whether it is
// still alive. Phase and calls from its heartbeat; "no word from the runner for N s" when the
// heartbeat stops while the process still claims the run; failed with its reason; the trials feed
// (newest first, each scored (candidate, example) with its score and the metric's feedback, and its
// trace in pipeline mode); the candidates ranked by mean and best score with a best-score trend.
import { api, h, score, seconds } from "./util.js";

/** Notices above the tiles: staleness, failure, created-but-not-started. */
export function liveNotices(run) {
  const live = run.live;
  if (!live) return [];
  const out = [];
  const code = (text) => h("code", {}, text);
  if (live.status === "running" && live.silence && live.silence.stale) {
    out.push(h("div", { class: "notice notice-stale", id: "stale-notice" },
      h("strong", {}, `No word from the runner for ${Math.round(live.silence.seconds)} s`),
      ` (last phase: ${live.silence.phase || "unknown"}). Its process still holds the run but has stopped `
      + "sending heartbeats: it may be paused, swapped out or hung. The page keeps checking."));
  }
  if (live.status === "failed" && live.failure) {
    out.push(h("div", { class: "notice notice-failed", id: "failed-notice" },
      h("strong", {}, "Failed: "), live.failure.reason || "no reason recorded",
      live.hints.resume ? h("div", {}, "Continue it after fixing the cause: ", code(live.hints.resume)) : null,
      live.hints.rerun ? h("div", {}, "Or start a new attempt: ", code(live.hints.rerun)) : null));
  }
  if (live.status === "created") {
    out.push(h("div", { class: "notice notice-created", id: "created-notice" },
      "Created, not started yet. Start it with ", code(live.hints.start || "reflex-dspy optimize run ID"), "."));
  }
  if (live.repeats) {
    out.push(h("div", { class: "notice notice-warning", id: "repeats-notice" },
      `A new attempt of run ${live.repeats.run_id} (which was ${live.repeats.status}).`));
  }
  return out;
}

/** The phase chip and the calls spent against the budget, while the run is running. */
export function phaseLine(run) {
  const live = run.live;
  if (!live || live.status !== "running" || !live.progress) return null;
  const p = live.progress;
  const calls = p.budget ? `${p.search_calls ?? 0} / ${p.budget} search metric calls` : `${p.metric_calls ?? 0} metric calls`;
  const quiet = live.silence ? ` · last heartbeat ${seconds(live.silence.seconds)} ago` : "";
  return h("div", { class: "phase-line", id: "phase-line" },
    h("span", { class: "phase-chip", id: "phase-chip" }, live.phase || "starting"),
    ` iteration ${p.iteration ?? 0}${p.max_iterations ? ` of at most ${p.max_iterations}` : ""} · ${calls}`,
    p.best != null ? ` · best so far ${score(p.best, 4)}` : "",
    p.waiting_seconds != null ? ` · reasoning model thinking ${Math.round(p.waiting_seconds)} s` : "", quiet);
}

/** The trials feed and the candidate list, side by side. */
export function liveCards(run) {
  const live = run.live;
  if (!live || (!live.n_trials && live.status !== "running")) return null;
  return h("div", { class: "live-columns" },
    h("section", { class: "card trials-card" },
      h("div", { class: "card-title" }, "Trials ",
        h("span", { class: "muted" }, `· ${live.n_trials} scored, newest first`
          + (live.n_trials > live.trials.length ? ` (latest ${live.trials.length} shown)` : ""))),
      live.trials.length ? h("ol", { class: "trials", id: "trials-feed" }, live.trials.map((t) => trial(run, t)))
        : h("p", { class: "muted" }, "Waiting for the first scored example…")),
    h("section", { class: "card candidates-card" },
      h("div", { class: "card-title" }, "Candidates ",
        h("span", { class: "muted" }, `· ${live.candidates.length}, ranked by mean of their search trials (train/val)`)),
      trendLine(live.trend),
      candidateTable(live.candidates)));
}

function trial(run, t) {
  const cls = t.score === null || t.score === undefined ? "failed" : t.score >= 0.999 ? "good" : t.score <= 0.001 ? "bad" : "mid";
  const where = t.phase === "searching" ? `iter ${t.iteration ?? "?"}` : t.phase;
  return h("li", { class: `trial trial-${cls}`, "data-index": t.index },
    h("div", { class: "trial-top" },
      h("span", { class: "trial-score" }, t.score === null || t.score === undefined ? "failed" : score(t.score)),
      h("span", { class: "trial-cand" }, `candidate #${t.candidate}`),
      h("span", { class: "muted" }, `${where} · ${t.split || "?"} · example ${t.example_id}`),
      t.has_trace ? h("button", { type: "button", class: "link trace-link", onclick: () => openTrace(run.id, t.index) },
        "trace ↗") : null,
      h("span", { class: "muted trial-time" }, t.time ? new Date(t.time * 1000).toLocaleTimeString() : "")),
    t.error ? h("div", { class: "trial-error" }, t.error)
      : t.feedback ? h("div", { class: "trial-feedback" }, t.feedback) : null);
}

function candidateTable(cands) {
  if (!cands.length) return h("p", { class: "muted" }, "No candidate scored yet.");
  return h("table", { class: "candidates", id: "candidates" },
    h("thead", {}, h("tr", {}, ["#", "Candidate", "From", "Mean", "Best", "Trials", "Failed"].map((c) => h("th", {}, c)))),
    h("tbody", {}, cands.map((c, i) => h("tr", { "data-candidate": c.number, class: i === 0 && c.mean != null ? "cand-top" : null },
      h("td", {}, String(i + 1)),
      h("td", {}, `#${c.number}`),
      h("td", { class: "muted" }, c.iteration != null ? `iteration ${c.iteration}` : c.number === 0 ? "starting prompt" : "proposal"),
      h("td", { class: "num" }, score(c.mean)),
      h("td", { class: "num" }, score(c.best)),
      h("td", { class: "num" }, String(c.n)),
      h("td", { class: "num" }, c.failed ? String(c.failed) : "")))));
}

/** An SVG line of the best mean so far, candidate by candidate (y from 0 to 1). */
function trendLine(points) {
  if (points.length < 1) return null;
  const W = 700, H = 70, pad = 6;
  const x = (i) => pad + (points.length === 1 ? (W - 2 * pad) / 2 : (i * (W - 2 * pad)) / (points.length - 1));
  const y = (v) => H - pad - v * (H - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "trend");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("id", "best-trend");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `best mean score so far: ${points.map((p) => p.best.toFixed(3)).join(", ")}`);
  const add = (tag, attrs) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    svg.append(el);
    return el;
  };
  add("line", { x1: pad, x2: W - pad, y1: y(1), y2: y(1), class: "trend-grid" });
  add("line", { x1: pad, x2: W - pad, y1: y(0), y2: y(0), class: "trend-grid" });
  add("polyline", { points: points.map((p, i) => `${x(i)},${y(p.mean)}`).join(" "), class: "trend-means" });
  add("polyline", { points: points.map((p, i) => `${x(i)},${y(p.best)}`).join(" "), class: "trend-best" });
  points.forEach((p, i) => {
    const dot = add("circle", { cx: x(i), cy: y(p.mean), r: 3, class: p.mean >= p.best ? "trend-dot new-best" : "trend-dot" });
    const title = document.createElementNS(ns, "title");
    title.textContent = `candidate #${p.number}: mean ${p.mean.toFixed(3)}, best so far ${p.best.toFixed(3)}`;
    dot.append(title);
  });
  return h("div", { class: "trend-wrap" }, svg,
    h("div", { class: "muted trend-caption" }, "best mean so far (line) and each candidate's mean (dots), in the order the search scored them"));
}

async function openTrace(runId, index) {
  const root = document.getElementById("modal-root");
  const close = () => root.replaceChildren();
  const body = h("div", { class: "trace-body" }, h("p", { class: "muted" }, "Loading…"));
  root.replaceChildren(h("div", { class: "modal-backdrop", onclick: (e) => { if (e.target === e.currentTarget) close(); } },
    h("div", { class: "modal modal-wide", role: "dialog", "aria-modal": "true", id: "trace-modal" },
      h("h2", {}, `Trial ${index}: execution trace`), body,
      h("div", { class: "modal-actions" }, h("button", { type: "button", onclick: close }, "Close")))));
  try {
    const t = await api(`/api/runs/${runId}/trials/${index}`);
    body.replaceChildren(
      h("p", {}, `candidate #${t.candidate} · example ${t.example_id} · score ${score(t.score)}`),
      t.feedback ? h("p", { class: "trial-feedback" }, t.feedback) : null,
      (t.trace ? t.trace.nodes : []).map((n, i) => h("div", { class: `trace-node${n.optimize ? " optimized" : ""}` },
        h("div", { class: "trace-head" }, `[${i + 1}] ${n.name} (${n.kind}) ${n.optimize ? "[optimize]" : "[context]"}`),
        h("pre", { class: "trace-io" }, JSON.stringify({ inputs: n.inputs, outputs: n.outputs }, null, 2)),
        n.error ? h("div", { class: "trial-error" }, n.error) : null)),
      t.trace ? h("p", {}, "Final answer: ", h("code", {}, JSON.stringify(t.trace.final_answer))) : null);
  } catch (err) {
    body.replaceChildren(h("p", { class: "form-error" }, `Could not load trial ${index}: ${err.message}`));
  }
}
