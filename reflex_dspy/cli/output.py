"""What a CLI run writes and says: notes, the output checks made before any model call, and the
summary with `-o` and `--results-json` after the run.

A leaf of the CLI (below `task` and `optimize`, which both use it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reflex_dspy.errors import UsageError
from reflex_dspy.tracking.files import dumps, write_atomic
from reflex_dspy.tracking.store import RunStore


def note(text: str) -> None:
    print(f"reflex-dspy: note: {text}", file=sys.stderr)


def check_output_paths(args: argparse.Namespace, spec: Any = None) -> None:
    """-o, --results-json and --run-dir are writable and never one of the run's inputs (cli/paths.py).

    `spec` is the run's `TaskSpec` (cli/task.py, which sits above this module: it is not imported)."""
    from reflex_dspy.cli.paths import check_output_dir, check_outputs

    inputs = [("--verdict-results file", getattr(args, "verdict_results", None))]
    if spec is not None:
        inputs += [("dataset", spec.dataset), ("prompt file", spec.prompt_path),
                   ("--judge-criteria file", spec.judge_criteria), ("--splits-file", spec.splits_file),
                   ("--pipeline-file", (spec.pipeline or {}).get("file"))]
    check_outputs((("-o", args.output), ("--results-json", args.results_json)), inputs)
    check_output_dir("--run-dir", args.run_dir)
    from reflex_dspy.tracking.mlflow_target import check_cli_tracking  # an unusable MLflow store: exit 2 now

    check_cli_tracking(args.mlflow_tracking_uri, enabled=not getattr(args, "no_mlflow", False))


def report_outputs(args: argparse.Namespace, optimized: Any, extra_lines: tuple[str, ...] = ()) -> int:
    """Write `-o` (only when promoted, unless --force-output) and `--results-json`, then print the
    summary: the files first, so a reader that stops early (`| head`) cannot cost them."""
    result = optimized.result
    lines = [result.summary(), *extra_lines]
    run_id = getattr(optimized, "run_id", None)
    if run_id:
        lines.append(f"{'Run':<15}: {run_id} ({_run_path(args.run_dir, run_id)})")
    usage = getattr(result, "usage", None) or {}
    if no_reasoning_reply(usage):
        print("\n".join(lines), flush=True)
        print(f"reflex-dspy: run failed: the reasoning model answered none of its {usage['reasoning_failed']} "
              f"requests (each retried), so no proposal was made: {usage.get('reasoning_error')}; "
              "nothing written (-o, --results-json)", file=sys.stderr)
        return 1
    if args.output:
        promoted = result.promotion is None or result.promotion["promoted"]
        if promoted or getattr(args, "force_output", False):
            write_atomic(args.output, result.best_prompt.rstrip("\n") + "\n")
            forced = "" if promoted else " (not promoted; written because of --force-output)"
            lines.append(f"{'Best prompt':<15}: written to {args.output}{forced}")
        else:
            lines.append(f"{'Best prompt':<15}: not written to {args.output}: not promoted (--force-output writes it)")
    if args.results_json:
        write_atomic(args.results_json, dumps(result.to_dict()))
        lines.append(f"{'Results':<15}: written to {args.results_json}")
    print("\n".join(lines), flush=True)
    return 0


def split_named(dataset: str, split: Any, examples: Any, **kwargs: Any) -> Any:
    """`split(examples, **kwargs)`, its usage errors naming the dataset file (e.g. one example only)."""
    try:
        return split(examples, **kwargs)
    except UsageError as exc:
        text = str(exc)
        raise UsageError(text if text.startswith(str(dataset)) else f"{dataset}: {text}") from None


def no_reasoning_reply(usage: dict[str, Any]) -> bool:
    """The run asked its reasoning model and never got one reply: every proposal it shows is a fallback."""
    return bool(usage.get("reasoning_failed")) and not usage.get("reasoning_calls")


def _run_path(run_dir: str, run_id: str) -> Path | str:
    try:
        return RunStore(run_dir).get_run(run_id).path
    except UsageError:
        return run_dir
