"""The dashboard under hostile load (issue 17, items 14-16): one log and one run id per branch job
and a cap on running branches, a bounded server (backlog, socket timeout, worker pool), 400 for
deeply nested JSON, and run ids of ASCII digits only."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
from dashboard_kit import compile_run, dashboard, request

from reflex_dspy.dashboard.branching import MAX_RUNNING
from reflex_dspy.dashboard.server import DashboardServer, Handler

GOOD = {"iteration": 1, "strategy": "iterative", "max_iterations": 2}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash-hard")
    compile_run(root, max_iterations=1)
    return root


@pytest.fixture
def server(root):
    with dashboard(root) as srv:
        yield srv


def origin(server) -> dict[str, str]:
    return {"Origin": f"http://127.0.0.1:{server.server_address[1]}"}


def test_a_deeply_nested_json_body_is_a_400_not_a_500(server):
    status, _, text = request(server, "POST", "/api/runs/001/branch", body=b"[" * 2000, headers=origin(server))
    assert status == 400 and "not valid JSON" in json.loads(text)["error"]


@pytest.mark.parametrize("path", ["/api/runs/%EF%BC%92", "/api/runs/2%0a", "/api/runs/1%0A",
                                  "/api/runs/%EF%BC%91/iterations/1", "/api/runs/1/iterations/1%0a",
                                  "/api/runs/%D9%A1/live"])
def test_run_ids_and_iterations_are_ascii_digits_only(server, path):
    status, _, text = request(server, "GET", path)
    assert status == 400, (path, status, text)


def test_identical_branch_requests_get_their_own_log_and_run_id_and_a_cap(server, root, monkeypatch):
    """Four identical requests in one second: four logs, four run ids; the fifth waits its turn (429)."""
    started = []

    class Branch:  # a branch process that has started and printed its run id, still running
        def __init__(self, argv, stdout, **kwargs):
            self.pid = 5000 + len(started)
            started.append(argv)
            stdout.write(f"Run {100 + len(started):03d}: {root}/runs/...\n".encode())
            stdout.flush()

        def poll(self):
            return None

    monkeypatch.setattr(subprocess, "Popen", Branch)
    try:
        answers = [request(server, "POST", "/api/runs/1/branch", body=GOOD, headers=origin(server))
                   for _ in range(MAX_RUNNING + 1)]
        assert [a[0] for a in answers] == [202] * MAX_RUNNING + [429], answers
        assert "already running" in json.loads(answers[-1][2])["error"]
        jobs = json.loads(request(server, "GET", "/api/jobs")[2])["jobs"]
        assert len(jobs) == MAX_RUNNING == len(started)
        assert len({j["log"] for j in jobs}) == MAX_RUNNING
        assert sorted(j["run_id"] for j in jobs) == [f"{100 + i:03d}" for i in range(1, MAX_RUNNING + 1)]
    finally:
        server.jobs.jobs.clear()
        server.jobs._procs.clear()


def test_the_server_has_a_backlog_a_pool_and_a_socket_timeout():
    assert DashboardServer.request_queue_size >= 128 and DashboardServer.WORKERS <= 64
    assert Handler.timeout is not None and Handler.timeout <= 10


def test_half_sent_requests_time_out_and_never_starve_the_others(server):
    """More silent connections than workers: each is dropped after the timeout, and a real request
    is still answered (it waits at most one timeout for a worker)."""
    port = server.server_address[1]
    stalled = []
    for _ in range(DashboardServer.WORKERS + 8):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        stalled.append(sock)
    try:
        start = time.monotonic()
        status, _, _ = request(server, "GET", "/api/runs")
        assert status == 200 and time.monotonic() - start < 3 * Handler.timeout
        assert stalled[0].recv(1) == b""  # the server closed the silent connection
    finally:
        for sock in stalled:
            sock.close()
