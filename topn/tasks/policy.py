"""How topn retries, in one place: every layer that talks over a network reads its numbers here.

Each layer retries on purpose, without multiplying the others: the SDK clients retry each request; a Prefect
task is run again only for what the SDKs may not retry themselves (a POST whose answer was lost) or after they
gave up; a Batch task that failed for a reason not its own runs again in place; a task's own non-zero exit is
Batch's to retry. `LAYERS` is the table the docs show (docs/resilience.md), checked against it by a test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

# Nothing heavy at import: the settings read this module, and `topn --help` should not load Prefect or the SDKs.

# ---- HTTP: each SDK request (tasks/clients.py) ----------------------------------------------------------
# The first retry comes at once (within FIRST_RETRY s: most faults on a busy network are one dropped connection
# or one overloaded answer), then after FIRST_BACKOFF s, twice as long each time up to MAX_BACKOFF, all with
# jitter so that many workers do not retry in waves; a Retry-After header (throttling) is obeyed instead, capped
# at RETRY_AFTER_MAX. The worst case without Retry-After is about 30 s of waiting per call. Measured with
# `./dev bench faults`.
HTTP_RETRIES, FIRST_RETRY, FIRST_BACKOFF, MAX_BACKOFF = 6, 0.1, 0.5, 8.0
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}

# ---- Prefect task runs (every task that calls Azure) ------------------------------------------------------
# Every task is written to be run again safely (it looks before it creates), so two retries soon after are
# enough: they multiply the SDK's attempts only in an outage, never in normal faults.
TASK_RETRIES, TASK_RETRY_DELAY, TASK_RETRY_JITTER = 2, 1, 0.5

# ---- Batch tasks (tasks/batch.py, tasks/monitor.py) -------------------------------------------------------
BATCH_TASK_RETRIES = 1  # a task's own non-zero exit: Batch runs it again this many times (TOPN_MAX_TASK_RETRIES)
START_TASK_RETRIES = 2  # a node's start task (installing the application), retried by Batch on that node
# Failures outside the task's own program (storage or network on the node): the task runs again in place,
# up to MAX_RECOVERIES times each (reactivate_task), whatever BATCH_TASK_RETRIES says.
RECOVERABLE = {"BlobDownloadMiscError", "BlobDownloadTimedOut", "ResourceContainerListMiscError", "FileUploadMiscError"}
MAX_RECOVERIES = 3

# ---- The watch of a job (tasks/monitor.py) ----------------------------------------------------------------
POLL_FIRST, POLL_MAX, POLL_BACKOFF = 0.25, 10.0, 1.5  # seconds between polls: from the first, growing to the max
OUTAGE_LIMIT = 600.0  # how long the watch keeps polling through an unreachable Batch service, in seconds

# ---- A pool's bad days (tasks/pool_health.py), Batch's quotas (tasks/batch.py) ----------------------------
POOL_CHECK_EVERY = 5.0  # seconds between two looks at the pool while tasks wait
REMOVE_UNUSABLE_AFTER = 60.0  # a node unusable this long is removed (and, in a fixed pool, replaced)
NO_USABLE_NODE_LIMIT = 300.0  # a pool with no usable node this long ends the run
JOB_QUOTA_WAIT = 600.0  # how long a run waits for the account's active-job quota to free a place
AUTO_POOL_WAIT = 300.0  # how long a per-job run waits for Batch to name its job's own pool
QUOTA_POLL = 10.0  # seconds between two tries meanwhile
THROTTLE_BUDGET = 900.0  # seconds a Batch request keeps retrying 429 answers, each as Retry-After asks
RETRY_AFTER_MAX = 60.0  # the longest Retry-After obeyed as asked (throttling); longer ones are cut to this


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before HTTP retry number `attempt` (1, 2, ...)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_MAX)
    if attempt <= 1:
        return random.uniform(0, FIRST_RETRY)
    return random.uniform(0.5, 1.0) * min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (attempt - 2))


def is_transient(error: BaseException | None) -> bool:
    """True for errors a retry may cure: throttling, 5xx, timeouts and connection failures."""
    from azure.batch.models import CreateTasksError
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(error, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
        return True
    if isinstance(error, CreateTasksError):  # create_tasks gathers what went wrong in its chunks
        refused = [r for r in error.failure_tasks if str(r.status).lower() != "servererror"]
        return bool(error.errors or error.failure_tasks) and not refused and all(map(is_transient, error.errors))
    if isinstance(error, HttpResponseError):
        return error.status_code in TRANSIENT_STATUS
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed task run only when its error is transient."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as e:  # the failure itself, read back from the state
            error = e
    return is_transient(error)


def task_options(*tags: str) -> dict[str, Any]:
    """Options shared by every task that calls Azure. Tags name the service it calls, for Prefect's tag-based
    concurrency limits, e.g. `prefect concurrency-limit create azure-batch 4` (applied where such a limit
    exists: tasks/tags.py)."""
    from prefect.cache_policies import NO_CACHE

    return {
        "persist_result": False,  # what a step returns serves the flow only; the flow's own result is persisted
        "cache_policy": NO_CACHE,  # nothing to reuse across runs; hashing 10,000 inputs' parameters is not free
        "retries": TASK_RETRIES,
        "retry_delay_seconds": TASK_RETRY_DELAY,  # one number: the UI shows a list of delays as "NaNs"
        "retry_jitter_factor": TASK_RETRY_JITTER,
        "retry_condition_fn": retry_transient,
        "tags": list(tags),
    }


@dataclass(frozen=True)
class Layer:
    """One row of the retry table: what a layer retries, and how."""

    layer: str
    retries: str
    how: str


LAYERS = (
    Layer(
        "Azure SDK calls of the flow",
        "throttling (429, 503), 5xx, 408, dropped connections, timeouts",
        f"{HTTP_RETRIES} times: the first at once, then from {FIRST_BACKOFF} s doubling to {MAX_BACKOFF:g} s, "
        f"with jitter; `Retry-After` obeyed (up to {RETRY_AFTER_MAX:g} s). A throttled POST is retried too (it "
        f"was not applied), and Batch's 429 answers use up no retry for {THROTTLE_BUDGET / 60:g} min: a storm is "
        "waited out",
    ),
    Layer(
        "Prefect task retries",
        "only transient errors, never a bad key or parameter",
        f"{TASK_RETRIES} more runs of the task (each about {TASK_RETRY_DELAY} s later, with jitter), for what the "
        "SDKs may not retry (a POST whose answer was lost). Every task can run again safely: it looks before it "
        "creates",
    ),
    Layer(
        "Batch tasks, not their fault",
        "a failed resource-file download, output upload, or node",
        f"run again in place with `reactivate_task`, up to {MAX_RECOVERIES} times each, the reason logged; the "
        "job and everything that finished stay",
    ),
    Layer(
        "Batch tasks, their own exit code",
        "a non-zero exit",
        f"retried by Batch {BATCH_TASK_RETRIES} time(s) (`TOPN_MAX_TASK_RETRIES`), then the run fails naming "
        "the task's inputs and stderr",
    ),
    Layer("start task", "the application's install on a node", f"retried by Batch {START_TASK_RETRIES} times"),
    Layer(
        "a pool's bad days",
        "resize errors (core quota, capacity), an autoscale formula's error, unusable nodes, the job quota",
        f"a pool that cannot get a node ends the run within {POOL_CHECK_EVERY:g} s of saying so, naming the error "
        f"and the fix; a partial allocation goes on; a node unusable for {REMOVE_UNUSABLE_AFTER:g} s is replaced "
        f"(fixed pools); no usable node for {NO_USABLE_NODE_LIMIT / 60:g} min ends the run; the job quota is "
        f"waited on for {JOB_QUOTA_WAIT / 60:g} min",
    ),
    Layer(
        "the watch",
        "Batch unreachable",
        f"keeps polling for up to {OUTAGE_LIMIT / 60:g} minutes (the emulator or a network restarting)",
    ),
    Layer(
        "re-running",
        "a run that failed or was killed",
        "the job id comes from the plan's root key: a re-run plans the same packs, resumes the same job, and "
        "outputs already in storage are not made again (with an explicit `--run-id`, a clean start, all are)",
    ),
)


def table() -> str:
    """The retry table as markdown (docs/resilience.md holds it; a test keeps the two the same)."""
    rows = [f"| {r.layer} | {r.retries} | {r.how} |" for r in LAYERS]
    return "\n".join(["| layer | retries | how |", "|---|---|---|", *rows])
