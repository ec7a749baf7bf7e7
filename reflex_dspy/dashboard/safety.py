"""What the dashboard may read and send: runs kept inside the run directory, no secrets, no foreign callers.

The dashboard serves JSON views built from the run layout, never raw files, so the only
request-controlled inputs that touch the disk are run ids and iteration numbers. Both are
validated by shape here, and a run is served only when its directory and every file the views
read resolve inside `<run dir>/runs` (a symlink planted there cannot leak a file from elsewhere).
Every response body goes through `scrub`, which drops secret-looking keys and strips
credentials from URIs even if a foreign writer put them in a run's files.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from reflex_dspy.tracking.redact import redact_text, redact_uri
from reflex_dspy.tracking.store import (
    BASELINE,
    BEST_PROMPT,
    CHECKPOINT,
    CONFIG,
    ITERATIONS,
    PID,
    RESULT,
    RUN_ID,
    Run,
)

# ASCII digits, whole string: `\d` also matches a full-width "２" and `$` matches before a
# trailing newline, so `/api/runs/%EF%BC%92` and `/api/runs/2%0a` used to be served as run 002.
ITERATION = re.compile(r"[0-9]{1,6}")
_RUN_NUMBER = re.compile(r"[0-9]{1,9}")
_SECRET_KEY = re.compile(r"(?i)(api_?key|secret|password|passwd|credential|authorization|bearer|access_?token)")
_URI = re.compile(r"^[a-z][a-z0-9+.\-]*://\S+$", re.I)
_READ = (CONFIG, BASELINE, CHECKPOINT, RESULT, PID, BEST_PROMPT)


def valid_run_id(text: str) -> bool:
    return bool(_RUN_NUMBER.fullmatch(text)) and bool(RUN_ID.match(text))


def valid_iteration(text: str) -> bool:
    return bool(ITERATION.fullmatch(text))


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def contained(run: Run, runs_dir: Path) -> bool:
    """True when the run directory and every file the dashboard reads stay inside `runs_dir`."""
    root = runs_dir.resolve()
    if run.path.is_symlink() or not _inside(run.path, root):
        return False
    home = run.path.resolve()
    paths = [run.file(name) for name in _READ]
    folder = run.file(ITERATIONS)
    if folder.exists():
        paths.append(folder)
        paths.extend(folder.iterdir())
    return all(not p.exists() and not p.is_symlink() or _inside(p, home) for p in paths)


def scrub(value: Any) -> Any:
    """A JSON-able copy of `value` with secret-looking keys dropped and URI credentials removed."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not (isinstance(k, str) and _SECRET_KEY.search(k))}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return redact_uri(value) if _URI.match(value) else redact_text(value)
    return value


def allowed_hosts(host: str) -> set[str]:
    """Host names a request may carry for a server bound to `host` (DNS-rebinding defence)."""
    names = {"localhost", "127.0.0.1", "::1", host.lower()}
    if host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names


def host_ok(header: str | None, bound: str, names: set[str]) -> bool:
    """The Host header names this server: a loopback name, the bound host, or (when bound to
    every interface) any IP literal or this machine's name. A rebinding attacker's domain fails."""
    if not header:
        return False
    try:
        hostname = urlsplit(f"//{header}").hostname or ""
    except ValueError:
        return False
    hostname = hostname.lower()
    if hostname in names:
        return True
    if bound in ("0.0.0.0", "::", ""):
        try:
            ipaddress.ip_address(hostname)
            return True
        except ValueError:
            return False
    return False


def same_origin(origin: str | None, host_header: str | None, fetch_site: str | None) -> bool:
    """A state-changing request comes from this page: Origin (when sent) is http://<Host>, and the
    browser's Sec-Fetch-Site (when sent) is same-origin. Non-browser clients send neither."""
    if fetch_site and fetch_site not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    return origin.rstrip("/").lower() == f"http://{(host_header or '').lower()}"
