"""The dashboard's HTTP server: the page's static files and its JSON API, stdlib only.

    GET  /                                   the page (static/index.html)
    GET  /static/<file>                      its scripts and style (a fixed list, nothing else)
    GET  /api/runs                           runs list (api.DashboardData.list_view)
    GET  /api/runs/<id>                      one run: tiles, result, flow graph
    GET  /api/runs/<id>/iterations/<n>       one iteration: prompts, diff, reasoning
    GET  /api/runs/<id>/live                 live page: heartbeat, staleness, trials feed, candidates
    GET  /api/runs/<id>/trials/<n>           one trial with its execution trace (pipeline mode)
    GET  /api/jobs                           branch processes started here
    POST /api/runs/<id>/branch               start a branch (JSON body, same origin only)

No file is served by a path taken from the request: static files come from a fixed table and
run data from `RunStore` views of validated ids. Every request must carry a Host header naming
this server (DNS rebinding), POSTs must be same-origin JSON (CSRF), responses carry no CORS
header at all, and bodies are scrubbed of secrets (`safety.scrub`).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from reflex_dspy.dashboard.api import DashboardData, NotFound
from reflex_dspy.dashboard.branching import BadRequest, Busy, Jobs, strategies
from reflex_dspy.dashboard.safety import (
    allowed_hosts,
    host_ok,
    same_origin,
    scrub,
    valid_iteration,
    valid_run_id,
)
from reflex_dspy.tracking.redact import redact_text

logger = logging.getLogger(__name__)
MAX_BODY = 4096
STATIC = {  # request name → content type; the files ship in reflex_dspy/dashboard/static
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "util.js": "text/javascript; charset=utf-8",
    "runs.js": "text/javascript; charset=utf-8",
    "run.js": "text/javascript; charset=utf-8",
    "iteration.js": "text/javascript; charset=utf-8",
    "branch.js": "text/javascript; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}
_RUN = re.compile(r"^/api/runs/([^/]+)$")
_ITERATION = re.compile(r"^/api/runs/([^/]+)/iterations/([^/]+)$")
_BRANCH = re.compile(r"^/api/runs/([^/]+)/branch$")
_LIVE = re.compile(r"^/api/runs/([^/]+)/live$")  # the live page (dashboard/live.py)
_TRIAL = re.compile(r"^/api/runs/([^/]+)/trials/([^/]+)$")


class DashboardServer(ThreadingHTTPServer):
    """Serves one run directory; `data`, `jobs` and the allowed Host names hang off the server.

    Load limits: a listen backlog of `request_queue_size` (the stdlib's 5 dropped connections
    under 50 concurrent clients), a bounded pool of `WORKERS` threads instead of one thread per
    connection, and a per-connection socket timeout (`Handler.timeout`), so half-sent requests
    hold a worker for seconds, not for as long as the client likes.
    """

    daemon_threads = True
    request_queue_size = 128
    WORKERS = 64

    def __init__(self, run_dir: str, host: str = "127.0.0.1", port: int = 8128,
                 mlflow_ui_url: str | None = None) -> None:
        link = None
        if mlflow_ui_url:
            from reflex_dspy.dashboard.mlflow_links import MlflowLinks

            link = MlflowLinks(mlflow_ui_url)
        self.data = DashboardData(run_dir, mlflow_link=link)
        self.jobs = Jobs(self.data)
        self.bound_host = host
        self.hosts = allowed_hosts(host)
        if ":" in host:
            self.address_family = socket.AF_INET6
        self._pool = ThreadPoolExecutor(self.WORKERS, thread_name_prefix="reflex-dashboard")
        super().__init__((host, port), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to the bounded pool (ThreadingMixIn would start a thread per connection)."""
        self._pool.submit(self.process_request_thread, request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer (or went silent past the timeout) is routine, not a traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("client %s went away", client_address)
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host = self.server_address[0]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.server_address[1]}/"


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "reflex-dspy-dashboard"
    sys_version = ""
    timeout = 3  # seconds a connection may stay silent (socket timeout, set by StreamRequestHandler)

    # -- plumbing ------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        logger.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(scrub(payload), ensure_ascii=False, default=str).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": redact_text(message)})

    def _guarded(self, handler) -> None:
        """Host check, then the handler; errors become one-line JSON answers, never tracebacks."""
        if not host_ok(self.headers.get("Host"), self.server.bound_host, self.server.hosts):
            self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        path = urlsplit(self.path).path
        if "\\" in path or "\x00" in path or ".." in unquote(path).split("/"):
            self._error(HTTPStatus.BAD_REQUEST, "invalid path")
            return
        try:
            handler(unquote(path))
        except NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except BadRequest as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except Busy as exc:
            self._error(HTTPStatus.TOO_MANY_REQUESTS, str(exc))
        except ConnectionError:  # the client hung up before its answer was written: nothing to tell it
            logger.debug("client %s went away", self.client_address)
        except Exception as exc:  # a half-written run must not kill the server
            logger.exception("dashboard request failed")
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])

    # -- methods -------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _refuse(self) -> None:
        self._guarded(lambda path: self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} not allowed"))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815 (no preflight: no CORS at all)

    # -- routes --------------------------------------------------------------------------------
    def _get(self, path: str) -> None:
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        data = self.server.data
        if path == "/api/runs":
            self.server.jobs.poll()  # reap finished branches first, so their status is current
            return self._json(HTTPStatus.OK, data.list_view())
        if path == "/api/jobs":
            return self._json(HTTPStatus.OK, {"jobs": self.server.jobs.poll()})
        if m := _LIVE.match(path):
            if not valid_run_id(m.group(1)):
                raise BadRequest("invalid run id")
            return self._json(HTTPStatus.OK, data.live_view(m.group(1)))
        if m := _TRIAL.match(path):
            if not valid_run_id(m.group(1)) or not valid_iteration(m.group(2)):
                raise BadRequest("invalid run id or trial number")
            return self._json(HTTPStatus.OK, data.trial_view(m.group(1), int(m.group(2))))
        if m := _ITERATION.match(path):
            run_id, number = m.groups()
            if not valid_run_id(run_id) or not valid_iteration(number):
                raise BadRequest("invalid run id or iteration")
            return self._json(HTTPStatus.OK, data.iteration_view(run_id, int(number)))
        if m := _RUN.match(path):
            if not valid_run_id(m.group(1)):
                raise BadRequest(f"invalid run id {m.group(1)[:20]!r}: expected a number such as 003")
            self.server.jobs.poll()
            view = data.run_view(m.group(1))
            view["strategies"] = strategies()
            return self._json(HTTPStatus.OK, view)
        raise NotFound("no such page")

    def _static(self, name: str) -> None:
        content_type = STATIC.get(name)
        if content_type is None:
            raise NotFound("no such file")
        body = resources.files("reflex_dspy.dashboard").joinpath("static", name).read_bytes()
        self._send(HTTPStatus.OK, body, content_type)

    def _post(self, path: str) -> None:
        m = _BRANCH.match(path)
        if not m:
            raise NotFound("no such endpoint")
        headers = self.headers
        if not same_origin(headers.get("Origin"), headers.get("Host"), headers.get("Sec-Fetch-Site")):
            self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        if (headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            raise BadRequest("expected Content-Type: application/json")
        length = headers.get("Content-Length") or ""
        length = int(length) if length.isdigit() else 0
        if not 0 < length <= MAX_BODY:
            raise BadRequest(f"expected a JSON body of at most {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, RecursionError):  # 2,000 nested `[` overflow the parser's recursion
            raise BadRequest("the body is not valid JSON (or nested too deeply)") from None
        if not valid_run_id(m.group(1)):
            raise BadRequest("invalid run id")
        job = self.server.jobs.start(m.group(1), body)
        self._json(HTTPStatus.ACCEPTED, job)


def serve(server: DashboardServer) -> None:
    """Serve until Ctrl-C, then close the socket (branch processes keep running)."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nreflex-dspy: dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
