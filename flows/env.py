"""Environment every openwit process starts with: no telemetry calls (this product runs offline
and on private clusters), no update checks, and time for a throwaway Prefect server to start on a
busy machine. The CLI applies it; the stack passes it to its services."""

from __future__ import annotations

import os

QUIET_ENV = {
    "DO_NOT_TRACK": "true",  # the cross-tool convention (MLflow honours it)
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # Prefect's server heartbeat (and its SQLite write races)
    "RAY_USAGE_STATS_ENABLED": "0",
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations (pulled in by img2dataset) phones home on import
    # `openwit build` without a server starts Prefect's ephemeral one, which migrates a fresh SQLite
    # database first: on two busy cores that took over Prefect's default 20 s ("Timed out while
    # attempting to connect to ephemeral Prefect API server", seen with three test processes at once)
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_quiet_env() -> None:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
