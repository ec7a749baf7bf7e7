"""`reflex-dspy runs | show | diff | export | branch`: read, compare, export and branch recorded runs.

Everything here reads the run layout through `RunStore`, so it works the same on a
live run, an interrupted one and an export re-created from MLflow. Output is plain aligned text,
so it can be piped and grepped; `show` and `diff` never write anything.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
from datetime import datetime
from pathlib import Path
from typing import Any

from reflex_dspy.cli.optimize import (
    SEARCH_FLAGS,
    TaskSpec,
    build_config,
    execute,
    given_flags,
    initial_prompts,
    saved_fields,
)
from reflex_dspy.errors import UsageError
from reflex_dspy.result import candidate_name, format_tokens, selection_label
from reflex_dspy.run_status import describe as describe_status
from reflex_dspy.run_status import load_failure
from reflex_dspy.tracking.schema import render_prompts
from reflex_dspy.tracking.store import Run, RunStore, RunSummary

# --------------------------------------------------------------------------- formatting


def _score(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _created(text: str) -> str:
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(text)


def _clip(text: str | None, limit: int = 80) -> str:
    line = next((s.strip() for s in (text or "").splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    """Plain columns two spaces apart; `right` holds the indexes of numeric columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        cols = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in cols).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _iteration(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected an iteration number such as 3") from None
    if value < 0:
        raise UsageError(f"{what} {text!r}: iteration numbers start at 0 (the initial prompt)")
    return value


# --------------------------------------------------------------------------- runs


def nested(summaries: list[RunSummary]) -> list[tuple[RunSummary, int]]:
    """Runs in id order, each branch right under its parent (depth 1, 2, ...); orphans at the top."""
    ids = {s.run_id for s in summaries}
    children: dict[str, list[RunSummary]] = {}
    roots = []
    for s in summaries:
        parent = str((s.branched_from or {}).get("run_id", ""))
        parent = next((i for i in ids if parent and i.lstrip("0") == parent.lstrip("0")), None)
        if parent is None or parent == s.run_id:
            roots.append(s)
        else:
            children.setdefault(parent, []).append(s)
    out: list[tuple[RunSummary, int]] = []

    def walk(s: RunSummary, depth: int) -> None:
        out.append((s, depth))
        for child in children.get(s.run_id, []):
            if all(child is not seen for seen, _ in out):
                walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return out


def _id_cell(s: RunSummary, depth: int) -> str:
    if not s.branched_from:
        return s.run_id
    parent = str(s.branched_from.get("run_id", "?"))
    parent = parent.zfill(3) if parent.isdigit() else parent
    marker = f"└─ ⎇ {parent}/{s.branched_from.get('iteration', '?')} → {s.run_id}"
    return "   " * max(depth - 1, 0) + marker


def cmd_runs(args: argparse.Namespace) -> int:
    store = RunStore(args.run_dir)
    runs = {r.run_id: r for r in store.runs()}
    if not runs:
        print(f"No runs in {store.runs_dir} yet. Start one with: reflex-dspy optimize DATASET PROMPT")
        return 0
    headers = [
        "ID",
        "CREATED",
        "STATUS",
        "STRATEGY",
        "MODEL",
        "ITERS",
        "BASELINE",
        "BEST",
        "FINAL",
        "TARGET",
        "DATASET",
    ]
    if args.verbose:
        headers += ["REASONING MODEL", "METRIC", "PATH"]
    rows = []
    summaries = [r.summary() for r in runs.values()]
    for s, depth in nested(summaries):
        row = [
            _id_cell(s, depth),
            _created(s.created),
            describe_status(s.status, s.path),  # `running (no word for 34 s)`: a silent runner
            s.strategy or "-",
            s.models.get("task") or "-",
            str(s.iterations),
            _score(s.baseline),
            _score(s.best),
            _score(s.final),
            _score(s.target, 2),
            Path(s.dataset).name if s.dataset else "-",
        ]
        if args.verbose:
            metrics = [] if s.problem else (runs[s.run_id].load_config().get("optimizer_config") or {}).get("metrics")
            metric = ", ".join(metrics) if isinstance(metrics, list) else str(metrics or "")
            row += [s.reasoning_model or "-", metric or "-", str(s.path)]
        rows.append(row)
    print("\n".join(table(headers, rows, right={5, 6, 7, 8, 9})))
    for s in summaries:
        if s.problem:  # listed as corrupt; the other runs are shown as usual
            print(f"run {s.run_id} is corrupt: {s.problem}")
    return 0


# --------------------------------------------------------------------------- show


def _header(run: Run, s: RunSummary, config: dict[str, Any]) -> list[str]:
    cfg = config.get("optimizer_config") or {}
    baseline = run.load_baseline() or {}
    sizes = config.get("split_sizes") or {}
    lines = [f"Run {run.run_id}  ({run.path})"]

    def add(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            lines.append(f"{label:<15}: {value}")

    add("Status", describe_status(s.status, s.path))
    if s.status == "failed":
        add("Failed", (load_failure(run.path) or {}).get("reason"))
    add("Created", _created(s.created))
    n, budget = cfg.get("max_iterations", "?"), config.get("budget")
    limit = (f"as many iterations as the budget allows ({budget} metric calls)" if iteration_cap(config) is None
             and isinstance(budget, int) else f"up to {n} iteration{'' if n == 1 else 's'}")
    add("Strategy", f"{s.strategy or '-'}, {limit}")
    add("Task model", s.models.get("task"))
    add("Reasoning", s.models.get("reasoning"))
    add("Dataset", s.dataset)
    add("Prompt", config.get("prompt_path"))
    metrics = cfg.get("metrics")
    add("Metric", ", ".join(metrics) if isinstance(metrics, list) else metrics)
    if sizes:
        add("Train/val/test", " / ".join(str(sizes.get(k, "?")) for k in ("train", "val", "test")))
    if baseline.get("mean_score") is not None:
        runs = baseline.get("n_runs") or 1
        spread = f" ± {baseline.get('std_score') or 0:.4f} ({runs} runs)" if runs > 1 else ""
        size = f" on {baseline['n']} test examples" if baseline.get("n") else ""
        add("Baseline", f"{baseline['mean_score']:.4f}{spread}{size}")
    if cfg.get("target_source") or cfg.get("target_model"):
        from reflex_dspy.result import target_label

        add("Target", target_label({"model": cfg.get("target_model"), "source": cfg.get("target_source"),
                                    "threshold": cfg.get("score_threshold"), "metric": cfg.get("target_metric")}))
    else:
        add("Target", _score(s.target, 2) if s.target is not None else None)
    if s.branched_from:
        parent = s.branched_from
        add("Branched from", f"run {parent.get('run_id')}, iteration {parent.get('iteration')}")
    return lines


def iteration_cap(config: dict[str, Any]) -> int | None:
    """A recorded run's iteration cap, None where its budget limits it instead (a cap of at least
    the budget never binds first: `OptimizerConfig.budget_binds`)."""
    n, budget = (config.get("optimizer_config") or {}).get("max_iterations"), config.get("budget")
    if not isinstance(n, int) or (isinstance(budget, int) and n >= budget):
        return None
    return n


def _result_lines(result: dict[str, Any]) -> list[str]:
    from reflex_dspy.result import Measurement
    from reflex_dspy.stats import Significance

    lines = []
    try:
        lines.append(f"{'Final score':<15}: {Measurement.from_dict(result['final']).describe()}")
    except (KeyError, TypeError, AttributeError):
        lines.append(f"{'Final score':<15}: {_score((result.get('final') or {}).get('mean_score'), 4)}")
    if result.get("improvement") is not None:
        lines.append(f"{'Improvement':<15}: {result['improvement']:+.4f}")
    with contextlib.suppress(KeyError, TypeError):
        lines.append(f"{'Significance':<15}: {Significance(**result['significance']).describe()}")
    selected = result.get("selected_iteration")
    if selected is not None:  # aevyra-reflex's result.json records the best score only
        lines.append(
            f"{'Selected':<15}: {candidate_name(selected, result.get('branched_from'))} ({selection_label(result)}: "
            f"{_score(result.get('best_score'), 4)})"
        )
    else:
        lines.append(f"{'Best score':<15}: {_score(result.get('best_score'), 4)}")
    if result.get("stop_reason"):
        lines.append(f"{'Stopped':<15}: {result['stop_reason']}")
    if result.get("promotion"):
        lines.append(f"{'Promotion':<15}: {result['promotion']['reason']}")
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    run = RunStore(args.run_dir).get_run(args.run)
    config = run.load_config()  # a corrupt run: a one-line error naming the file
    summary = run.summary()
    lines = _header(run, summary, config)
    records = run.load_iterations()
    lines.append("")
    if records:
        rows = [
            [
                str(r.iteration),
                r.phase or "-",
                _score(r.score),
                _delta(r.delta),
                _score(r.val_score),
                format_tokens((r.eval_tokens or 0) + (r.reasoning_tokens or 0)),
                _clip(r.change_summary or r.reasoning),  # aevyra-reflex's files have no change summary
            ]
            for r in records
        ]
        headers = ["ITER", "PHASE", "TRAIN", "Δ", "VAL", "TOKENS", "CHANGE"]
        lines += table(headers, rows, right={0, 2, 3, 4, 5})
    else:
        lines.append("(no iterations recorded yet)")
    lines.append("")
    result = run.load_result()
    if result:
        lines += _result_lines({"branched_from": summary.branched_from, **result})  # older files lack it
    else:
        lines.append(f"{'Best so far':<15}: {_score(summary.best, 4)}")
        if summary.status in ("interrupted", "failed"):
            lines.append(f"{'Resume':<15}: reflex-dspy optimize --resume-from {run.run_id}")
        if summary.status == "created":
            lines.append(f"{'Start':<15}: reflex-dspy optimize run {run.run_id}")
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------- diff


def prompts_by_iteration(run: Run) -> dict[int, dict[str, str]]:
    """Iteration → predictor → prompt text; 0 is the initial prompt from config.json."""
    prompts = {0: initial_prompts(run.load_config())}
    for record in run.load_iterations():
        prompts[record.iteration] = dict(record.system_prompt or {})
    return prompts


def _known(prompts: dict[int, Any]) -> str:
    numbers = sorted(prompts)
    return f"{numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])


def cmd_diff(args: argparse.Namespace) -> int:
    run = RunStore(args.run_dir).get_run(args.run)
    a, b = _iteration(args.a, "A"), _iteration(args.b, "B")
    prompts = prompts_by_iteration(run)
    for n in (a, b):
        if n not in prompts:
            raise UsageError(f"run {run.run_id} has no iteration {n} (recorded: {_known(prompts)})")
    out: list[str] = []
    for name in sorted(prompts[a].keys() | prompts[b].keys()):
        old, new = prompts[a].get(name, ""), prompts[b].get(name, "")
        out += difflib.unified_diff(
            old.splitlines(),
            new.splitlines(),
            fromfile=f"a/{name} (run {run.run_id}, iteration {a})",
            tofile=f"b/{name} (run {run.run_id}, iteration {b})",
            lineterm="",
        )
    print("\n".join(out) if out else f"run {run.run_id}: iterations {a} and {b} have the same prompts")
    return 0


# --------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from reflex_dspy.run_record import resolve_tracking_uri

    store = RunStore(args.run_dir)
    uri = resolve_tracking_uri(store, args.mlflow_tracking_uri, use_mlflow=True)
    db = store.root / "mlflow.db"
    if uri == store.tracking_uri and not db.is_file():  # never let MLflow create an empty store
        raise UsageError(f"no MLflow store at {db}; pass --mlflow-tracking-uri or --run-dir")
    dest = Path(args.to)
    from reflex_dspy.cli.paths import check_output_dir

    check_output_dir("--to", args.to)  # a file in the way or a read-only place: one line, exit 2
    from reflex_dspy.tracking.export import export_run

    written = export_run(uri, args.run, dest, experiment=args.mlflow_experiment)
    print(written)
    return 0


# --------------------------------------------------------------------------- branch


def branch_config(parent: Run, args: argparse.Namespace) -> Any:
    """The parent's recorded config with the search flags given on the command line applied."""
    fields = saved_fields(parent.load_config())
    overrides = given_flags(args, SEARCH_FLAGS)
    if overrides.get("strategy", fields.get("strategy")) != fields.get("strategy"):
        fields["extra_kwargs"] = {}  # the parent's strategy parameters mean nothing to another strategy
    if "max_metric_calls" in overrides:
        fields["auto_budget"] = None
    if "auto_budget" in overrides:
        fields["max_metric_calls"] = None
    if "score_threshold" in overrides:
        fields["target_source"] = "manual"
    if "reasoning_model" in overrides and "reasoning_base_url" not in overrides:
        fields["reasoning_base_url"] = None  # the parent's server belongs to the parent's model
    return build_config({**fields, **overrides}, args)


def cmd_branch(args: argparse.Namespace) -> int:
    parent = RunStore(args.run_dir).get_run(args.run)
    iteration = _iteration(args.iteration, "ITER")
    spec = TaskSpec.from_run(parent, "branch")
    prompts = prompts_by_iteration(parent)
    if iteration not in prompts:
        raise UsageError(f"run {parent.run_id} has no iteration {iteration} (recorded: {_known(prompts)})")
    if parent.foreign:
        # aevyra-reflex recorded no example ids or journal: a new run starts from that iteration's
        # prompt on the dataset it recorded (its own baseline), and records where it came from.
        spec.prompt_text = render_prompts(prompts[iteration])
        spec.lineage = {"run_id": parent.run_id, "iteration": iteration}
        return execute(args, spec, branch_config(parent, args))
    return execute(args, spec, branch_config(parent, args), branch_from=(parent.run_id, iteration))
