"""Helpers for the dashboard tests: engine-written runs, a served dashboard, a raw HTTP client.

Runs are recorded by the real engine (`Reflex.compile` in this process, or the real CLI in a
subprocess against `fake_openai_server`); the fakes answer exactly like the fake server, so
an in-process run and a CLI run of the same task look alike on the page.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import routing_examples
from fake_openai_server import reasoning_answer, task_answer
from fakes import fake_lm

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.dashboard.server import DashboardServer

INITIAL = "Classify the customer message."
REPO = Path(__file__).resolve().parents[1]


def task_respond(system: str, messages: list[dict]) -> str:
    return task_answer(system, messages[-1]["content"] if messages else "")


def reasoner_respond(system: str, messages: list[dict]) -> str:
    return reasoning_answer(system, messages[-1]["content"] if messages else "")


def interrupting(system: str, messages: list[dict]) -> str:
    """A task model that is Ctrl-C'd while iteration 2's proposal is evaluated (use max_workers=1)."""
    if "- rule 2" in system.lower():
        raise KeyboardInterrupt
    return task_respond(system, messages)


def compile_run(root: Path, *, strategy: str = "iterative", program=None, task=None, dataset: bool = True,
                branch_from: tuple[str, int] | None = None, metadata: dict | None = None, **config: Any):
    """One engine-recorded run under `root` with the fake task and reasoning models."""
    params = {"max_iterations": 3, "early_stopping_patience": 0, "score_threshold": 1.0, "max_workers": 2}
    params.update(config)
    meta = {"dataset_path": str(root / "data.jsonl")} if dataset else {}
    meta.update(metadata or {})
    optimizer = Reflex(
        "exact", strategy=strategy, task_lm=task or fake_lm(task_respond, name="fake/dash-task"),
        reasoning_lm=fake_lm(reasoner_respond, name="fake/dash-reasoner"), run_dir=root,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", metadata=meta, **params,
    )
    extra = {"branch_from": branch_from} if branch_from else {}
    return optimizer.compile(program or program_from_prompt(INITIAL), trainset=routing_examples(), **extra)


@contextlib.contextmanager
def dashboard(root: Path, **kwargs: Any) -> Iterator[DashboardServer]:
    """A dashboard on a free loopback port, served from a thread."""
    server = DashboardServer(str(root), host="127.0.0.1", port=0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def request(server: DashboardServer, method: str, path: str, *, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, text) of one raw request: the path is sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    sent = {"Host": f"127.0.0.1:{server.server_address[1]}", **(headers or {})}
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=sent)
    response = conn.getresponse()
    text = response.read().decode("utf-8", errors="replace")
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, text


def get_json(server: DashboardServer, path: str) -> Any:
    status, _, text = request(server, "GET", path)
    assert status == 200, (path, status, text)
    return json.loads(text)


# -- the real CLI against the fake OpenAI server --------------------------------------------------
def write_task(folder: Path, n_per_label: int = 4) -> tuple[Path, Path]:
    """data.jsonl and prompt.md of the routing task, for CLI runs."""
    folder.mkdir(parents=True, exist_ok=True)
    data, prompt = folder / "data.jsonl", folder / "prompt.md"
    data.write_text("".join(json.dumps({"input": e.input, "output": e.output}) + "\n"
                            for e in routing_examples(n_per_label)))
    prompt.write_text(INITIAL + "\n")
    return data, prompt


def cli_env(base_url: str, cache: Path) -> dict[str, str]:
    """The environment of a CLI process that talks to the fake server (and never to a real one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MLFLOW_TRACKING"))}
    env.update(OPENAI_API_BASE=base_url, OPENAI_API_KEY="test", DSPY_CACHEDIR=str(cache),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    return env


def cli_optimize(run_dir: Path, data: Path, prompt: Path, env: dict[str, str], *extra: str,
                 wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "reflex_dspy.cli", "optimize", str(data), str(prompt), "-m", "openai/fake-task",
            "--reasoning-model", "openai/fake-reasoner", "--metric", "exact", "--run-dir", str(run_dir), *extra]
    if not wait:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done
