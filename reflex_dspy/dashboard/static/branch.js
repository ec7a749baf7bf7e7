// The branch modal: strategy and iteration budget, then POST /api/runs/<id>/branch. The server
// starts `reflex-dspy branch` in the background; the new run appears under its parent.
import { ApiError, api, h, toast } from "./util.js";

export function openBranchModal(run, iteration, onStarted) {
  const root = document.getElementById("modal-root");
  const close = () => { root.replaceChildren(); document.removeEventListener("keydown", onKey); };
  const onKey = (e) => { if (e.key === "Escape") close(); };
  document.addEventListener("keydown", onKey);
  const from = iteration === 0 ? "the initial prompt" : `iteration ${iteration}`;
  if (!run.branchable || run.status === "running") {
    const why = run.status === "running"
      ? `Run ${run.id} is still running: branch it once it has stopped.` : run.branch_hint;
    root.replaceChildren(modal(`Branch run ${run.id} from ${from}`, close,
      h("p", { id: "branch-hint" }, why),
      h("div", { class: "modal-actions" }, h("button", { type: "button", onclick: close }, "Close"))));
    return;
  }
  const strategy = h("select", { id: "branch-strategy", name: "strategy" },
    run.strategies.map((s) => h("option", { value: s, selected: s === "iterative" }, s)));
  const maxIters = h("input", { id: "branch-max", name: "max_iterations", type: "number", min: "1", max: "100",
    value: "10", required: true });
  const error = h("p", { class: "form-error", id: "branch-error", hidden: true });
  const submit = h("button", { type: "submit", class: "primary", id: "branch-start" }, "⎇ Start Branch");
  const form = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      submit.disabled = true;
      error.hidden = true;
      try {
        const job = await api(`/api/runs/${run.id}/branch`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ iteration, strategy: strategy.value, max_iterations: Number(maxIters.value) }),
        });
        close();
        toast(`Branch of ${run.id}/${iteration} started (${job.strategy}, pid ${job.pid}); it appears under run ${run.id}.`);
        onStarted(job);
      } catch (err) {
        error.textContent = err instanceof ApiError ? err.message : `The server did not answer: ${err.message}`;
        error.hidden = false;
        submit.disabled = false;
      }
    },
  },
  h("p", { class: "muted" },
    `A new run starts from ${from}'s prompt, keeps run ${run.id}'s data, models, metric and baseline (copied, `
    + "not re-measured), and uses the strategy and budget chosen here."),
  h("label", {}, "Strategy", strategy),
  h("label", {}, "Max iterations", maxIters),
  error,
  h("div", { class: "modal-actions" }, h("button", { type: "button", onclick: close }, "Cancel"), submit));
  root.replaceChildren(modal(`Branch run ${run.id} from ${from}`, close, form));
  strategy.focus();
}

function modal(title, close, ...body) {
  return h("div", { class: "modal-backdrop", onclick: (e) => { if (e.target === e.currentTarget) close(); } },
    h("div", { class: "modal", role: "dialog", "aria-modal": "true", "aria-label": title, id: "branch-modal" },
      h("h2", {}, title), body));
}
