"""Shared fixtures: a routing task whose score depends on the instructions the model receives."""

from __future__ import annotations

import json
import os
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="reflex-dspy-test-cache-"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Runs recorded by tests that do not choose a run directory go to one temp store (one SQLite
# MLflow database for the session), never to the repository or a user's tracking server.
os.environ["REFLEX_RUN_DIR"] = tempfile.mkdtemp(prefix="reflex-dspy-test-runs-")
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402
from fakes import KEYWORDS, LABELS, fake_lm, routing_examples, truth  # noqa: E402, F401 (re-exported)

from reflex_dspy.tracking.store import RunStore  # noqa: E402


def routing_respond(system: str, messages: list[dict]) -> str:
    """The fake task model.

    - instructions that say "verbose": always a sentence (wrong under `exact`);
    - instructions listing every label: the bare correct label;
    - otherwise: the bare label only for billing messages, a sentence for the rest.
    """
    text = messages[-1]["content"]
    label = truth(text)
    s = system.lower()
    if "verbose" in s:
        return f"I believe this message concerns {label}, and here is why at length."
    if all(lbl in s for lbl in LABELS):
        return label
    return label if label == "billing" else f"This is about {label}."


class ScriptedReasoner:
    """The fake reasoning model: returns scripted proposals in order, records what it was shown.

    A string becomes the revised instructions of a well-formed reply; "RAW:..." is sent as is.
    """

    def __init__(self, proposals: list[str | dict]):
        self.proposals = list(proposals)
        self.seen: list[str] = []

    def __call__(self, system: str, messages: list[dict]) -> str:
        self.seen.append(system + "\n" + "\n".join(m["content"] for m in messages))
        n = len(self.seen) - 1
        item = self.proposals[min(n, len(self.proposals) - 1)]
        if isinstance(item, dict):
            return json.dumps(item)
        if item.startswith("RAW:"):
            return item.removeprefix("RAW:")
        return json.dumps({
            "failure_patterns": "outputs are sentences, not labels",
            "change_summary": f"proposal {n + 1}",
            "revised_instructions": item,
        })


@pytest.fixture(scope="module")
def fake_openai():
    """The fake OpenAI-compatible server (fake_openai_server.py), one per test module that asks."""
    from fake_openai_server import FakeOpenAI

    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def task_lm():
    return fake_lm(routing_respond)


@pytest.fixture
def examples():
    return routing_examples()


@pytest.fixture
def task(tmp_path) -> types.SimpleNamespace:
    """A routing dataset and prompt file, a run dir and an MLflow URI, all under tmp_path."""
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"input": e.input, "output": e.output}) + "\n" for e in routing_examples(4))
    )
    prompt = tmp_path / "prompt.md"
    prompt.write_text("Say which team should handle the message.\n")
    run_dir = tmp_path / "reflex"
    flags = ["--run-dir", str(run_dir), "--mlflow-tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    return types.SimpleNamespace(
        data=data, prompt=prompt, run_dir=run_dir, store=RunStore(run_dir), flags=flags
    )


def strong_respond(system: str, messages: list[dict]) -> str:
    """A stronger task model: routes every message right whatever the prompt says."""
    return routing_respond(f"Answer with one word: {', '.join(LABELS)}.", messages)


@pytest.fixture
def lms(monkeypatch) -> dict:
    """`reflex_dspy.lm.resolve_lm` → fakes by spec: fake/task (weak), fake/strong, fake/reasoner
    (proposes the labelled prompt); probes pass. For CLI tests of targets and run controls."""
    import reflex_dspy.lm

    labelled = f"Answer with one word: {', '.join(LABELS)}."
    made = {"fake/task": fake_lm(routing_respond, name="fake/task"),
            "fake/strong": fake_lm(strong_respond, name="fake/strong"),
            "fake/reasoner": fake_lm(ScriptedReasoner([labelled]), name="fake/reasoner")}
    monkeypatch.setattr(reflex_dspy.lm, "resolve_lm", lambda spec, **kw: made[spec or "fake/task"])
    monkeypatch.setattr(reflex_dspy.lm, "probe_lm", lambda lm: None)
    return made


def user_mlflow_state(monkeypatch, tmp_path: Path, experiment: str, store: str) -> Iterator[str]:
    """MLflow's in-process state set as a user's script sets it: a SQLite store `tmp_path/store` as the
    tracking URI and `experiment` (artifacts under tmp_path) as the active one. Yields the URI.

    For a fixture (`yield from`): MLflow keeps this state process-wide (module globals and the
    environment variables `mlflow.set_experiment` exports), so it is undone after the test.
    """
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(name, "")  # recorded, so mlflow.set_experiment's export is undone too
        monkeypatch.delenv(name)
    uri = f"sqlite:///{tmp_path / store}"
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns: keep it out of the repository
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment(experiment, artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
