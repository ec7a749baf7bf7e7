"""`reflex-dspy`: optimize a prompt file against a dataset, from the shell.

Imports of dspy, litellm and llama.cpp happen inside the commands, so `--help` and
`--version` stay instant. Exit codes: 0 ok, 1 failure, 2 usage error (bad input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from reflex_dspy import __version__
from reflex_dspy._env import apply_env_defaults
from reflex_dspy.errors import ProviderAuthError, ReflexError, UsageError

API_KEY_ENV = "REFLEX_REASONING_API_KEY"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reflex-dspy",
        description="Optimize prompts of DSPy programs and prompt files, with an auditable record.",
    )
    parser.add_argument("--version", action="version", version=f"reflex-dspy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    opt = sub.add_parser(
        "optimize",
        help="optimize a prompt file against a dataset",
        description="Optimize PROMPT (a system prompt file) on DATASET (JSONL, JSON or CSV). "
        "With no -m, the embedded local model is both the task and the reasoning model.",
    )
    opt.add_argument("dataset", help="JSONL / JSON / CSV dataset of inputs and expected outputs")
    opt.add_argument("prompt", help="the system prompt to optimize (a text or markdown file)")

    g = opt.add_argument_group("models")
    g.add_argument("-m", "--model", action="append", help="task model (litellm string, local/X, embedded)")
    g.add_argument("--reasoning-model", help="model that diagnoses failures and rewrites (default: the task model)")
    g.add_argument("--reasoning-base-url", help="OpenAI-compatible server for the reasoning model")
    g.add_argument("--reasoning-api-key", help=f"API key for the reasoning model (or ${API_KEY_ENV})")
    g.add_argument("--source-model", help="model family the prompt was written for (migration mode)")

    g = opt.add_argument_group("scoring")
    g.add_argument("--metric", action="append", help="rouge (default), bleu, exact, contains, json_match; repeatable")
    g.add_argument("--judge", metavar="MODEL", help="score with an LLM judge (1-5 rubric) instead of --metric")
    g.add_argument("--judge-criteria", metavar="FILE", help="rubric file for --judge")
    g.add_argument("--threshold", type=float, help="stop once this score is reached (default 0.85)")

    g = opt.add_argument_group("search")
    g.add_argument("-s", "--strategy", default=None, help="optimization strategy (default: iterative)")
    g.add_argument("--max-iterations", type=int)
    g.add_argument("--early-stopping-patience", type=int)
    g.add_argument("--batch-size", type=int, help="examples per iteration (0 = all of train)")
    g.add_argument("--full-eval-steps", type=int, help="full train evaluation every N iterations")
    g.add_argument("--max-workers", type=int)
    g.add_argument("--seed", type=int)

    g = opt.add_argument_group("data and splits")
    g.add_argument("--input-field", help="dataset field holding the input (dotted paths allowed)")
    g.add_argument("--output-field", help="dataset field holding the expected output")
    g.add_argument("--train-split", type=float, help="train ratio (default 0.8; 1.0 disables splitting)")
    g.add_argument("--val-split", type=float, help="validation ratio carved from train (default 0.1)")
    g.add_argument("--eval-runs", type=int, help="passes averaged for baseline and final (default 1)")

    g = opt.add_argument_group("output")
    g.add_argument("-o", "--output", help="write the selected prompt here")
    g.add_argument("--results-json", help="write the full result as JSON here")
    g.add_argument("--dry-run", action="store_true", help="validate data, splits, models and config; call no model")
    return parser


# Flag name → OptimizerConfig field.
_CONFIG_FLAGS = {
    "strategy": "strategy",
    "max_iterations": "max_iterations",
    "threshold": "score_threshold",
    "train_split": "train_ratio",
    "val_split": "val_ratio",
    "early_stopping_patience": "early_stopping_patience",
    "batch_size": "batch_size",
    "full_eval_steps": "full_eval_steps",
    "eval_runs": "eval_runs",
    "max_workers": "max_workers",
    "seed": "seed",
    "reasoning_model": "reasoning_model",
    "reasoning_base_url": "reasoning_base_url",
    "source_model": "source_model",
}


def _config_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {f: getattr(args, flag) for flag, f in _CONFIG_FLAGS.items() if getattr(args, flag) is not None}
    fields.setdefault("strategy", "iterative")
    key = args.reasoning_api_key or os.environ.get(API_KEY_ENV)
    if key:
        fields["reasoning_api_key"] = key
    if args.threshold is not None:
        fields["target_source"] = "manual"
    return fields


def _write_atomic(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, target)


def _check_output_paths(args: argparse.Namespace) -> None:
    for flag, path in (("-o", args.output), ("--results-json", args.results_json)):
        if path and Path(path).is_dir():
            raise UsageError(f"{flag} {path}: is a directory, expected a file path")
        if path and not Path(path).resolve().parent.exists():
            raise UsageError(f"{flag} {path}: directory {Path(path).parent} does not exist")


def _optimize(args: argparse.Namespace) -> int:
    from reflex_dspy.adapters import load_prompt, program_from_prompt
    from reflex_dspy.config import OptimizerConfig
    from reflex_dspy.data import load_dataset
    from reflex_dspy.lm import describe_lm, probe_lm, resolve_lm
    from reflex_dspy.metrics import load_rubric, resolve_metric
    from reflex_dspy.splits import split_dataset
    from reflex_dspy.strategies import get_strategy

    # Validate everything that needs no model before touching any model or file.
    config = OptimizerConfig.build(**_config_fields(args))
    get_strategy(config.strategy, **config.extra_kwargs)
    if args.model and len(args.model) > 1:
        raise UsageError("-m: several task models are not supported yet; pass one")
    if args.judge and args.metric:
        raise UsageError("--metric and --judge are mutually exclusive")
    if args.judge_criteria and not args.judge:
        raise UsageError("--judge-criteria needs --judge MODEL")
    _check_output_paths(args)
    prompt = load_prompt(args.prompt)
    examples = load_dataset(args.dataset, input_field=args.input_field, output_field=args.output_field)
    splits = split_dataset(examples, train_ratio=config.train_ratio, val_ratio=config.val_ratio, seed=config.seed)
    rubric = load_rubric(args.judge_criteria) if args.judge_criteria else None
    metric_spec: Any = "judge" if args.judge else (args.metric or ["rouge"])
    if not args.judge:
        resolve_metric(metric_spec)  # unknown names fail here, before any model loads

    task_spec = args.model[0] if args.model else None
    task_lm = resolve_lm(task_spec, temperature=config.eval_temperature)
    key = config.reasoning_api_key.get_secret_value() if config.reasoning_api_key else None
    reasoning_lm = (
        resolve_lm(config.reasoning_model, api_key=key, base_url=config.reasoning_base_url)
        if config.reasoning_model
        else task_lm
    )
    judge_lm = resolve_lm(args.judge) if args.judge else None

    if args.dry_run:
        n_search = len(splits.train) + len(splits.val)
        per_iter = 2 * (config.batch_size or len(splits.train)) + len(splits.val)
        print(f"dataset        : {args.dataset} ({len(examples)} examples)")
        print(f"splits         : train {len(splits.train)} / val {len(splits.val)} / test {len(splits.test)}")
        print(f"prompt         : {args.prompt} ({len(prompt)} characters)")
        print(f"task model     : {describe_lm(task_lm)}")
        print(f"reasoning model: {describe_lm(reasoning_lm)}")
        print(f"metric         : {'judge ' + describe_lm(judge_lm) if judge_lm else ', '.join(metric_spec)}")
        print(f"strategy       : {config.strategy}, up to {config.max_iterations} iterations")
        est = 2 * config.eval_runs * len(splits.test) + len(splits.val) + config.max_iterations * per_iter
        print(f"estimated LM calls: at most {est} task calls and {config.max_iterations} reasoning calls "
              f"(search budget: {config.metric_call_budget(n_search) or 'none'})")
        for warning in splits.warnings:
            print(f"warning        : {warning}")
        print("dry run: no model was called")
        return 0

    for lm in {id(x): x for x in (task_lm, reasoning_lm, judge_lm) if x is not None}.values():
        probe_lm(lm)
    metric = resolve_metric(metric_spec, judge_lm=judge_lm, judge_criteria=rubric)

    from reflex_dspy.progress import ConsoleTracker
    from reflex_dspy.reflex import Reflex

    optimizer = Reflex(metric, task_lm=task_lm, reasoning_lm=reasoning_lm, trackers=[ConsoleTracker()], config=config)
    optimized = optimizer.compile(program_from_prompt(prompt), trainset=examples)
    result = optimized.result
    print(result.summary())
    if args.output:
        _write_atomic(args.output, result.best_prompt.rstrip("\n") + "\n")
        print(f"Best prompt    : written to {args.output}")
    if args.results_json:
        _write_atomic(args.results_json, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
        print(f"Results        : written to {args.results_json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    apply_env_defaults()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _optimize(args)
    except UsageError as exc:
        print(f"reflex-dspy: error: {exc}", file=sys.stderr)
        return 2
    except ProviderAuthError as exc:
        print(f"reflex-dspy: {exc}", file=sys.stderr)
        return 1
    except ReflexError as exc:
        print(f"reflex-dspy: run failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reflex-dspy: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
