"""`reflex-dspy`: optimize a prompt file against a dataset, and read, compare and branch its runs.

This module assembles the parser and maps errors to exit codes; the commands live in
`optimize.py` (optimize, resume) and `runs.py` (runs, show, diff, export, branch). Imports of
dspy, litellm, mlflow and llama.cpp happen inside the commands, so `--help` and `--version`
stay instant. Exit codes: 0 ok, 1 failure, 2 usage error (bad input), the latter always as one
line `reflex-dspy: error: ...` on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from reflex_dspy import __version__
from reflex_dspy._env import apply_env_defaults
from reflex_dspy.cli import lifecycle_cmds, runs
from reflex_dspy.cli.optimize import API_KEY_ENV, DEFAULT_EXPERIMENT, run_optimize
from reflex_dspy.errors import ProviderAuthError, ReflexError, UsageError
from reflex_dspy.tracking.store import default_run_dir

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C stopped
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a process whose output's reader went away

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

_Group = argparse._ArgumentGroup | argparse.ArgumentParser


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: the message and where help is, not the whole usage block.

    A 20-30 line usage dump before the error hid the one line that mattered (and broke the
    "bad input is one line, exit 2" rule the rest of the CLI keeps). Subcommand parsers inherit it.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _reasoning_flags(g: _Group) -> None:
    g.add_argument(
        "--reasoning-model", help="model that diagnoses failures and rewrites (default: task model)"
    )
    g.add_argument("--reasoning-base-url", help="OpenAI-compatible server for the reasoning model")
    g.add_argument("--reasoning-max-tokens", type=int, help="reply length limit of the reasoning model (1024)")
    g.add_argument(
        "--reasoning-api-key", help=f"API key for the reasoning model (or ${API_KEY_ENV}); never saved"
    )


class _ParamAction(argparse.Action):
    """Collects `-p KEY=VALUE` into a dict; VALUE is read as JSON when it parses, else as text."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        import json

        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            parser.error(f"{option_string} {value!r}: expected KEY=VALUE")
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        params = dict(getattr(namespace, self.dest) or {})
        params[key.strip()] = parsed
        setattr(namespace, self.dest, params)


def _search_flags(g: _Group, *, strategy_required: bool = False) -> None:
    """The flags `branch` may override too (`optimize.SEARCH_FLAGS`)."""
    g.add_argument(
        "-s", "--strategy", required=strategy_required,
        help="auto (default), iterative, structural, fewshot, joint, pdo, gepa, or a registered name",
    )
    g.add_argument(
        "-p", "--strategy-param", action=_ParamAction, metavar="KEY=VALUE",
        help="a strategy parameter (repeatable; VALUE is JSON or text), e.g. -p duels_per_round=2",
    )
    g.add_argument("--max-iterations", type=int,
                   help="iterations of the search (default 10; with a metric-call budget, as many as it allows)")
    g.add_argument("--early-stopping-patience", type=int, help="stop after N iterations without val gain (3)")
    g.add_argument("--batch-size", type=int, help="examples per iteration (0 = all of train)")
    g.add_argument("--full-eval-steps", type=int, help="full train evaluation every N iterations")
    g.add_argument("--max-workers", type=int, help="parallel calls (default 4; lowered on rate limits)")


def _threshold_flag(g: _Group) -> None:
    g.add_argument(
        "--threshold", type=float,
        help="stop once val reaches this score; overrides --verdict-results and --target (default 0.85)",
    )


def _budget_flags(g: _Group) -> None:
    g = g.add_mutually_exclusive_group()
    g.add_argument("--max-metric-calls", type=int, metavar="N",
                   help="exact search budget: the search never spends more than N metric calls")
    g.add_argument("--auto", choices=("light", "medium", "heavy"),
                   help="search budget preset: 6 / 12 / 24 metric calls per train+val example")


def _run_dir_flag(g: _Group) -> None:
    g.add_argument(
        "--run-dir", default=default_run_dir(), help="where runs are recorded (default $REFLEX_RUN_DIR, else .reflex)"
    )


def _mlflow_flags(g: _Group) -> None:
    g.add_argument(
        "--mlflow-tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI, else RUN_DIR/mlflow.db)"
    )
    g.add_argument(  # MLflow's own convention first: a user's $MLFLOW_EXPERIMENT_NAME is honoured
        "--mlflow-experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT,
        help="MLflow experiment (default $MLFLOW_EXPERIMENT_NAME, else reflex)",
    )


def _mlflow_run_flags(g: _Group) -> None:
    g.add_argument("--no-mlflow", action="store_true", help="record the run directory only, no MLflow run")
    g.add_argument("--register-prompt", metavar="NAME",
                   help="register the selected prompt as a new version of MLflow prompt NAME")
    g.add_argument("--prompt-alias", metavar="ALIAS",
                   help="alias moved to that version when promoted (default reflex-best)")


