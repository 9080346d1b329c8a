"""Serves the deployment `topn/default`: one process that registers it and runs its flow runs.

    uv run python -m deployments.serve          # then: prefect deployment run topn/default

Scheduled runs count what is already in the input container (parameter blob_prefix, default: all of it).
"""

from __future__ import annotations

import os

import flows  # noqa: F401 - telemetry off before Prefect loads
from flows.topn import topn

CRON = os.environ.get("TOPN_SCHEDULE", "0 6 * * *")


def main() -> None:
    topn.serve(
        name="default",
        cron=CRON,
        parameters={"blob_prefix": "", "top": 10},
        tags=["topn"],
        description="Top N words of the blobs in the input container, daily.",
    )


if __name__ == "__main__":
    main()
