"""Watching a job: cheap polling with back-off, a live progress artifact, the time limit and cancellation;
then what went wrong, file by file."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from topn.tasks import batch, pool_health
from topn.tasks.clients import batch_client
from topn.tasks.failures import TopnFailed
from topn.tasks.layout import logs_blob
from topn.tasks.naming import named
from topn.tasks.policy import (
    MAX_RECOVERIES,
    OUTAGE_LIMIT,
    POLL_BACKOFF,
    POLL_FIRST,
    POLL_MAX,
    RECOVERABLE,
    is_transient,
)
from topn.tasks.sas import redact
from topn.tasks.settings import BatchSettings
from topn.tasks.tags import service_task

ETA_SHARE = 0.1
STDERR_TAIL = 2048
SCALING_SAID_EVERY = 60.0  # seconds between two "scaling up" messages


class Ending(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # some task failed: the merge can never run
    TIMED_OUT = "timed out"
    CANCELLED = "cancelled"
    START_TASK_FAILED = "start task failed"
    NO_NODES = "cannot run"  # the pool cannot get, or keep, a usable node


@dataclass(frozen=True)
class Watch:
    ending: Ending
    completed: int
    total: int
    polls: int
    seconds: float
    detail: str = ""
    recovered: int = 0  # task runs started again after a failure that was not the task's own


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


@dataclass
class _Seen:
    """What the watch saw last, and how long it waits before the next look: while tasks complete, a tenth of
    the time the rest should take at the rate seen so far (a long run is polled seldom, its end soon); while
    nothing changes, longer and longer."""

    total: int
    counts: tuple[int, int, int] | None = None
    delay: float = POLL_FIRST
    polls: int = 0
    started: float = field(default_factory=time.monotonic)
    scaling_said: float = 0.0  # when the watch last said the pool has no node yet
    pool: pool_health.PoolWatch = field(default_factory=pool_health.PoolWatch)

    def update(self, counts: tuple[int, int, int]) -> bool:
        changed, self.counts = counts != self.counts, counts
        if not changed:
            self.delay = min(self.delay * POLL_BACKOFF, POLL_MAX)
        elif counts[0] > 0:
            rest = (time.monotonic() - self.started) * (self.total - counts[0]) / counts[0]
            self.delay = min(max(rest * ETA_SHARE, POLL_FIRST), POLL_MAX)
        else:
            self.delay = POLL_FIRST
        return changed


@service_task(name="watch-job", task_run_name=named("watch-job {job_id}"), tags=["azure-batch"], persist_result=False)
def watch_job(settings: BatchSettings, job_id: str, pool_id: str, total: int, deadline: datetime) -> Watch:
    """Polls get_job_task_counts until the job ends, backing off while nothing changes; publishes a progress
    artifact; runs again in place (reactivate_task) tasks that failed for a reason not their own; terminates
    the job at the deadline or when the flow run is cancelled. Keeps polling through a Batch outage."""
    client, log = batch_client(settings), get_run_logger()
    artifact = create_progress_artifact(0.0, description=f"Batch job {job_id}: 0 of {total:,} tasks completed")
    started, seen, outage = time.monotonic(), _Seen(total), None
    recoveries: dict[str, int] = {}
    while True:
        seen.polls += 1
        try:
            ending = _poll(client, settings, job_id, pool_id, total, deadline, recoveries, artifact, seen)
        except Exception as e:
            if not is_transient(e) or time.monotonic() - (outage := outage or time.monotonic()) > OUTAGE_LIMIT:
                raise
            log.warning("Batch did not answer (%s): still watching", (redact(str(e)).splitlines() or [""])[0])
            seen.delay = min(seen.delay * POLL_BACKOFF, POLL_MAX)
        else:
            outage = None
            if ending:
                kind, detail, done = ending
                seconds = time.monotonic() - started
                return Watch(kind, done, total, seen.polls, seconds, detail, sum(recoveries.values()))
        time.sleep(seen.delay)


def _poll(
    client: BatchClient,
    settings: BatchSettings,
    job_id: str,
    pool_id: str,
    total: int,
    deadline: datetime,
    recoveries: dict[str, int],
    artifact: object,
    seen: _Seen,
) -> tuple[Ending, str, int] | None:
    """One look at the job: how it ended (ending, detail, tasks completed), or None while it runs."""
    counts = client.get_job_task_counts(job_id).task_counts
    if counts.failed and _recover(client, job_id, recoveries):
        seen.counts, seen.delay = None, POLL_FIRST  # something changed: look again soon
        return None
    if seen.update((counts.completed, counts.running, counts.failed)):
        # The description is set anew each time: a wait for nodes said earlier is over once tasks move.
        update_progress_artifact(
            artifact, 100.0 * counts.completed / total, description=f"Batch job {job_id}: {_tally(counts, total)}"
        )
        get_run_logger().info(
            "%d of %d tasks completed (%d running, %d failed)", counts.completed, total, counts.running, counts.failed
        )
    if counts.completed == total:
        return (Ending.SUCCEEDED if counts.failed == 0 else Ending.FAILED), "", counts.completed
    if counts.running == 0:  # nothing runs: the job may have ended, or be stuck
        job = client.get_job(job_id)
        if job.state in ("terminating", "completed"):
            reason = job.execution_info.termination_reason or ""
            if reason == "MaxWallClockTimeExpiry":
                return Ending.TIMED_OUT, f"the job did not finish within {settings.job_timeout}", counts.completed
            return Ending.FAILED, f"the job was terminated ({reason})", counts.completed
        if counts.failed and _only_dependents_wait(client, job_id):
            return Ending.FAILED, "", counts.completed
    if datetime.now(UTC) >= deadline:
        batch.terminate_job.fn(settings, job_id, "TopnTimeLimit")
        return Ending.TIMED_OUT, f"the job did not finish within {settings.job_timeout}", counts.completed
    if _cancelled():
        batch.terminate_job.fn(settings, job_id, "TopnFlowRunCancelled")
        return Ending.CANCELLED, "the flow run was cancelled", counts.completed
    if counts.running == 0 and counts.active and time.monotonic() - seen.scaling_said > SCALING_SAID_EVERY:
        _say_if_scaling_up(client, pool_id, artifact, 100.0 * counts.completed / total, seen)
    if counts.running == 0 and seen.delay >= POLL_MAX / 2 and (why := _start_task_failure(client, pool_id)):
        return Ending.START_TASK_FAILED, why, counts.completed
    # A look at the pool while tasks wait, and once while any run: a partial allocation is said even when the
    # run does not wait for the nodes it lacks.
    look = counts.active or (counts.running and not seen.pool.checked)
    if look and (why := pool_health.check(client, settings, pool_id, seen.pool, counts.running == 0)):
        return Ending.NO_NODES, why, counts.completed
    return None


def _tally(counts: m.BatchTaskCounts, total: int) -> str:
    """E.g. "530 of 803 tasks completed, 4 running, 1 failed"."""
    return f"{counts.completed:,} of {total:,} tasks completed, {counts.running:,} running, {counts.failed:,} failed"


def _say_if_scaling_up(client: BatchClient, pool_id: str, artifact: object, progress: float, seen: _Seen) -> None:
    """A pool at zero nodes with tasks waiting is scaling up (autoscale), not stuck: said in the log and on
    the progress artifact, once a minute at most."""
    pool = client.get_pool(
        pool_id,
        select=["currentDedicatedNodes", "currentLowPriorityNodes", "enableAutoScale", "autoScaleEvaluationInterval"],
    )
    if (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0):
        return
    seen.scaling_said = time.monotonic()
    every = f" (autoscale evaluates every {pool.auto_scale_evaluation_interval})" if pool.enable_auto_scale else ""
    what = f"pool {pool_id} has no node yet: scaling up{every}"
    get_run_logger().info("tasks are waiting: %s", what)
    update_progress_artifact(artifact, progress, description=f"Waiting for nodes: {what}")


def _recover(client: BatchClient, job_id: str, recoveries: dict[str, int]) -> int:
    """Runs again, in place, each failed task whose failure was not its own (reactivate_task), within its
    budget; returns how many. The job, and every task that finished, stay as they are."""
    again = 0
    failed = client.list_tasks(job_id, filter="executionInfo/result eq 'failure'", select=["id", "executionInfo"])
    for failed_task in failed:
        tid, ran = failed_task.id, failed_task.execution_info
        info = ran.failure_info if ran else None
        if info is None or not _not_its_own(info) or recoveries.get(tid, 0) >= MAX_RECOVERIES:
            continue
        try:
            client.reactivate_task(job_id, tid)
        except ResourceExistsError:  # 409: already active again, or the job is ending
            continue
        recoveries[tid] = recoveries.get(tid, 0) + 1
        again += 1
        get_run_logger().warning(
            "task %s failed (%s: %s): running it again (%d of %d)",
            tid,
            info.code,
            redact(info.message or ""),
            recoveries[tid],
            MAX_RECOVERIES,
        )
    return again


def _not_its_own(info: m.BatchTaskFailureInfo) -> bool:
    """A failure of storage, the network or the node rather than of the task's program."""
    category = str(getattr(info.category, "value", info.category) or "").lower()  # an enum, or an unknown str
    return info.code in RECOVERABLE or (category == "servererror" and info.code != "TaskEnded")


