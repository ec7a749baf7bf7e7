"""Provider faults, injected by our own loopback server, against the real CLI (issue 17, items 1-4, 13).

Every test runs `reflex-dspy optimize` (the CLI's `main`, in this process so DSPy's response
cache can be inspected) with litellm talking HTTP to `tests/fake_openai_server.py`, which
injects 429 / 500 / hang / malformed / empty replies. What must hold: the run finishes, retries
and rate limits in the summary equal the faults injected, a persistent failure costs exactly
`RetryPolicy.max_attempts` requests (one retry layer, ours), failed examples are reported as
failed and excluded (never a 0), no empty answer is cached, and no key reaches any record.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import dspy
import pytest
from dashboard_kit import write_task
from fake_openai_server import FakeOpenAI, Faults

from reflex_dspy.cli import main
from reflex_dspy.cli.output import no_reasoning_reply
from reflex_dspy.reply_cache import is_empty_reply
from reflex_dspy.retries import RetryPolicy
from reflex_dspy.tracking.store import RunStore

ATTEMPTS = RetryPolicy().max_attempts


# Pinned splits for sticky faults at rate 0.3: the server's input hash fails examples 0, 2, 5 and 6
# (see `Faults.sticky`), so test holds one failing and two clean examples and val only clean ones.
PINNED = {"test": ["ex0", "ex1", "ex4"], "val": ["ex3", "ex7"], "train": ["ex2", "ex5", "ex6", "ex8"]}


def write_pinned_task(folder: Path) -> tuple[Path, Path, Path]:
    """The routing task with ids, and a splits file putting one persistently failing example in test."""
    data, prompt = write_task(folder, n_per_label=3)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps({"id": f"ex{i}", **row}) + "\n" for i, row in enumerate(rows)))
    splits = folder / "splits.json"
    splits.write_text(json.dumps(PINNED))
    return data, prompt, splits


def run_cli(capsys, monkeypatch, tmp_path: Path, server: FakeOpenAI, *extra: str, key: str = "test-key"):
    """(exit code, stdout, stderr, result.json or None) of one CLI run against `server`."""
    data, prompt, splits = write_pinned_task(tmp_path / "task")
    monkeypatch.setenv("OPENAI_API_BASE", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    results = tmp_path / "result.json"
    model = f"openai/fault-{uuid.uuid4().hex[:8]}"  # a fresh DSPy cache key space per run
    argv = ["optimize", str(data), str(prompt), "-m", model, "--reasoning-model", f"{model}-reasoner",
            "--metric", "exact", "-s", "iterative", "--max-iterations", "1", "--max-workers", "2",
            "--run-dir", str(tmp_path / "runs"), "--mlflow-tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--results-json", str(results), "--splits-file", str(splits), *extra]
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err, json.loads(results.read_text()) if results.exists() else None


def cached_records() -> list:
    """Everything in DSPy's response cache now: its memory tier and its disk tier."""
    cache = dspy.cache
    records = list(cache.memory_cache.values()) + [cache.disk_cache.get(k) for k in cache.disk_cache]
    assert records, "the run cached nothing: the check below would prove nothing"
    return records


@pytest.mark.parametrize("kind", ["429", "500", "malformed", "empty"])
def test_each_fault_is_retried_counted_and_never_scored(capsys, monkeypatch, tmp_path, kind):
    with FakeOpenAI(faults=Faults(kind, rate=0.3, max_faults=5), lifetime_s=120) as server:
        code, out, err, result = run_cli(capsys, monkeypatch, tmp_path, server)
    assert code == 0, err[-2000:]
    usage = result["usage"]
    assert server.injected == {kind: 5}
    # One retry layer: each injected fault is exactly one retried request, counted.
    assert usage["retries"] == 5, (usage, out)
    assert usage["rate_limits"] == (5 if kind == "429" else 0)
    if kind == "429":  # the throttle saw them: concurrency halved
        assert "provider rate-limited (429): concurrency 2 → 1" in err
    assert usage["failed"] == 0 and result["baseline"]["n_failed"] == 0
    assert f"{usage['retries']} retries" in out
    assert not any(is_empty_reply(r) for r in cached_records())


def test_a_persistent_failure_costs_max_attempts_requests_and_is_excluded(capsys, monkeypatch, tmp_path):
    """Sticky 500s: DSPy's own retries under ours used to make one failing example 20 requests."""
    with FakeOpenAI(faults=Faults("500", rate=0.3, sticky=True), lifetime_s=120) as server:
        code, out, err, result = run_cli(capsys, monkeypatch, tmp_path, server)
    assert code == 0, err[-2000:]
    usage = result["usage"]
    assert usage["failed"] > 0
    assert server.injected["500"] == ATTEMPTS * usage["failed"]
    assert usage["retries"] == (ATTEMPTS - 1) * usage["failed"]
    baseline = result["baseline"]
    assert baseline["n_failed"] == 1 and "1 failed and excluded" in out
    assert len(baseline["scores"]) == baseline["n"] - baseline["n_failed"]  # excluded, not scored 0


