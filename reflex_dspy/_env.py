"""Process defaults that must be set before litellm or mlflow are imported.

Both libraries try to reach the internet at import time (litellm fetches a model
cost map, mlflow sends telemetry); on a machine without network that either hangs
or fails. We only fill in values the user has not set.
"""

import os

_DEFAULTS = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DSPY_DISABLE_TELEMETRY": "true",
}


def apply_env_defaults() -> None:
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
