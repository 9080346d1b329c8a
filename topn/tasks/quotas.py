"""The Batch account's quotas, as a run meets them: the active-job quota is waited on, for a bounded time
(jobs end, and a scheduled run should not fail because another run is finishing); the pool quota ends the
run at once. Both name the quota, what holds it (topn's own leftovers first) and what to do.

Batch's data plane does not read quotas out (the account's quotas are Azure Resource Manager's): topn meets
them when it creates a job or pool, or in a pool's resize errors (tasks/pool_health.py)."""

from __future__ import annotations

import time

from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError
from prefect import get_run_logger

from topn.tasks import policy
from topn.tasks.failures import TopnFailed
from topn.tasks.marks import FLOW_RUN_KEY, OWNER_KEY

JOB_QUOTA, POOL_QUOTA = "ActiveJobAndScheduleQuotaReached", "PoolQuotaReached"


class QuotaReached(TopnFailed):
    """A quota of the Batch account stops the run; the message names it and what to do."""


def code_of(error: HttpResponseError) -> str:
    return getattr(getattr(error, "error", None), "code", None) or ""


def create_job(client: BatchClient, options: m.BatchJobCreateOptions) -> None:
    """create_job; while the account's active-job quota is reached, tries again every policy.QUOTA_POLL
    seconds for up to policy.JOB_QUOTA_WAIT, saying once what it waits for."""
    started, said = time.monotonic(), False
    while True:
        try:
            client.create_job(options)
            return
        except HttpResponseError as e:
            if code_of(e) != JOB_QUOTA:
                raise
            timed_out = time.monotonic() - started >= policy.JOB_QUOTA_WAIT
            if timed_out or not said:  # the jobs that hold the quota are listed only to be named
                jobs = _active_jobs(client)
            if timed_out:
                raise QuotaReached(
                    f"the Batch account's active job quota is reached ({len(jobs)} active: {_named(jobs)}), and no "
                    f"job ended within {_duration(policy.JOB_QUOTA_WAIT)}: delete the jobs no longer needed (topn's "
                    "own leftovers are marked created-by: topn, e.g. from runs with --keep-job), or ask Azure "
                    "support for a higher job quota"
                ) from None
            if not said:
                said = True
                get_run_logger().warning(
                    "the Batch account's active job quota is reached (%d active: %s): waiting up to %s for one to end",
                    len(jobs),
                    _named(jobs),
                    _duration(policy.JOB_QUOTA_WAIT),
                )
            time.sleep(policy.QUOTA_POLL)


def pool_quota_reached(client: BatchClient, error: HttpResponseError) -> QuotaReached | None:
    """The error to stop with when create_pool was refused for the account's pool quota, else None."""
    if code_of(error) != POOL_QUOTA:
        return None
    pools = [p.id for p in client.list_pools(select=["id"])]
    shown = ", ".join(pools[:5]) + (f" and {len(pools) - 5} more" if len(pools) > 5 else "")
    return QuotaReached(
        f"the Batch account's pool quota is reached ({len(pools)} pools: {shown}): delete pools you no longer "
        "use, set TOPN_POOL_ID to one of them (topn reuses pools it created), or ask for a higher pool quota"
    )


def _active_jobs(client: BatchClient) -> list[m.BatchJob]:
    return list(client.list_jobs(filter="state eq 'active'", select=["id", "metadata"]))


def _named(jobs: list[m.BatchJob]) -> str:
    """Job ids, topn's own first and marked so."""
    ours = [j.id for j in jobs if any(i.name in (OWNER_KEY, FLOW_RUN_KEY) for i in j.metadata or [])]
    others = [j.id for j in jobs if j.id not in ours]
    parts = [f"topn's: {', '.join(ours[:5])}" + (" ..." if len(ours) > 5 else "")] if ours else []
    parts += [f"others: {', '.join(others[:5])}" + (" ..." if len(others) > 5 else "")] if others else []
    return "; ".join(parts) or "none"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