def test_an_empty_answer_is_a_failed_example_and_never_cached(capsys, monkeypatch, tmp_path):
    with FakeOpenAI(faults=Faults("empty", rate=0.3, sticky=True), lifetime_s=120) as server:
        code, out, err, result = run_cli(capsys, monkeypatch, tmp_path, server)
    assert code == 0, err[-2000:]
    assert result["usage"]["failed"] > 0 and result["baseline"]["n_failed"] == 1
    assert "1 failed and excluded" in out
    assert server.injected["empty"] == ATTEMPTS * result["usage"]["failed"]
    assert not any(is_empty_reply(r) for r in cached_records())


def test_a_hung_request_is_cut_by_sample_timeout_and_retried(capsys, monkeypatch, tmp_path):
    faults = Faults("hang", rate=0.25, max_faults=2, hang_s=120)
    start = time.monotonic()
    with FakeOpenAI(faults=faults, lifetime_s=300) as server:
        # 2 s, not 0.5: on a loaded 2-core machine an ordinary request once took over 0.5 s and was
        # cut and retried too (3 retries where the 2 hangs make 2); a hang is 120 s either way.
        code, out, err, result = run_cli(capsys, monkeypatch, tmp_path, server, "--sample-timeout", "2")
    assert code == 0, err[-2000:]
    assert server.injected == {"hang": 2}
    assert time.monotonic() - start < 100  # not one 120 s hang waited out
    assert result["usage"]["retries"] == 2 and result["usage"]["failed"] == 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--sample-timeout", "-1"], "--sample-timeout -1: must be a positive number of seconds"),
    (["--sample-timeout", "0"], "--sample-timeout 0: must be a positive number of seconds"),
])
def test_a_bad_sample_timeout_is_refused_before_any_call(capsys, monkeypatch, tmp_path, extra, message):
    with FakeOpenAI(lifetime_s=60) as server:
        code, _, err, result = run_cli(capsys, monkeypatch, tmp_path, server, *extra)
    assert code == 2 and message in err and err.count("\n") == 1
    assert server.received == 0 and result is None and not (tmp_path / "runs").exists()


