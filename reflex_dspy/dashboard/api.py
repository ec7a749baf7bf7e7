"""The dashboard's JSON views, built from the run layout through `RunStore`.

Each view is a plain dict the page renders as is: every number in it was read from a file the
engine wrote (baseline.json, checkpoint.json, iterations/NNN.json, result.json), so the page
shows what `reflex-dspy show` would, and nothing it computes can disagree with the record.
Views never include the journal or per-example outputs; `server.py` scrubs every body anyway.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from reflex_dspy.cli.runs import iteration_cap, nested, prompts_by_iteration
from reflex_dspy.dashboard.safety import contained
from reflex_dspy.errors import UsageError
from reflex_dspy.result import Measurement, candidate_name, format_tokens, selection_label
from reflex_dspy.run_status import silence
from reflex_dspy.tracking.store import CorruptRunError, Run, RunStore, RunSummary

_PHASE_PREFIX = re.compile(r"^\s*\[[\w\-]+ phase \d+\]\s*")
_TARGET_TAGS = {"verdict_json": "json", "verdict_run": "run"}


class NotFound(LookupError):
    """No such run or iteration (the server answers 404)."""


class Unreadable(NotFound):
    """The run exists but a file of it cannot be parsed (listed as `corrupt`); answered like 404."""


def strip_phase(reasoning: str | None) -> str:
    """`[structural phase 1] Picked ...` → `Picked ...`: the auto strategy's bookkeeping prefix."""
    return _PHASE_PREFIX.sub("", reasoning or "", count=1)


def improvement(score: float | None, base: float | None) -> dict[str, Any] | None:
    """`score - base` and its share of `base` (None when base is 0: a percentage would be infinite)."""
    if score is None or base is None:
        return None
    delta = score - base
    relative = delta / base * 100 if base else None
    text = f"{delta:+.4f}" + (f" / {relative:.1f}%" if relative is not None else "")
    return {"delta": delta, "relative": relative, "text": text}


def target(config: dict[str, Any]) -> dict[str, Any]:
    """The Target column: `model @ 0.85 on exact_match [json]` for a verdict target, else the threshold."""
    cfg = config.get("optimizer_config") or {}
    threshold = cfg.get("score_threshold")
    model, source, metric = cfg.get("target_model"), cfg.get("target_source"), cfg.get("target_metric")
    value = "-" if threshold is None else f"{threshold:.2f}"
    if model:
        tag = _TARGET_TAGS.get(source or "")
        text = f"{model} @ {value}" + (f" on {metric}" if metric else "") + (f" [{tag}]" if tag else "")
    else:
        text = value
    return {"text": text, "threshold": threshold, "model": model, "source": source, "metric": metric}


