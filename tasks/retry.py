"""Which failures are worth retrying: throttling, server errors and broken connections, never client errors."""

from __future__ import annotations

from typing import Any

from azure.batch.models import CreateTasksError
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from prefect.cache_policies import NO_CACHE

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def is_transient(error: BaseException | None) -> bool:
    """True for errors a retry may cure: throttling, 5xx, timeouts and connection failures."""
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


# Options shared by every task that calls Azure. The SDK clients retry each request (tasks/clients.py);
# a Prefect retry runs the whole task again, for what the SDKs may not retry themselves (a POST whose answer
# was lost, a 429 from Storage) or after they gave up. Every task is written to be run again safely, so two
# retries soon after are enough: they multiply the SDK's attempts only in an outage, never in normal faults.
AZURE_TASK = {
    "persist_result": False,  # what a step returns serves the flow only; the flow's own result is persisted
    "cache_policy": NO_CACHE,  # nothing to reuse across runs; hashing 10,000 inputs' parameters is not free
    "retries": 2,
    "retry_delay_seconds": 1,  # one number: the UI shows a list of delays as "NaNs"
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient,
}

# Tags name the service a task calls, for Prefect's tag-based concurrency limits, e.g.
# `prefect concurrency-limit create azure-batch 4`.
BATCH_TASK = {**AZURE_TASK, "tags": ["azure-batch"]}
STORAGE_TASK = {**AZURE_TASK, "tags": ["azure-storage"]}


def named(template: str, **sizes: str) -> Any:
    """A task_run_name: `template` formatted with the task's parameters, plus `sizes`: names of list
    parameters whose length it gives, `<name>_s` an "s" unless it is one, and `<name>_names` the last parts
    of its first three items (e.g. named("add-tasks {job_id}: {n:,} task{n_s}", n="tasks") gives
    "add-tasks j: 1 task"; named("upload-inputs {n_names}", n="paths") "upload-inputs a.txt, books +2 more")."""

    def name() -> str:
        from prefect.runtime import task_run

        parameters = dict(task_run.parameters)
        for key, value in sizes.items():
            parameters[key] = len(parameters.get(value) or [])
            parameters[f"{key}_s"] = "" if parameters[key] == 1 else "s"
            parameters[f"{key}_names"] = _names(parameters.get(value) or [])
        try:
            return template.format(**parameters)[:200]
        except (KeyError, AttributeError, IndexError):
            return template.split(" ", 1)[0]

    return name


def _names(items: list, shown: int = 3) -> str:
    names = [str(item).rstrip("/").rsplit("/", 1)[-1] or str(item) for item in items[:shown]]
    more = f" +{len(items) - shown:,} more" if len(items) > shown else ""
    return ", ".join(names) + more
