"""aevyra-reflex 0.2.0's own side of the shared run layout (issue 19), for the tests that check it
reads and serves our runs: its dashboard server over a run directory, and a JSON GET against it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.request import urlopen


@contextlib.contextmanager
def their_dashboard_over(root: Path) -> Iterator[str]:
    """aevyra-reflex's own dashboard server, reading `root` with its own `RunStore`, on a loopback
    port; yields its base URL and stops it on exit."""
    from aevyra_reflex.dashboard.server import _DashboardHandler
    from aevyra_reflex.run_store import RunStore

    handler = type("_Handler", (_DashboardHandler,), {"store": RunStore(root)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def get_their_json(url: str) -> Any:
    """GET `url` from their dashboard; the reply must be 200 and JSON."""
    with urlopen(url, timeout=30) as response:  # noqa: S310 (a loopback test server)
        assert response.status == 200
        return json.loads(response.read())
