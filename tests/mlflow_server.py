"""A real `mlflow server` on a loopback port, one per test session (it takes seconds to start).

Started the way a team runs theirs: a SQLite backend, `--serve-artifacts` with its own artifact
root, so clients reach artifacts only through the server's proxy (`mlflow-artifacts:/...`).
Use the `mlflow_server` fixture (import it into a test module); it yields the server's URL and
the directories it writes to, and stops the server at the end of the session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest

STARTUP_SECONDS = 90.0  # generous for a loaded 2-core CI machine; typical start is 5-15 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    """Start `mlflow server` under `root`; returns (process, base URL) once /health answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination", str(root / "server-artifacts"), "--serve-artifacts", "--workers", "1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                            start_new_session=True)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _healthy(url):
            return proc, url
        time.sleep(0.25)
    stop_server(proc)
    tail = (root / "server.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"mlflow server did not start within {STARTUP_SECONDS:.0f} s:\n{tail}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server and its workers (it runs in its own process group)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)  # the group of the server we started: its workers too
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> types.SimpleNamespace:
    pytest.importorskip("mlflow.server")
    root = tmp_path_factory.mktemp("mlflow-server")
    proc, url = start_server(root)
    try:
        yield types.SimpleNamespace(url=url, root=root, artifacts=root / "server-artifacts", proc=proc)
    finally:
        stop_server(proc)
