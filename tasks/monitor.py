"""Watching a job: cheap polling with back-off, a live progress artifact, the time limit and cancellation;
then what went wrong, file by file."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from azure.batch import BatchClient
from azure.core.exceptions import HttpResponseError
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from tasks import batch
from tasks.clients import batch_client
from tasks.plan import MERGE_ID
from tasks.sas import redact
from tasks.settings import TopnSettings

FIRST_DELAY, MAX_DELAY, BACKOFF = 0.5, 10.0, 1.5
STDERR_TAIL = 2048


class Ending(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # some task failed: the merge can never run
    TIMED_OUT = "timed out"
    CANCELLED = "cancelled"
    START_TASK_FAILED = "start task failed"


@dataclass(frozen=True)
class Watch:
    ending: Ending
    completed: int
    total: int
    polls: int
    seconds: float
    detail: str = ""


def _cancelled() -> bool:
    run_id = flow_run.get_id()
    if not run_id:
        return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return bool(state and (state.is_cancelling() or state.is_cancelled()))


def _start_task_failure(client: BatchClient, pool_id: str) -> str | None:
    """The start task's error when no node of the pool can take tasks because it failed there."""
    nodes = list(client.list_nodes(pool_id))
    if not nodes or any(n.state in ("idle", "running", "creating", "starting", "waitingforstarttask") for n in nodes):
        return None
    failed = [n for n in nodes if n.state == "starttaskfailed"]
    if not failed:
        return None
    node = failed[0]
    info = node.start_task_info
    tail = _tail(
        lambda **kw: client.download_node_file(pool_id, node.id, "startup/stderr.txt", **kw),
        lambda: client.get_node_file_properties(pool_id, node.id, "startup/stderr.txt").content_length,
    )
    return (
        f"the pool's start task failed on {len(failed)} of {len(nodes)} nodes "
        f"(exit code {info.exit_code}): {tail or info.failure_info.message if info.failure_info else tail}"
    )


@task(name="watch-job")
def watch_job(settings: TopnSettings, job_id: str, pool_id: str, total: int, deadline: datetime) -> Watch:
    """Polls get_job_task_counts until the job ends, backing off while nothing changes; publishes a progress
    artifact; terminates the job at the deadline or when the flow run is cancelled."""
    client, log = batch_client(settings), get_run_logger()
    artifact = create_progress_artifact(0.0, description=f"Batch job {job_id}: tasks completed")
    started, delay, polls, last = time.monotonic(), FIRST_DELAY, 0, None
    while True:
        polls += 1
        counts = client.get_job_task_counts(job_id).task_counts
        now = (counts.completed, counts.running, counts.failed)
        if now != last:
            update_progress_artifact(artifact, 100.0 * counts.completed / total)
            log.info(
                "%d of %d tasks completed (%d running, %d failed)",
                counts.completed,
                total,
                counts.running,
                counts.failed,
            )
            delay, last = FIRST_DELAY, now
        else:
            delay = min(delay * BACKOFF, MAX_DELAY)

        def watch(ending: Ending, detail: str = "", done: int = counts.completed, polls: int = polls) -> Watch:
            return Watch(ending, done, total, polls, time.monotonic() - started, detail)

        if counts.completed == total:
            return watch(Ending.SUCCEEDED if counts.failed == 0 else Ending.FAILED)
        if counts.running == 0:  # nothing runs: the job may have ended, or be stuck
            job = client.get_job(job_id)
            if job.state in ("terminating", "completed"):
                reason = job.execution_info.termination_reason or ""
                if reason == "MaxWallClockTimeExpiry":
                    return watch(Ending.TIMED_OUT, f"the job did not finish within {settings.job_timeout}")
                return watch(Ending.FAILED, f"the job was terminated ({reason})")
            if counts.failed and _only_merge_waits(client, job_id):
                return watch(Ending.FAILED)
        if datetime.now(UTC) >= deadline:
            batch.terminate_job.fn(settings, job_id, "TopnTimeLimit")
            return watch(Ending.TIMED_OUT, f"the job did not finish within {settings.job_timeout}")
        if _cancelled():
            batch.terminate_job.fn(settings, job_id, "TopnFlowRunCancelled")
            return watch(Ending.CANCELLED, "the flow run was cancelled")
        if counts.running == 0 and delay >= MAX_DELAY / 2 and (why := _start_task_failure(client, pool_id)):
            return watch(Ending.START_TASK_FAILED, why)
        time.sleep(delay)


def _only_merge_waits(client: BatchClient, job_id: str) -> bool:
    waiting = [t.id for t in client.list_tasks(job_id, filter="state eq 'active' or state eq 'running'", select=["id"])]
    return waiting in ([], [MERGE_ID])


def _tail(download, size) -> str:
    try:
        length = size() or 0
        start = max(0, length - STDERR_TAIL)
        data = b"".join(download(ocp_range=f"bytes={start}-{max(start, length - 1)}")) if length else b""
    except HttpResponseError:
        return ""
    return redact(data.decode("utf-8", errors="replace")).strip()


@dataclass(frozen=True)
class TaskFailure:
    task_id: str
    file: str
    exit_code: int | None
    code: str
    message: str
    stderr_tail: str

    def describe(self) -> str:
        exit_code = "" if self.exit_code is None else f", exit code {self.exit_code}"
        tail = f"\n    stderr: {self.stderr_tail[-500:]}" if self.stderr_tail else ""
        return f"  {self.file} (task {self.task_id}{exit_code}): {self.code}: {redact(self.message)}{tail}"


@task(name="collect-failures")
def collect_failures(settings: TopnSettings, job_id: str, files: dict[str, str]) -> list[TaskFailure]:
    """Every failed task with its file, its failure info and the end of its stderr (list_tasks with a filter)."""
    client = batch_client(settings)
    failures = []
    for t in client.list_tasks(job_id, filter="executionInfo/result eq 'failure'"):
        info = t.execution_info
        failure = info.failure_info
        tail = _tail(
            lambda t=t, **kw: client.download_task_file(job_id, t.id, "stderr.txt", **kw),
            lambda t=t: client.get_task_file_properties(job_id, t.id, "stderr.txt").content_length,
        )
        failures.append(
            TaskFailure(
                t.id,
                files.get(t.id, t.id),
                info.exit_code,
                failure.code if failure else "",
                failure.message if failure else "",
                tail,
            )
        )
    return failures
