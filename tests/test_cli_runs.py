"""`reflex-dspy runs | show | diff | export` on run directories built by hand with `RunStore`.

The layout is written the way the tracker writes it (config.json, baseline.json, iterations,
checkpoint, result.json, run.pid), so these tests pin the CLI's reading of the layout without
running an optimization.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import types
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reflex_dspy.cli import main
from reflex_dspy.config import OptimizerConfig
from reflex_dspy.result import IterationRecord, Measurement
from reflex_dspy.stats import Significance
from reflex_dspy.tracking.files import write_json
from reflex_dspy.tracking.store import PID, RunStore, iteration_file

INITIAL = "Say which team should handle the message."
PROMPTS = {
    1: "Be verbose. Explain which of billing, shipping, technical applies.",
    2: "Route the message.\nAnswer with one word: billing, shipping or technical.",
}


def _record(i: int, prompt: str, score: float, val: float | None, delta: float | None) -> dict:
    return IterationRecord(
        iteration=i,
        phase="iterative",
        strategy="iterative",
        score=score,
        val_score=val,
        delta=delta,
        scores_by_metric={"exact": score},
        system_prompt={"predict": prompt},
        candidate={"predict": {"instructions": prompt, "demos": []}},
        fingerprint=f"fp{i}",
        reasoning="outputs are sentences",
        change_summary=f"change {i}: answer with labels\nmore detail",
        predictor="predict",
        eval_tokens=1500 * i,
        reasoning_tokens=200,
        metric_calls=10,
        elapsed_seconds=1.0,
        timestamp="2025-01-01T10:00:00+00:00",
        is_full_eval=True,
        batch_size=10,
        n_failed=0,
    ).to_dict()


def make_run(
    store: RunStore,
    *,
    status: str = "completed",
    iterations: int = 2,
    branched_from: dict | None = None,
    metadata: dict | None = None,
    minute: int = 0,
    dataset: str = "/data/support.jsonl",
    config: dict | None = None,
):
    """A run directory as the tracker leaves it; `status` picks result.json / live / dead sentinel."""
    run = store.create_run(now=datetime(2025, 1, 1, 10, minute, tzinfo=UTC))
    fields = {"strategy": "iterative", "max_iterations": 5, "score_threshold": 0.9, **(config or {})}
    write_json(
        run.file("config.json"),
        {
            "run_id": run.run_id,
            "run_name": run.path.name,
            "run_dir": str(run.path),
            "created": run.created,
            "config": OptimizerConfig(**fields).public_dict(),
            "split_sizes": {"train": 19, "val": 2, "test": 3},
            "initial_candidate": {"predictors": {"predict": {"instructions": INITIAL, "demos": []}}},
            "initial_prompt": INITIAL,
            "metrics": ["exact"],
            "models": {"task": "fake/task", "reasoning": "fake/reasoner"},
            "metadata": {"dataset_path": dataset} if metadata is None else metadata,
            "branched_from": branched_from,
        },
    )
    write_json(run.file("baseline.json"), {"mean": 0.3333, "std": 0.0, "n_runs": 1, "n": 3})
    scores = [(0.0, 0.0, -0.3333), (1.0, 1.0, 0.6667)]
    for i in range(1, iterations + 1):
        score, val, delta = scores[(i - 1) % 2]
        write_json(run.file(iteration_file(i)), _record(i, PROMPTS[(i - 1) % 2 + 1], score, val, delta))
    write_json(run.file("checkpoint.json"), {"best": {"score": 1.0 if iterations >= 2 else 0.0}})
    if status == "completed":
        final = Measurement("test", 1.0, 0.0, 1, 3, 0, {"a": 1.0, "b": 1.0, "c": 1.0})
        sig = Significance("sign test", 2, 0.5, False, 0.05, "")
        write_json(
            run.file("result.json"),
            {
                "final": final.to_dict(),
                "improvement": 0.6667,
                "significance": asdict(sig),
                "selected_iteration": 2,
                "selected_by": "val",
                "selected_score": 1.0,
                "stop_reason": "max iterations",
            },
        )
        run.file(PID).unlink()
    elif status == "interrupted":  # the process that wrote the sentinel is gone
        child = subprocess.Popen(["true"])
        child.wait()
        write_json(run.file(PID), {"pid": child.pid, "host": socket.gethostname(), "started": None})
    return run


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "reflex")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_runs_on_an_empty_store_is_a_friendly_line(capsys, store):
    code, out, err = cli(capsys, "runs", "--run-dir", str(store.root))
    assert code == 0 and "No runs in" in out and "reflex-dspy optimize" in out and not err
    assert not store.root.exists()  # listing writes nothing


def test_runs_lists_statuses_and_nests_branches_under_their_parent(capsys, store):
    make_run(store, status="completed")
    make_run(store, status="interrupted", iterations=1, minute=1)
    make_run(store, status="running", iterations=1, minute=2)
    make_run(store, status="completed", branched_from={"run_id": "001", "iteration": 2}, minute=3)
    make_run(store, status="interrupted", branched_from={"run_id": "004", "iteration": 1}, minute=4)
    code, out, _ = cli(capsys, "runs", "--run-dir", str(store.root))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "CREATED", "STATUS"]
    ids = [line.strip().split("  ")[0] for line in lines[1:]]
    assert ids == ["001", "└─ ⎇ 001/2 → 004", "└─ ⎇ 004/1 → 005", "002", "003"]
    assert lines[3].startswith("   └─")  # a branch of a branch is indented one level more
    by_id = dict(zip(["001", "004", "005", "002", "003"], lines[1:], strict=True))
    assert "completed" in by_id["001"] and "interrupted" in by_id["002"] and "running" in by_id["003"]
    assert "2025-01-01 10:00" in by_id["001"] and "support.jsonl" in by_id["001"]
    assert "0.333" in by_id["001"] and "0.90" in by_id["001"] and "fake/task" in by_id["001"]
    assert "/data/" not in out and "fake/reasoner" not in out  # short form without -v


def test_runs_verbose_adds_reasoning_model_metric_and_path(capsys, store):
    run = make_run(store)
    code, out, _ = cli(capsys, "runs", "-v", "--run-dir", str(store.root))
    assert code == 0
    assert "REASONING MODEL" in out and "fake/reasoner" in out and "exact" in out and str(run.path) in out


def test_a_reused_pid_with_another_start_time_is_not_running(capsys, store):
    import os

    run = make_run(store, status="running", iterations=0)
    write_json(run.file(PID), {"pid": os.getpid(), "host": socket.gethostname(), "started": "-1"})
    code, out, _ = cli(capsys, "runs", "--run-dir", str(store.root))
    assert code == 0 and "interrupted" in out.splitlines()[1]


def test_show_prints_header_iterations_and_result(capsys, store):
    make_run(
        store, status="completed", metadata={"dataset_path": "/data/support.jsonl", "prompt_path": "/p.md"}
    )
    code, out, _ = cli(capsys, "show", "1", "--run-dir", str(store.root))
    assert code == 0
    assert out.startswith("Run 001")
    for text in (
        "Status         : completed",
        "Strategy       : iterative, up to 5 iterations",
        "Task model     : fake/task",
        "Reasoning      : fake/reasoner",
        "Dataset        : /data/support.jsonl",
        "Metric         : exact",
        "Train/val/test : 19 / 2 / 3",
        "Baseline       : 0.3333 on 3 test",
        "Target         : 0.90",
    ):
        assert text in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert rows[0][:6] == ["1", "iterative", "0.000", "-0.333", "0.000", "1.7K"]
    assert rows[1][:6] == ["2", "iterative", "1.000", "+0.667", "1.000", "3.2K"]
    assert "change 2: answer with labels" in out and "more detail" not in out  # first line only
    assert "Final score    : 1.0000 (on 3-sample test set)" in out
    assert "Significance   : p=0.5000 ✗ not significant" in out
    assert "Selected       : iteration 2 (best on val: 1.0000)" in out
    assert "Branched from" not in out


def test_show_an_interrupted_branch_names_its_parent_and_how_to_resume(capsys, store):
    make_run(store)
    make_run(store, status="interrupted", iterations=1, branched_from={"run_id": "001", "iteration": 2})
    code, out, _ = cli(capsys, "show", "002", "--run-dir", str(store.root))
    assert code == 0
    assert "Status         : interrupted" in out and "Branched from  : run 001, iteration 2" in out
    assert "Resume         : reflex-dspy optimize --resume-from 002" in out and "Final score" not in out


def test_show_a_run_without_iterations(capsys, store):
    make_run(store, status="running", iterations=0)
    code, out, _ = cli(capsys, "show", "001", "--run-dir", str(store.root))
    assert code == 0 and "(no iterations recorded yet)" in out and "Status         : running" in out


@pytest.mark.parametrize(
    ("run_id", "message"),
    [
        ("abc", "invalid run id 'abc'"),
        ("7", "no run 7 in"),
        ("../../etc", "invalid run id"),
        ("\uff11", "invalid run id"),  # a full-width 1 is not run 001
    ],
)
def test_bad_run_ids_are_one_line_usage_errors(capsys, store, run_id, message):
    make_run(store)
    for command in (["show", run_id], ["diff", run_id, "0", "1"]):
        code, out, err = cli(capsys, *command, "--run-dir", str(store.root))
        assert code == 2 and not out
        assert err.startswith("reflex-dspy: error: ") and message in err and err.count("\n") == 1


def test_diff_shows_a_unified_diff_of_two_iterations(capsys, store):
    make_run(store)
    code, out, _ = cli(capsys, "diff", "001", "0", "2", "--run-dir", str(store.root))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "--- a/predict (run 001, iteration 0)"
    assert lines[1] == "+++ b/predict (run 001, iteration 2)"
    assert lines[2].startswith("@@")
    assert f"-{INITIAL}" in lines and "+Route the message." in lines
    assert "+Answer with one word: billing, shipping or technical." in lines


def test_diff_from_iteration_0_reads_the_initial_prompt_from_config(capsys, store):
    make_run(store)
    code, out, _ = cli(capsys, "diff", "001", "0", "1", "--run-dir", str(store.root))
    assert code == 0 and f"-{INITIAL}" in out.splitlines()


def test_diff_of_identical_iterations_says_so(capsys, store):
    make_run(store)
    code, out, _ = cli(capsys, "diff", "001", "1", "1", "--run-dir", str(store.root))
    assert code == 0 and "same prompts" in out


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ("0", "5", "run 001 has no iteration 5 (recorded: 0-2)"),
        ("x", "1", "A 'x': expected an iteration number"),
        ("1", "-1", "iteration numbers start at 0"),
    ],
)
def test_diff_rejects_unknown_iterations(capsys, store, a, b, message):
    make_run(store)
    code, out, err = cli(capsys, "diff", "001", a, b, "--run-dir", str(store.root))
    assert code == 2 and not out and message in err and err.count("\n") == 1


def test_export_passes_the_store_uri_and_prints_the_written_directory(capsys, store, tmp_path, monkeypatch):
    calls = []

    def export_run(tracking_uri, run, dest_root, experiment="reflex"):
        calls.append((tracking_uri, run, Path(dest_root), experiment))
        return Path(dest_root) / "runs" / "001_2025-01-01T10-00-00"

    monkeypatch.setitem(
        sys.modules, "reflex_dspy.tracking.export", types.SimpleNamespace(export_run=export_run)
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store.root.mkdir(parents=True)
    (store.root / "mlflow.db").write_bytes(b"")
    dest = tmp_path / "out"
    code, out, _ = cli(capsys, "export", "001", "--run-dir", str(store.root), "--to", str(dest))
    assert code == 0
    assert calls == [(store.tracking_uri, "001", dest, "reflex")]
    assert out.strip() == str(dest / "runs" / "001_2025-01-01T10-00-00")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    cli(capsys, "export", "2", "--run-dir", str(store.root), "--mlflow-experiment", "exp")
    assert calls[-1] == ("sqlite:///elsewhere.db", "2", Path("reflex-export"), "exp")
    cli(capsys, "export", "3", "--mlflow-tracking-uri", "http://mlflow:5000")
    assert calls[-1][0] == "http://mlflow:5000"


def test_export_without_a_store_is_a_usage_error_and_creates_nothing(capsys, store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = cli(capsys, "export", "001", "--run-dir", str(store.root))
    assert code == 2 and "no MLflow store at" in err and not store.root.exists()


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = cli(capsys)
    assert code == 2 and "optimize" in out and "branch" in out


def test_argparse_errors_return_2_in_process(capsys):
    code, _, err = cli(capsys, "diff", "001")
    assert code == 2 and "the following arguments are required" in err


def test_help_imports_no_heavy_library_and_module_entry_point_works():
    code = (
        "import sys, contextlib, io\n"
        "from reflex_dspy.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['optimize', '--help']) == 0 and main(['branch', '--help']) == 0\n"
        "print(sorted(m for m in ('dspy', 'litellm', 'mlflow', 'xllamacpp') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    proc = subprocess.run(
        [sys.executable, "-m", "reflex_dspy.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("reflex-dspy ")


def test_show_says_the_budget_limits_a_run_whose_iteration_cap_rose_to_it(capsys, store):
    """A budgeted run records the cap it ran with (its budget): before, `show` said "up to 40 iterations"."""
    run = make_run(store, config={"max_iterations": 40, "max_metric_calls": 40})
    config = json.loads(run.file("config.json").read_text())
    write_json(run.file("config.json"), {**config, "budget": 40})
    code, out, _ = cli(capsys, "show", "1", "--run-dir", str(store.root))
    assert code == 0 and "Strategy       : iterative, as many iterations as the budget allows (40 metric calls)" in out


def test_a_run_limited_by_its_budget_shows_no_iteration_cap():
    """Before: the dashboard said "3 of at most 120" iterations (and "3/120" in the runs list) for a
    run whose cap had risen to its 120-call budget; `show` already said "as the budget allows"."""
    from reflex_dspy.cli.runs import iteration_cap

    def config(cap, budget):
        return {"optimizer_config": {"max_iterations": cap}, "budget": budget}

    assert iteration_cap(config(120, 120)) is None and iteration_cap(config(400, 120)) is None
    assert iteration_cap(config(10, 120)) == 10 and iteration_cap(config(10, None)) == 10
    assert iteration_cap({}) is None  # nothing recorded: no cap to show