def _only_dependents_wait(client: BatchClient, job_id: str) -> bool:
    """Whether every task still waiting waits for others (with a task failed and none running, they never run)."""
    waiting = client.list_tasks(job_id, filter="state eq 'active' or state eq 'running'", select=["id", "dependsOn"])
    return all(t.depends_on is not None for t in waiting)


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
    attempts: int = 1

    def describe(self) -> str:
        exit_code = "" if self.exit_code is None else f", exit code {self.exit_code}"
        tail = "\n      ".join(self.stderr_tail[-500:].splitlines())  # every line of it under its file
        tail = f"\n    stderr: {tail}" if tail else ""
        return f"  {self.file} (task {self.task_id}{exit_code}): {self.code}: {redact(self.message)}{tail}"


def collect_failures(settings: BatchSettings, job_id: str, files: dict[str, str]) -> list[TaskFailure]:
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
                (info.retry_count or 0) + 1,
            )
        )
    return failures


@service_task(
    name="report-failures", task_run_name=named("report-failures {job_id}"), tags=["azure-batch"], persist_result=False
)
def report_failures(
    settings: BatchSettings,
    job_id: str,
    files: dict[str, str],
    heading: list[str],
    artifact_key: str,
    kept: str = "what finished is kept: running the same command again runs only the rest",
) -> None:
    """Ends Failed, where the Prefect UI shows it, with the job's failures in one readable message, and
    publishes them as a table: file, task, attempts, exit code or failure, the end of stderr and where all
    of it is (uploaded on failure only)."""
    failures = collect_failures(settings, job_id, files)
    # The columns a reader needs first come first: a wide table hides its right end.
    rows = [
        {
            "file": f.file,
            "stderr (end)": "\n".join(f.stderr_tail.splitlines()[-5:]),
            "exit code": "" if f.exit_code is None else f.exit_code,
            "attempts": f.attempts,
            "task": f.task_id,
            "failure": f"{f.code}: {redact(f.message)}",
            "stderr blob": f"{settings.output_container}/{logs_blob(job_id, f.task_id)}/stderr.txt",
        }
        for f in failures
    ]
    if rows:
        create_table_artifact(rows, key=artifact_key, description=f"The failed tasks of Batch job {job_id}")
    # A task without a name in `files` (a merge, which fails when its inputs did) is told only when alone.
    lines = [*heading, *(f.describe() for f in failures if f.task_id in files or len(failures) == 1)]
    lines.append(f"  {kept}")
    named = [f.file for f in failures if f.task_id in files][:3] or [f.task_id for f in failures[:1]]
    more = f" and {len(failures) - len(named):,} more" if len(failures) > len(named) else ""
    summary = f"{heading[0]}; failed: {', '.join(named)}{more} (report-failures has each one's stderr)"
    raise TopnFailed(redact("\n".join(lines)), redact(summary) if failures else None)
