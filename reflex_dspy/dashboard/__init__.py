"""`reflex-dspy dashboard`: a local web page over the run layout.

`server.DashboardServer` serves the page (`static/`, plain ES modules: no build step) and a
JSON API built from `RunStore` (`api.py`); branches start as background CLI processes
(`branching.py`); `safety.py` holds what keeps it local and read-only over the run directory.
"""

from reflex_dspy.dashboard.server import DashboardServer, serve

__all__ = ["DashboardServer", "serve"]