def test_sample_timeout_on_the_embedded_model_is_refused(capsys, tmp_path):
    data, prompt = write_task(tmp_path / "task", n_per_label=2)
    code = main(["optimize", str(data), str(prompt), "--sample-timeout", "5", "--dry-run",
                 "--run-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "runs in-process and cannot be stopped mid-call" in err


def test_a_reasoning_model_that_never_answers_fails_the_run(capsys, monkeypatch, tmp_path):
    """It used to exit 0 with "reasoning 0 calls" and the errors only in details.rejected."""
    with FakeOpenAI(faults=Faults("500", rate=1.0, target="reasoning"), lifetime_s=120) as server:
        code, out, err, result = run_cli(capsys, monkeypatch, tmp_path, server, "-o", str(tmp_path / "best.md"),
                                         "--max-iterations", "3")
    assert code == 1, err[-2000:]
    assert "run failed: the reasoning model answered none of its 3 requests (each retried)" in err
    assert "Internal error (injected)" in err
    assert server.injected["500"] == 3 * ATTEMPTS  # stopped after the first iteration's 3 proposals
    assert result is None and not (tmp_path / "best.md").exists()
    [run] = RunStore(tmp_path / "runs").list_runs()
    assert run.status == "failed"


def test_the_summary_counts_reasoning_requests_that_got_no_reply():
    usage = {"reasoning_calls": 0, "reasoning_tokens": 0, "reasoning_failed": 3,
             "reasoning_error": "LMServerError: boom"}
    assert no_reasoning_reply(usage) and not no_reasoning_reply({**usage, "reasoning_calls": 1})


def test_a_key_echoed_by_the_provider_is_recorded_nowhere(capsys, monkeypatch, tmp_path):
    key = "zq-9f8e7d6c5b4a39281706"  # not sk-like: redacted because it is the configured key
    faults = Faults("500", rate=0.3, sticky=True, echo_key=True)
    with FakeOpenAI(faults=faults, lifetime_s=120) as server:
        code, out, err, result = run_cli(capsys, monkeypatch, tmp_path, server, key=key)
    assert code == 0, err[-2000:]
    assert result["usage"]["failed"] > 0 and server.injected["500"] > 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "task" not in p.parts]
    assert written and any(p.name == "mlflow.db" for p in written)
    for path in written:
        assert key.encode() not in path.read_bytes(), path
    assert any(b"for key ***" in path.read_bytes() for path in written)  # recorded, redacted
    assert key not in out + err


def test_a_stalled_task_call_is_named_in_the_status_line():
    """A hung provider call used to leave the status silent: the oldest call in flight is shown."""
    import threading

    from conftest import routing_examples, routing_respond
    from fakes import fake_lm

    from reflex_dspy.adapters import program_from_prompt
    from reflex_dspy.candidate import Candidate
    from reflex_dspy.evaluation import Evaluator
    from reflex_dspy.metrics import resolve_metric
    from reflex_dspy.progress import status_text

    release = threading.Event()

    def stalled(system, messages):
        release.wait(10)
        return routing_respond(system, messages)

    program = program_from_prompt("Say which team should handle the message.")
    ev = Evaluator(program, resolve_metric("exact"), task_lm=fake_lm(stalled, name="fake/stall"), max_workers=1)
    worker = threading.Thread(target=ev.evaluate, args=(Candidate.from_program(program), routing_examples(1)))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while ev.waiting is None and time.monotonic() < deadline:
            time.sleep(0.05)
        since, who = ev.waiting
        assert who == "task model"
        waited = round(time.monotonic() - since + 30)
        line = status_text({"waiting_seconds": waited, "waiting_on": who})
        assert line == f"task model call waiting {waited}s"
    finally:
        release.set()
        worker.join()
    assert ev.waiting is None


def test_one_redaction_covers_configured_keys_key_like_tokens_and_url_credentials(monkeypatch):
    from reflex_dspy.retries import short_error
    from reflex_dspy.tracking.redact import redact_text, register_secret

    register_secret("configured-key-0001")
    monkeypatch.setenv("GROQ_API_KEY", "ambient-env-key-0002")
    text = ("key configured-key-0001 / ambient-env-key-0002 / sk-proj-abcdef123456 / Bearer abc.def-ghij "
            "at https://user:pw@host/v1; desk-top and risk-free stay")
    clean = redact_text(text)
    for secret in ("configured-key-0001", "ambient-env-key-0002", "sk-proj-abcdef123456", "abc.def-ghij", "user:pw"):
        assert secret not in clean
    assert "desk-top and risk-free stay" in clean and "https://***@host/v1" in clean
    assert "configured-key-0001" not in short_error(RuntimeError(text))


def test_a_judge_metric_s_transient_errors_are_retried_and_counted():
    """Models carry no DSPy retries now, so an LLM judge's 429 must be retried by the evaluator."""
    from conftest import routing_examples, routing_respond
    from dspy.lm15 import RateLimitError
    from fakes import fake_lm

    from reflex_dspy.adapters import program_from_prompt
    from reflex_dspy.candidate import Candidate
    from reflex_dspy.evaluation import Evaluator

    calls = []

    def judge(example, prediction, trace=None):
        calls.append(1)
        if len(calls) <= 2:
            raise RateLimitError("429 judge busy")
        return 1.0

    program = program_from_prompt("Say which team should handle the message.")
    fast = RetryPolicy(max_attempts=5, base_delay=0.001, max_delay=0.002)
    ev = Evaluator(program, judge, task_lm=fake_lm(routing_respond, name="fake/judged"), max_workers=1, retry=fast)
    result = ev.evaluate(Candidate.from_program(program), routing_examples(1))
    assert result.n_failed == 0 and result.mean == 1.0
    assert (ev.usage.retries, ev.usage.rate_limits) == (2, 2)


def test_a_provider_that_goes_down_mid_run_stops_it_and_a_resume_finishes_it(tmp_path, monkeypatch):
    """Before: with the provider gone, the search went on for iteration after iteration whose every
    example failed ("train n/a · 11 failed"), deciding auto's axes on nothing, until the final test
    evaluation failed too. Now the run stops once OUTAGE_STREAK examples in a row fail after retries,
    its record intact; a resume when the provider is back finishes it without paying twice."""
    from conftest import LABELS, ScriptedReasoner, routing_examples, routing_respond
    from dspy.lm15 import ServerError
    from fakes import fake_lm

    import reflex_dspy.evaluation
    from reflex_dspy import Reflex
    from reflex_dspy.adapters import program_from_prompt
    from reflex_dspy.errors import ProviderUnavailable
    from reflex_dspy.evaluation import OUTAGE_STREAK

    monkeypatch.setattr(reflex_dspy.evaluation, "RetryPolicy",  # the run's policy, without its waits
                        lambda: RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002))

    down_after = {"n": 20}  # the baseline, the start on val and the current prompt on the batch, then down
    task = fake_lm(routing_respond, name="fake/flaky",
                   error=lambda n: ServerError("503 upstream down") if n > down_after["n"] else None)
    reasoner = fake_lm(ScriptedReasoner([f"Answer with one word: {', '.join(LABELS)}."]), name="fake/r")

    def optimizer() -> Reflex:
        return Reflex("exact", strategy="iterative", task_lm=task, reasoning_lm=reasoner, run_dir=tmp_path,
                      max_workers=1, progress=False, max_iterations=3, early_stopping_patience=0,
                      score_threshold=1.0)

    with pytest.raises(ProviderUnavailable, match=f"{OUTAGE_STREAK} examples in a row failed after retries"):
        optimizer().compile(program_from_prompt("Route it."), trainset=routing_examples(6))
    calls = task.fake_engine.calls
    assert calls == down_after["n"] + OUTAGE_STREAK * 2  # 8 examples, each asked twice, then nothing more
    run = RunStore(tmp_path).list_runs()[-1]
    assert run.status == "failed"
    down_after["n"] = 10**9  # the provider is back
    result = optimizer().compile(program_from_prompt("Route it."), trainset=routing_examples(6),
                                 resume=run.run_id).result
    assert result.final.mean is not None and RunStore(tmp_path).get_run(run.run_id).status == "completed"