def _run_and_output_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run record and tracking")
    _run_dir_flag(g)
    _mlflow_flags(g)
    _mlflow_run_flags(g)
    g = parser.add_argument_group("promotion and output")
    g.add_argument(
        "--min-holdout-improvement", type=float, metavar="X",
        help="promote only if the selected prompt beats the baseline on held-out test by X, significantly",
    )
    g.add_argument("-o", "--output", help="write the selected prompt here (only when promoted, see above)")
    g.add_argument("--force-output", action="store_true", help="write -o even when not promoted")
    g.add_argument("--results-json", help="write the full result as JSON here")
    g.add_argument(
        "--dry-run", action="store_true", help="validate data, splits, models and config; call no model"
    )


def _pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """Pipeline mode (cli/task.py, its loader): optimize a node of a multi-step agent on an inputs file."""
    g = parser.add_argument_group(
        "pipeline mode",
        "PROMPT --pipeline-file agent.py --inputs-file inputs.jsonl: the only positional is PROMPT",
    )
    g.add_argument("--pipeline-file", metavar="FILE",
                   help="Python file defining pipeline_fn(prompt, input) -> AgentTrace, or build_program() "
                   "returning a DSPy program whose marked predictors are optimized")
    g.add_argument("--inputs-file", metavar="FILE",
                   help="JSON array or JSONL of {input, ideal?, id?} records (instead of DATASET)")
    g.add_argument("--optimize", action="append", metavar="PREDICTOR", dest="optimize_predictor",
                   help="optimize this predictor of the DSPy program (repeatable; default: the marked ones)")
    g.add_argument("--sample-timeout", type=float, metavar="SECONDS",
                   help="stop a pipeline call (or, with a prompt file, a task model request: default 120) "
                   "after SECONDS; it is retried, then its example counts as failed")


def _optimize_parser(sub: argparse._SubParsersAction) -> None:
    opt = sub.add_parser(
        "optimize",
        help="optimize a prompt file against a dataset",
        description="Optimize PROMPT (a system prompt file) on DATASET (JSONL, JSON or CSV). "
        "With no -m, the embedded local model is both the task and the reasoning model. "
        "--resume continues the latest interrupted run of DATASET, --resume-from ID that run. "
        "In three steps: optimize create DATASET PROMPT [flags] records a run, optimize dry-run ID checks it, "
        "optimize run ID starts it (or re-runs a finished one as a new attempt).",
    )
    opt.add_argument("dataset", nargs="?", metavar="DATASET", help="JSONL / JSON / CSV dataset")
    opt.add_argument(
        "prompt", nargs="?", metavar="PROMPT", help="the system prompt to optimize (a text file)"
    )

    g = opt.add_argument_group("models")
    g.add_argument(
        "-m", "--model", action="append",
        help="task model (litellm string, local/X, embedded); repeat to optimize for several at once",
    )
    _reasoning_flags(g)
    g.add_argument("--source-model", help="model family the prompt was written for (migration mode)")

    g = opt.add_argument_group("target score (precedence: --threshold, --verdict-results, --target, 0.85)")
    _threshold_flag(g)
    g.add_argument("--verdict-results", metavar="FILE",
                   help="aevyra-verdict results JSON: the best other model's score is the target")
    g.add_argument("--verdict-metric", metavar="NAME",
                   help="the results' metric to rank by (default: the one matching --metric, else the first)")
    g.add_argument("--target", action="append", metavar="MODEL",
                   help="benchmark this model and yours on train+val first; the best score is the target "
                   "(repeatable)")

    g = opt.add_argument_group("scoring")
    g.add_argument("--metric", action="append", help="rouge (default), bleu, exact, contains, json_match")
    g.add_argument(
        "--judge", metavar="MODEL", help="score with an LLM judge (1-5 rubric) instead of --metric"
    )
    g.add_argument("--judge-criteria", metavar="FILE", help="rubric file for --judge")

    _search_flags(opt.add_argument_group("search"))
    _budget_flags(opt.add_argument_group("budget"))

    g = opt.add_argument_group("data and splits")
    g.add_argument("--input-field", help="dataset field holding the input (dotted paths allowed)")
    g.add_argument("--output-field", help="dataset field holding the expected output")
    g.add_argument("--train-split", type=float, help="train ratio (default 0.8; 1.0 disables splitting)")
    g.add_argument("--val-split", type=float, help="validation ratio carved from train (default 0.1)")
    g.add_argument("--splits-file", metavar="FILE",
                   help='JSON pinning example ids: {"train": [...], "val": [...], "test": [...]}')
    g.add_argument("--eval-runs", type=int, help="passes averaged for baseline and final (default 1)")
    g.add_argument("--seed", type=int, help="seed of the split and the search (default 42)")

    _pipeline_flags(opt)

    g = opt.add_argument_group("resume").add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the latest interrupted run of DATASET")
    g.add_argument("--resume-from", metavar="ID", help="continue the interrupted run ID")
    _run_and_output_flags(opt)
    opt.set_defaults(handler=run_optimize)


