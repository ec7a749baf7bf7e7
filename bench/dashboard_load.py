"""Dashboard under load (issue 17, item 15): latency of 2,000 requests at 50 concurrent, and how
long a real request waits while 120 half-sent connections are open.

    python bench/dashboard_load.py
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from dashboard_kit import compile_run, dashboard  # noqa: E402


def get(port: int) -> tuple[int, float]:
    """(status, seconds) of one GET /api/runs on a new connection."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", "/api/runs", headers={"Host": f"127.0.0.1:{port}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.monotonic() - start


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="reflex-dash-load-"))
    compile_run(root, max_iterations=1)
    with dashboard(root) as server:
        port = server.server_address[1]
        start = time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: get(port), range(2000)))
        latencies = sorted(seconds for _, seconds in answers)
        ok = sum(status == 200 for status, _ in answers)
        print(f"2000 GET /api/runs, 50 concurrent: {time.monotonic() - start:.1f} s, {ok} answered 200, "
              f"p50 {latencies[1000] * 1000:.0f} ms, p99 {latencies[1980] * 1000:.0f} ms, "
              f"max {latencies[-1] * 1000:.0f} ms")
        stalled = []
        for _ in range(120):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            stalled.append(sock)
        status, seconds = get(port)
        print(f"with 120 half-sent connections open: a GET answered {status} in {seconds:.2f} s")
        stalled[-1].settimeout(120)
        start = time.monotonic()
        stalled[-1].recv(1)
        print(f"the last half-sent connection was closed by the server {time.monotonic() - start:.1f} s later")
        for sock in stalled:
            sock.close()


if __name__ == "__main__":
    main()
