// The page: a hash router (#/ and #/runs/<id>[/<iteration>], bookmarkable), the views, and polling
// that runs only while something can change (a run in progress, a branch starting, no runs yet).
import { openBranchModal } from "./branch.js";
import { renderIteration } from "./iteration.js";
import { renderRun } from "./run.js";
import { renderRuns } from "./runs.js";
import { ApiError, ServerDown, api, h, toast } from "./util.js";

const POLL_MS = Math.max(200, Number(new URLSearchParams(location.search).get("poll")) || 2000);
const RETRY_MS = 5000;
const app = document.getElementById("app");

const ui = {
  openDatasets: new Set(),
  tab: "current",
  predictor: null,
  iteration: null,
  detail: null,
  rerender: () => draw(),
  set: (patch) => { Object.assign(ui, patch); showIteration(); },
  openBranch: (run, iteration) => openBranchModal(run, iteration, (job) => {
    jobs.set(job.id, job);
    schedule(300);
  }),
};
const jobs = new Map(); // branch jobs started from this page and still being watched
const iterations = new Map(); // "run/iteration" → iteration view (iteration files never change)
let current = { key: null, data: null, text: null };
let timer = null;
let generation = 0;

function route() {
  const m = location.hash.match(/^#\/runs\/(\d{1,9})(?:\/(\d{1,6}))?$/);
  return m ? { view: "run", id: m[1], iteration: m[2] === undefined ? null : Number(m[2]) } : { view: "runs" };
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(load, ms);
}

async function load() {
  const r = route();
  const mine = ++generation;
  const key = r.view === "run" ? `run:${r.id}` : "runs";
  try {
    const data = await api(r.view === "run" ? `/api/runs/${r.id}` : "/api/runs");
    if (r.view === "run") data.live = await api(`/api/runs/${r.id}/live`).catch(() => null); // live.js
    if (jobs.size) await watchJobs();
    if (mine !== generation) return; // the route changed while this request was in flight
    const text = JSON.stringify(data);
    const changed = key !== current.key || text !== current.text;
    current = { key, data, text };
    if (r.view === "run") await selectIteration(data, r.iteration, changed);
    else if (changed) draw();
    const live = jobs.size > 0 || (r.view === "run" ? data.status === "running" : data.running || !data.runs.length);
    document.getElementById("live").hidden = !live;
    if (live) schedule(POLL_MS);
  } catch (err) {
    if (mine !== generation) return;
    current = { key: null, data: null, text: null };
    document.getElementById("live").hidden = true;
    if (err instanceof ServerDown) {
      app.replaceChildren(serverDown(err.message));
      schedule(RETRY_MS);
    } else {
      app.replaceChildren(h("section", { class: "card error-card", id: "error-card" },
        h("h2", {}, err instanceof ApiError && err.status === 404 ? "Not found" : "Error"),
        h("p", {}, err.message), h("a", { href: "#/" }, "← all runs")));
    }
  }
}

function serverDown(message) {
  return h("section", { class: "card error-card", id: "server-down" },
    h("h2", {}, "The dashboard server is not reachable"),
    h("p", {}, "The page could not fetch its data (", message, "). Is ",
      h("code", {}, "reflex-dspy dashboard"), " still running? Start it again, and this page reconnects by itself."),
    h("p", { class: "muted" }, `Retrying every ${RETRY_MS / 1000} s.`));
}

async function selectIteration(run, wanted, changed) {
  const cards = run.iteration_cards;
  const fallback = cards.some((c) => c.best) ? cards.find((c) => c.best).iteration
    : cards.length ? cards[cards.length - 1].iteration : null;
  const number = wanted !== null && wanted !== undefined ? wanted : fallback;
  const moved = number !== ui.iteration;
  ui.iteration = number;
  if (moved) ui.detail = renderIteration(null, ui);
  if (changed || moved) draw();
  if (moved || !ui.detailData) await showIteration();
}

async function showIteration() {
  const r = route();
  if (r.view !== "run" || ui.iteration === null) {
    ui.detailData = null;
    ui.detail = renderIteration(null, ui);
  } else {
    const key = `${r.id}/${ui.iteration}`;
    try {
      if (!iterations.has(key)) iterations.set(key, await api(`/api/runs/${r.id}/iterations/${ui.iteration}`));
      ui.detailData = iterations.get(key);
      ui.detail = renderIteration(ui.detailData, ui);
    } catch (err) {
      ui.detailData = null;
      ui.detail = h("p", { class: "form-error" }, `Could not load iteration ${ui.iteration}: ${err.message}`);
    }
  }
  const panel = document.getElementById("iteration-detail");
  if (panel) panel.replaceChildren(ui.detail);
}

function draw() {
  if (!current.data) return;
  const data = current.data;
  document.getElementById("root-path").textContent = data.root || "";
  const scrollY = window.scrollY;
  app.replaceChildren(current.key === "runs" ? renderRuns(data, ui) : renderRun(data, ui));
  window.scrollTo(0, scrollY);
}

async function watchJobs() {
  let list;
  try {
    ({ jobs: list } = await api("/api/jobs"));
  } catch {
    return;
  }
  for (const job of list) {
    const seen = jobs.get(job.id);
    if (!seen) continue;
    if (job.run_id && !seen.run_id) {
      toast(`Branch run ${job.run_id} started from ${job.parent}/${job.iteration}. `, "info",
        h("a", { href: `#/runs/${job.run_id}` }, `Open run ${job.run_id}`));
    }
    if (job.state === "failed") toast(`Branch of ${job.parent}/${job.iteration} failed: ${job.message}`, "error");
    if (job.state !== "running") jobs.delete(job.id);
    else jobs.set(job.id, job);
  }
}

window.addEventListener("hashchange", () => {
  const r = route();
  if (r.view === "run" && current.key === `run:${r.id}`) {
    selectIteration(current.data, r.iteration, false);
    return;
  }
  current = { key: null, data: null, text: null };
  ui.iteration = null;
  ui.detailData = null;
  app.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  load();
});
document.getElementById("refresh").addEventListener("click", () => load());
load();