def _runs_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list recorded runs", description="List the runs under RUN_DIR/runs.")
    p.add_argument("-v", "--verbose", action="store_true", help="also show reasoning model, metric and path")
    _run_dir_flag(p)
    p.set_defaults(handler=runs.cmd_runs)

    p = sub.add_parser("show", help="show one run and its iterations")
    p.add_argument("run", metavar="RUN", help="run id, e.g. 003")
    _run_dir_flag(p)
    p.set_defaults(handler=runs.cmd_show)

    p = sub.add_parser(
        "diff",
        help="diff the prompts of two iterations of a run",
        description="Unified diff of the prompts of iterations A and B (0 = the initial prompt).",
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("a", metavar="A", help="iteration number (0 = the initial prompt)")
    p.add_argument("b", metavar="B", help="iteration number")
    _run_dir_flag(p)
    p.set_defaults(handler=runs.cmd_diff)

    p = sub.add_parser(
        "export",
        help="re-create a run directory from MLflow",
        description="Write DEST/runs/<NNN_stamp>/ for RUN from the MLflow store.",
    )
    p.add_argument("run", metavar="RUN")
    _mlflow_flags(p)
    _run_dir_flag(p)
    p.add_argument(
        "--to", default="reflex-export", metavar="DEST", help="destination (default ./reflex-export)"
    )
    p.set_defaults(handler=runs.cmd_export)

    p = sub.add_parser(
        "branch",
        help="start a new run from an iteration of a recorded run",
        description="Start a new run from iteration ITER of RUN with another search configuration. "
        "The task (dataset, prompt, models, metric) and every setting not given come from RUN.",
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("iteration", metavar="ITER")
    g = p.add_argument_group("search (default: the parent's)")
    _search_flags(g, strategy_required=True)
    _threshold_flag(g)
    _budget_flags(g)
    _reasoning_flags(p.add_argument_group("reasoning model (default: the parent's)"))
    _run_and_output_flags(p)
    p.set_defaults(handler=runs.cmd_branch)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="reflex-dspy",
        description="Optimize prompts of DSPy programs and prompt files, with an auditable record.",
    )
    parser.add_argument("--version", action="version", version=f"reflex-dspy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _optimize_parser(sub)
    _runs_parsers(sub)
    # -- dashboard (issue 7): cli/dashboard.py imports the server inside its handler (--help stays instant)
    from reflex_dspy.cli.dashboard import cmd_dashboard

    p = sub.add_parser("dashboard", help="browse runs in a local web page",
                       description="Serve a page over RUN_DIR's runs: list, flow graph, diffs, branching, live.")
    _run_dir_flag(p)
    p.add_argument("--port", type=int, default=8128, help="port (default 8128; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--no-open", action="store_true", help="do not open a browser")
    p.add_argument("--mlflow-ui-url", help="MLflow UI to link each run to (default $REFLEX_MLFLOW_UI_URL)")
    p.set_defaults(handler=cmd_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (argparse's own errors and --help included)."""
    apply_env_defaults()
    parser = build_parser()
    # `optimize create | dry-run ID | run ID` (cli/lifecycle_cmds.py) parse their flags as `optimize`.
    argv, sub, run_id = lifecycle_cmds.route(list(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if sub is not None:
        args.handler = lifecycle_cmds.handler(sub, run_id)
    try:
        _check_run_dir(getattr(args, "run_dir", None))
        return args.handler(args)
    except UsageError as exc:
        print(f"reflex-dspy: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except ProviderAuthError as exc:
        print(f"reflex-dspy: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except ReflexError as exc:
        print(f"reflex-dspy: run failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:  # stdout's reader stopped early (`| head`): what the command wrote stays
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        resumable = args.command == "optimize"
        print("reflex-dspy: interrupted" + (" (the same command with --resume continues a run it started)"
                                           if resumable else ""), file=sys.stderr)
        return EXIT_INTERRUPTED


def _check_run_dir(run_dir: str | None) -> None:
    """Every command's --run-dir must be a directory (or not exist yet): a file there is one line."""
    from pathlib import Path

    if run_dir and Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise UsageError(f"--run-dir {run_dir}: is a file, expected a directory")


def _one_line(exc: BaseException) -> str:
    """The error on one line, credentials redacted (a provider message may echo a key)."""
    from reflex_dspy.tracking.redact import redact_text

    return redact_text(" ".join(str(exc).split()))
