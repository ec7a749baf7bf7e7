"""`reflex-dspy dashboard`: serve the dashboard over RUN_DIR until Ctrl-C.

The server module is imported here, not at parser build time, so `reflex-dspy --help` stays
instant. Binding to anything but loopback is the user's explicit choice (`--host`), and the
page then says nothing more than it does locally: there is no login, so the CLI warns.
"""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser

from reflex_dspy.errors import UsageError

MLFLOW_UI_ENV = "REFLEX_MLFLOW_UI_URL"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from reflex_dspy.dashboard.server import DashboardServer, serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected a port number from 0 to 65535")
    ui_url = args.mlflow_ui_url or os.environ.get(MLFLOW_UI_ENV) or None
    try:
        server = DashboardServer(args.run_dir, host=args.host, port=args.port, mlflow_ui_url=ui_url)
    except ValueError as exc:  # a malformed --mlflow-ui-url
        raise UsageError(f"--mlflow-ui-url: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    runs_dir = server.data.store.runs_dir.resolve()
    print(f"reflex-dspy dashboard: {server.url}  (runs in {runs_dir}; Ctrl-C to stop)", flush=True)
    if args.host not in LOOPBACK:
        print(f"reflex-dspy: warning: listening on {args.host}: anyone who can reach it can read these "
              "runs and start branches", file=sys.stderr)
    if not args.no_open:
        webbrowser.open(server.url)
    serve(server)
    return 0
