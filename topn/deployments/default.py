"""What the deployment topn/default is, wherever it is registered from: `python -m topn.deployments.serve`,
`topn deploy --work-pool POOL` (an installed topn on a work pool's workers), or prefect.yaml."""

from __future__ import annotations

import os
from typing import Any

NAME = "default"
CRON = os.environ.get("TOPN_SCHEDULE", "0 6 * * *")
PREFIX = "incoming/"
TAGS = ["topn"]
DESCRIPTION = "Top N words of the blobs under incoming/ in the input container, daily."


def parameters(batch_credentials: str | None = None, storage_credentials: str | None = None) -> dict[str, Any]:
    """The runs' parameters. Credentials: blocks named here, or by TOPN_BATCH_CREDENTIALS_BLOCK and
    TOPN_STORAGE_CREDENTIALS_BLOCK; else the TOPN_* settings of the process that runs the flow."""
    blocks = {
        "batch_credentials": batch_credentials or os.environ.get("TOPN_BATCH_CREDENTIALS_BLOCK"),
        "storage_credentials": storage_credentials or os.environ.get("TOPN_STORAGE_CREDENTIALS_BLOCK"),
    }
    # Autoscale: the pool has nodes while a run needs them and none the rest of the day.
    return {"blob_prefix": PREFIX, "top": 10, "pool_mode": "autoscale", **{k: v for k, v in blocks.items() if v}}
