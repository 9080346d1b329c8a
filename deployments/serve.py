"""Serves the deployment `topn/default`: one process that registers it and runs its flow runs.

    uv run python -m deployments.serve          # then: prefect deployment run topn/default

Scheduled runs count the blobs under `incoming/` in the input container (put files there with
`topn upload PATH...`); a day with nothing there is a successful run that says so. Credentials: the TOPN_*
settings of this process, or blocks named by the environment variables TOPN_BATCH_CREDENTIALS_BLOCK and
TOPN_STORAGE_CREDENTIALS_BLOCK (deployment parameters `batch_credentials`, `storage_credentials`).
"""

from __future__ import annotations

import os

import flows  # noqa: F401 - telemetry off before Prefect loads
from flows.topn import topn

CRON = os.environ.get("TOPN_SCHEDULE", "0 6 * * *")
PREFIX = "incoming/"


def _blocks() -> dict[str, str]:
    names = {
        "batch_credentials": os.environ.get("TOPN_BATCH_CREDENTIALS_BLOCK"),
        "storage_credentials": os.environ.get("TOPN_STORAGE_CREDENTIALS_BLOCK"),
    }
    return {key: value for key, value in names.items() if value}


def main() -> None:
    topn.serve(
        name="default",
        cron=CRON,
        # Autoscale: the pool has nodes while a run needs them and none the rest of the day.
        parameters={"blob_prefix": PREFIX, "top": 10, "pool_mode": "autoscale", **_blocks()},
        tags=["topn"],
        description="Top N words of the blobs under incoming/ in the input container, daily.",
    )


if __name__ == "__main__":
    main()
