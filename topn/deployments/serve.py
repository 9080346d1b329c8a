"""Serves the deployment `topn/default`: one process that registers it and runs its flow runs.

    python -m topn.deployments.serve          # then: prefect deployment run topn/default

Scheduled runs count the blobs under `incoming/` in the input container (put files there with
`topn upload PATH...`); a day with nothing there is a successful run that says so. Credentials: the TOPN_*
settings of this process, or blocks named by the environment variables TOPN_BATCH_CREDENTIALS_BLOCK and
TOPN_STORAGE_CREDENTIALS_BLOCK (deployment parameters `batch_credentials`, `storage_credentials`).
"""

from __future__ import annotations

from topn.deployments import default
from topn.flows.topn import topn


def main() -> None:
    topn.serve(
        name=default.NAME,
        cron=default.CRON,
        parameters=default.parameters(),
        tags=default.TAGS,
        description=default.DESCRIPTION,
    )


if __name__ == "__main__":
    main()