def line_diff(old: str, new: str) -> list[dict[str, str]]:
    """Every line of `new`, with the lines of `old` it replaced: op "=", "+" (added) or "-" (removed)."""
    a, b = old.splitlines(), new.splitlines()
    out: list[dict[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            out += [{"op": "=", "text": line} for line in a[i1:i2]]
            continue
        out += [{"op": "-", "text": line} for line in a[i1:i2]]
        out += [{"op": "+", "text": line} for line in b[j1:j2]]
    return out


class DashboardData:
    """Views over one run directory; only runs `contained` in it are visible."""

    def __init__(self, root: str | Path, mlflow_link=None) -> None:
        self.store = RunStore(root)
        self.mlflow_link = mlflow_link  # callable(config) -> URL | None, when a UI URL is configured

    # -- runs ----------------------------------------------------------------------------------
    def runs(self) -> list[Run]:
        return [r for r in self.store.runs() if contained(r, self.store.runs_dir)]

    def get(self, run_id: str) -> Run:
        try:
            run = self.store.get_run(run_id)
        except UsageError as exc:
            raise NotFound(str(exc).replace(str(self.store.runs_dir), "the run directory")) from None
        if not contained(run, self.store.runs_dir):
            raise NotFound(f"no run {run_id}")
        return run

    def list_view(self) -> dict[str, Any]:
        runs = {r.run_id: r for r in self.runs()}
        summaries = [r.summary() for r in runs.values()]
        rows = []
        for s, depth in nested(summaries):  # a corrupt run is listed with its problem, from no file
            rows.append(self._row(s, depth, {} if s.problem else runs[s.run_id].load_config()))
        # Most recent first, each branch right under its parent (whenever it was made): trees by their root.
        trees: list[list[dict[str, Any]]] = []
        for row in rows:
            if row["depth"] == 0 or not trees:
                trees.append([row])
            else:
                trees[-1].append(row)
        trees.sort(key=lambda tree: int(tree[0]["id"]), reverse=True)
        return {
            "root": str(self.store.root.resolve()),
            "runs": [row for tree in trees for row in tree],
            "running": any(s.status == "running" for s in summaries),
        }

    def _row(self, s: RunSummary, depth: int, config: dict[str, Any]) -> dict[str, Any]:
        parent = s.branched_from or {}
        return {
            "id": s.run_id,
            "name": s.path.name,
            "depth": depth,
            "created": s.created,
            "status": s.status,
            "silence": silence(s.path) if s.status == "running" else None,  # issue 23: a quiet runner
            "strategy": s.strategy,
            "model": s.models.get("task"),
            "reasoning_model": s.reasoning_model,
            "iterations": s.iterations,
            "max_iterations": iteration_cap(config),  # None where the budget limits the run
            "baseline": s.baseline,
            "best": s.best,
            "final": s.final,
            "target": target(config),
            "dataset": s.dataset,
            "dataset_name": Path(s.dataset).name if s.dataset else None,
            "branched_from": {"run_id": str(parent.get("run_id", "")).zfill(3), "iteration": parent.get("iteration")}
            if parent else None,
            "problem": s.problem,
        }

    # -- one run -------------------------------------------------------------------------------
    def run_view(self, run_id: str) -> dict[str, Any]:
        run = self.get(run_id)
        try:
            return self._run_view(run)
        except CorruptRunError as exc:
            raise Unreadable(str(exc).replace(str(self.store.runs_dir), "the run directory")) from None

    def _run_view(self, run: Run) -> dict[str, Any]:
        config = run.load_config()
        summary = run.summary()
        checkpoint = run.load_checkpoint() or {}
        result = run.load_result()
        baseline = run.load_baseline()
        records = run.load_iterations()
        cfg = config.get("optimizer_config") or {}
        usage = (result or {}).get("usage") or checkpoint.get("usage") or {}
        if result:  # where the run started, for the pick's name (files before it was recorded lack it)
            result = {"branched_from": summary.branched_from, **result}
        best = _best_detail(config, checkpoint, result, records)
        selected = best["iteration"]
        iterations = [_card(r, selected) for r in records]
        children = []
        for other in self.runs():
            parent = other.summary().branched_from or {}
            if str(parent.get("run_id", "")).lstrip("0") == run.run_id.lstrip("0"):
                children.append({"id": other.run_id, "iteration": parent.get("iteration")})
        view = {
            **self._row(summary, 0, config),
            "root": str(self.store.root.resolve()),
            "path": str(run.path.resolve()),
            "prompt_path": config.get("prompt_path"),
            "metrics": cfg.get("metrics") or [],
            "split_sizes": config.get("split_sizes") or {},
            "warnings": config.get("warnings") or [],
            "baseline_detail": _measurement(baseline),
            "best_detail": best,
            "usage": usage,
            "tokens": {
                "eval": usage.get("eval_tokens", sum(r.eval_tokens for r in records)),
                "reasoning": usage.get("reasoning_tokens", sum(r.reasoning_tokens for r in records)),
            },
            "result": _result(result, baseline),
            "stop_reason": (result or {}).get("stop_reason") or checkpoint.get("stop_reason"),
            "iteration_cards": iterations,
            "phases": phases(iterations),
            "selected": selected,
            "children": children,
            "branchable": bool(summary.dataset),
            "branch_hint": None if summary.dataset else (
                f"run {run.run_id} was started from Python, not the CLI: branch it with "
                f"Reflex(...).compile(program, trainset=..., branch_from=({run.run_id!r}, ITERATION))"
            ),
            "resume_hint": f"reflex-dspy optimize --resume-from {run.run_id}"
            if summary.status == "interrupted" and summary.dataset else None,
            "settings": {**{k: cfg.get(k) for k in ("batch_size", "early_stopping_patience", "seed", "eval_runs")},
                         "max_iterations": iteration_cap(config), "budget": config.get("budget")},
            "mlflow_url": self.mlflow_link(config) if self.mlflow_link else None,
        }
        for key in ("eval", "reasoning"):
            view["tokens"][f"{key}_text"] = format_tokens(view["tokens"][key])
        return view

    # -- live page (issue 23: dashboard/live.py builds it) ---------------------------------------
    def live_view(self, run_id: str) -> dict[str, Any]:
        """Status, heartbeat and staleness, failure reason, trials feed and ranked candidates."""
        from reflex_dspy.dashboard.live import live_view

        return live_view(self.get(run_id), self.store.root)

    def trial_view(self, run_id: str, index: int) -> dict[str, Any]:
        """One trial of the feed with its execution trace (pipeline mode)."""
        from reflex_dspy.dashboard.live import trial_view

        run = self.get(run_id)
        view = trial_view(run, index)
        if view is None:
            raise NotFound(f"run {run.run_id} has no trial {index}")
        return view

    def iteration_view(self, run_id: str, number: int) -> dict[str, Any]:
        """Prompts per predictor (current, previous, initial), their line diff, reasoning and scores."""
        run = self.get(run_id)
        prompts = prompts_by_iteration(run)
        if number not in prompts:
            raise NotFound(f"run {run.run_id} has no iteration {number}")
        record = next((r for r in run.load_iterations() if r.iteration == number), None)
        previous = max((i for i in prompts if i < number), default=number)
        demos = ((record.candidate if record else run.load_config().get("initial_candidate")) or {}).get(
            "predictors") or {}
        predictors = []
        for name in sorted(prompts[number].keys() | prompts[0].keys()):
            current = prompts[number].get(name, "")
            before = prompts[previous].get(name, "")
            predictors.append({
                "name": name,
                "current": current,
                "previous": before,
                "initial": prompts[0].get(name, ""),
                "diff": line_diff(before, current),
                "changed": before != current,
                "demos": (demos.get(name) or {}).get("demos") or [],
            })
        view: dict[str, Any] = {"run_id": run.run_id, "iteration": number, "previous": previous,
                                "predictors": predictors}
        if record is not None:
            view.update(_card(record, None))
            view["reasoning"] = strip_phase(record.reasoning)
            view["details"] = record.details
        return view


def _best_detail(config: dict[str, Any], checkpoint: dict[str, Any], result: dict[str, Any] | None,
                 records: list) -> dict[str, Any]:
    """The Best tile and pill: the search's best so far while a run goes on; once it has a
    result, the run's pick with the score it was picked on (val + train where a close call was
    settled there), so the page never names another candidate than the summary's "Selected"."""
    by = checkpoint.get("best_by") or ("val" if (config.get("split_sizes") or {}).get("val") else "train")
    best = {"score": checkpoint.get("best_score"), "iteration": checkpoint.get("best_iteration"), "by": by,
            "label": f"best on {by}", "selected": False}
    if result and result.get("selected_iteration") is not None and result.get("selected_by"):
        best = {"score": result.get("best_score"), "iteration": result["selected_iteration"],
                "by": result["selected_by"], "label": selection_label(result), "selected": True}
    if best["by"] == "val":
        initial = checkpoint.get("initial_val")
    elif best["by"] == "train":
        initial = _initial_train(records)
    else:  # val + train: the starting prompt's row, when it was a contender of the close call
        rows = ((result or {}).get("confirmation") or {}).get("contenders") or []
        initial = next((r.get("val_and_train") for r in rows if isinstance(r, dict) and r.get("iteration") == 0), None)
    name = candidate_name(best["iteration"], (result or {}).get("branched_from")) \
        if isinstance(best["iteration"], int) else None
    return {**best, "name": name, "initial": initial, "improvement": improvement(best["score"], initial)}


def _initial_train(records: list) -> float | None:
    """The starting prompt's train score, as the first iteration measured it (score - Δ)."""
    first = records[0] if records else None
    return first.score - first.delta if first and first.score is not None and first.delta is not None else None


def _measurement(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if not data:
        return None
    keep = ("split", "n_runs", "n", "n_failed", "no_answers", "scores_by_metric")
    try:
        caveats = Measurement.from_dict(data).caveats()
    except (TypeError, AttributeError, KeyError):
        caveats = []
    return {"mean": data.get("mean_score"), "std": data.get("std_score"), "caveats": caveats,
            **{k: data.get(k) for k in keep}}


def _result(result: dict[str, Any] | None, baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    """The held-out test outcome of a completed run, in the summary's own words."""
    if not result:
        return None
    from reflex_dspy.stats import Significance

    final = result.get("final") or {}
    try:
        significance = Significance(**result["significance"]).describe()
    except (KeyError, TypeError):
        significance = None
    try:
        final_text = Measurement.from_dict(final).describe()
    except (TypeError, AttributeError, KeyError):
        final_text = None
    return {
        "final": _measurement(final),
        "final_text": final_text,
        "improvement": improvement(final.get("mean_score"), (baseline or {}).get("mean_score")),
        "significance": significance,
        "significant": (result.get("significance") or {}).get("significant"),
        "selected_iteration": result.get("selected_iteration"),
        "selected_by": result.get("selected_by"),
        "selected_name": candidate_name(result["selected_iteration"], result.get("branched_from"))
        if isinstance(result.get("selected_iteration"), int) else None,
        "selected_label": selection_label(result),  # "best on val", or "picked on val" where the margin decided
        "selected_score": result.get("best_score"),
        "selection_note": result.get("selection_note"),  # the rewrite margin or a confirmation decided it
        "duration_seconds": result.get("duration_seconds"),
        "held_out": result.get("held_out"),
    }


def _card(r, selected: int | None) -> dict[str, Any]:
    return {
        "iteration": r.iteration,
        "phase": r.phase,
        "strategy": r.strategy,
        "score": r.score,
        "val_score": r.val_score,
        "delta": r.delta,
        "scores_by_metric": r.scores_by_metric or {},
        "change_summary": r.change_summary,
        "predictor": r.predictor,
        "eval_tokens": r.eval_tokens,
        "reasoning_tokens": r.reasoning_tokens,
        "tokens_text": {"eval": format_tokens(r.eval_tokens), "reasoning": format_tokens(r.reasoning_tokens)},
        "metric_calls": r.metric_calls,
        "elapsed_seconds": r.elapsed_seconds,
        "timestamp": r.timestamp,
        "is_full_eval": r.is_full_eval,
        "batch_size": r.batch_size,
        "n_failed": r.n_failed,
        "best": selected is not None and r.iteration == selected,
    }


def phases(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive iterations of one phase grouped: [{phase, count, first, last}]."""
    groups: list[dict[str, Any]] = []
    for card in cards:
        if groups and groups[-1]["phase"] == card["phase"]:
            groups[-1]["count"] += 1
            groups[-1]["last"] = card["iteration"]
        else:
            groups.append({"phase": card["phase"], "count": 1, "first": card["iteration"],
                           "last": card["iteration"]})
    return groups
