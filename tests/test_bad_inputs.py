"""Bad input to the real CLI (issue 17, items 5, 6, 7, 9, 10): one line, exit 2, before any model
call and with nothing written, against the fault server so "no model call" is counted, not assumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dashboard_kit import write_task
from fake_openai_server import FakeOpenAI

from reflex_dspy.cli import main


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAI(lifetime_s=120) as fake:
        monkeypatch.setenv("OPENAI_API_BASE", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield fake


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    data, prompt = write_task(tmp_path / "task", n_per_label=3)
    blocker = tmp_path / "notafile"
    blocker.write_text("a file where a directory is expected\n")
    return {"data": data, "prompt": prompt, "blocker": blocker, "runs": tmp_path / "runs"}


def refused(capsys, server: FakeOpenAI, files: dict[str, Path], *extra: str, dry_run: bool = False) -> str:
    """Run optimize; assert exit 2, one stderr line, no model call, no run directory; the line."""
    before = {p: p.read_bytes() for p in (files["data"], files["prompt"])}
    argv = ["optimize", str(files["data"]), str(files["prompt"]), "-m", "openai/fake-task", "--reasoning-model",
            "openai/fake-reasoner", "--metric", "exact", "-s", "iterative", "--max-iterations", "1",
            "--run-dir", str(files["runs"]), *extra, *(["--dry-run"] if dry_run else [])]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("reflex-dspy"), err
    assert server.received == 0
    assert not files["runs"].exists()
    assert all(p.read_bytes() == content for p, content in before.items())  # inputs untouched
    return err


@pytest.mark.parametrize(("flag", "target", "label"), [
    ("-o", "data", "dataset"),
    ("--results-json", "prompt", "prompt file"),
    ("-o", "prompt", "prompt file"),
])
def test_an_output_equal_to_an_input_is_refused(capsys, server, files, flag, target, label):
    err = refused(capsys, server, files, flag, str(files[target]))
    assert f"is the {label}; an output never overwrites an input" in err


def test_the_same_path_for_both_outputs_is_refused(capsys, server, files, tmp_path):
    out = str(tmp_path / "same.json")
    err = refused(capsys, server, files, "-o", out, "--results-json", out)
    assert "is the -o output" in err


@pytest.mark.parametrize(("extra", "message"), [
    (["-o", "{blocker}/best.md"], "notafile is not a directory"),
    (["--results-json", "{blocker}/deeper/r.json"], "notafile is a file, not a directory"),
    (["-o", "/proc/best.md"], "cannot write in /proc"),
    (["--results-json", "/proc/r.json"], "cannot write in /proc"),
    (["--run-dir", "{blocker}"], "--run-dir"),
    (["--run-dir", "{blocker}/runs"], "notafile is a file, not a directory"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_an_unwritable_output_is_refused_before_any_model_call(capsys, server, files, extra, message, dry_run):
    argv = [a.format(blocker=files["blocker"]) for a in extra]
    err = refused(capsys, server, files, *argv, dry_run=dry_run)
    assert message in err


@pytest.mark.parametrize(("param", "message"), [
    ("bottom_k=abc", "bottom_k: Input should be a valid integer"),
    ("bottom_k=-5", "bottom_k: Input should be greater than or equal to 1"),
    ("bottom_k=2.5", "bottom_k: Input should be a valid integer"),
    ("predictor_order=sideways", "predictor_order: Input should be 'round_robin' or 'worst_first'"),
    ("no_such_knob=1", "unknown parameter 'no_such_knob' (known: bottom_k, grounded_control, predictor_order)"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_bad_strategy_parameter_is_refused_when_the_strategy_is_built(capsys, server, files, param, message,
                                                                        dry_run):
    err = refused(capsys, server, files, "-p", param, dry_run=dry_run)
    assert "invalid parameters for strategy 'iterative'" in err and message in err


@pytest.mark.parametrize(("axis_params", "message"), [
    ({"iterative": {"bottom_k": "abc"}}, "axis_params.iterative: bottom_k: Input should be a valid integer"),
    ({"structural": {"variants_per_round": 0}}, "axis_params.structural: variants_per_round must be at least 1"),
    ({"iterative": {"nope": 1}}, "axis_params.iterative: unknown parameter 'nope'"),
    ([1, 2], "axis_params: Input should be a valid dictionary"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_bad_axis_params_are_refused_before_the_baseline(capsys, server, files, axis_params, message, dry_run):
    argv = ["-s", "auto", "-p", f"axis_params={json.dumps(axis_params)}"]
    err = refused(capsys, server, files, *argv, dry_run=dry_run)
    assert "invalid parameters for strategy 'auto'" in err and message in err


def test_duplicate_ids_name_both_lines(capsys, server, files):
    files["data"].write_text('{"id": "a", "input": "refund please", "output": "billing"}\n'
                             '{"id": "b", "input": "parcel late", "output": "shipping"}\n'
                             '{"id": "a", "input": "app crash", "output": "technical"}\n')
    err = refused(capsys, server, files)
    assert f"{files['data']}:3: duplicate id 'a' (also on line 1)" in err


def test_a_one_example_dataset_error_names_the_file(capsys, server, files):
    files["data"].write_text('{"input": "refund please", "output": "billing"}\n')
    err = refused(capsys, server, files)
    assert f"{files['data']}: 1 example cannot be split" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["optimize", "--max-iterations", "x"], "reflex-dspy optimize: error: argument --max-iterations: invalid int"),
    (["optimize", "-p", "novalue"], "reflex-dspy optimize: error: -p 'novalue': expected KEY=VALUE"),
    (["nonsense"], "reflex-dspy: error: argument COMMAND: invalid choice: 'nonsense'"),
    (["runs", "--bogus"], "reflex-dspy: error: unrecognized arguments: --bogus"),
])
def test_argparse_errors_are_one_line_with_a_pointer_to_help(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.rstrip().endswith("--help)"), err
    assert "usage:" not in err


@pytest.mark.parametrize("under", ["", "/deeper"])
def test_export_to_a_file_or_under_one_is_refused(capsys, tmp_path, under):
    runs = tmp_path / "store"
    runs.mkdir()
    (runs / "mlflow.db").write_bytes(b"")  # a store exists: the destination is what is wrong
    blocker = tmp_path / "notadir"
    blocker.write_text("x\n")
    code = main(["export", "001", "--run-dir", str(runs), "--to", f"{blocker}{under}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--to" in err and "is a file" in err, err


@pytest.mark.parametrize("command", [["runs"], ["show", "1"], ["runs", "-v"]])
def test_a_run_dir_that_is_a_file_is_one_line(capsys, files, command):
    code = main([*command, "--run-dir", str(files["blocker"])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--run-dir" in err and "is a file" in err, err
