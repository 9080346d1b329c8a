"""Auto pools: the pool a job brings in `poolInfo.autoPoolSpecification`, created with the job and deleted when the
job completes or is deleted (unless `keepAlive`), as the service does.

The auto pool's id is the `autoPoolIdPrefix`, `_` and a GUID (the GUID alone without a prefix); the job's
`executionInfo.poolId` names it, its `poolInfo` stays as given. The pool is an ordinary pool otherwise: listed, got,
resized, its nodes booting and running the start task of its specification.
"""

from __future__ import annotations

import uuid

from batch_emulator.errors import BatchError
from batch_emulator.models import Job
from batch_emulator.service.state import ServiceState

AUTO = "autoPoolSpecification"


class AutoPoolOps(ServiceState):
    """Uses pools.py (create_pool, delete_pool)."""

    def create_auto_pool(self, body: dict) -> str:
        """The id of the pool a job being created uses: its poolId, or its new auto pool's. Call under the lock,
        before the job is created (an auto pool the account's quotas refuse refuses the job)."""
        info = body["poolInfo"]
        auto = info.get(AUTO)
        if auto is None:
            return info["poolId"]
        pool_id = _auto_pool_id(auto.get("autoPoolIdPrefix"))
        self.create_pool({**auto["pool"], "id": pool_id})
        return pool_id

    def end_auto_pool(self, job: Job) -> None:
        """The job completed or is gone: its auto pool is deleted, unless it is kept alive. Call under the lock."""
        auto = job.spec["poolInfo"].get(AUTO)
        if auto is None or auto.get("keepAlive"):
            return
        pool = self.pools.get(job.pool_id.lower())
        if pool is not None and pool.state == "active":
            self.delete_pool(pool.id)

    def auto_pool_change(self, job: Job, info: dict) -> dict:
        """What an update or replace of the job's poolInfo may change: with an autoPoolSpecification, only its
        keepAlive (the job's auto pool stays); the same poolId, nothing. Anything else needs a disabled job."""
        auto, given = job.spec["poolInfo"].get(AUTO), info.get(AUTO)
        if auto is not None and given is not None:
            return {AUTO: {**auto, "keepAlive": bool(given.get("keepAlive"))}}
        if auto is None and info.get("poolId", "").lower() == job.pool_id.lower():
            return job.spec["poolInfo"]
        raise BatchError(409, "JobNotDisabled", "A job's pool can only change while the job is disabled.")


def _auto_pool_id(prefix: str | None) -> str:
    guid = str(uuid.uuid4()).upper()
    return f"{prefix}_{guid}" if prefix else guid
