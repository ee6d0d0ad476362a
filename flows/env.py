"""Environment every openwit process starts with: no telemetry calls (this product runs offline
and on private clusters), no update checks. The CLI applies it; the stack passes it to its services."""

from __future__ import annotations

import os

QUIET_ENV = {
    "DO_NOT_TRACK": "true",  # the cross-tool convention (MLflow honours it)
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # Prefect's server heartbeat (and its SQLite write races)
    "RAY_USAGE_STATS_ENABLED": "0",
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations (pulled in by img2dataset) phones home on import
}


def apply_quiet_env() -> None:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
