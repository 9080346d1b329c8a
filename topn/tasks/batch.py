"""Azure Batch steps: the pool, the job, its tasks, and their clean-up."""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.batch import models as m
from azure.batch.models._models import BatchJobTerminateOptions  # not exported by SDK 15 (docs/batch-wire.md 0.5)
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from prefect import get_run_logger

from topn.tasks import quotas
from topn.tasks.application import AppBlobs
from topn.tasks.clients import batch_client
from topn.tasks.marks import FLOW_RUN_KEY, INPUTS_KEY, LEGACY_VERSION_KEY, OWNER, OWNER_KEY
from topn.tasks.naming import named
from topn.tasks.policy import AUTO_POOL_WAIT, START_TASK_RETRIES, task_options
from topn.tasks.sas import SasIssuer
from topn.tasks.settings import BatchSettings
from topn.tasks.tags import service_task

BATCH_TASK = task_options("azure-batch")  # every step here calls Batch

START_TASK_SAS_LIFETIME = timedelta(days=30)  # nodes joining later still need to fetch the wheel
POLL = 1.0
TASKS_PER_REQUEST, MAX_REQUEST_BYTES, ADD_CONCURRENCY = 100, 900_000, 4  # Batch refuses bodies over 1 MB


class PoolConflict(RuntimeError):
    """The pool id is taken by a pool topn may not use or replace; the message names the setting to change."""


class RunConflict(RuntimeError):
    """The job id is taken by a job made for other inputs; the message says what to change."""


def _is_ours(pool: m.BatchPool) -> bool:
    """Pools topn created carry its mark (earlier versions marked them with the task application version only)."""
    metadata = {item.name: item.value for item in pool.metadata or []}
    return metadata.get(OWNER_KEY) == OWNER or LEGACY_VERSION_KEY in metadata


class JobState(StrEnum):
    CREATED = "created"  # a new job
    RESUMED = "resumed"  # still running from an earlier attempt of the same run
    DONE = "done"  # finished successfully before: its outputs can be reused


def _start_task(settings: BatchSettings, app: AppBlobs, sas: SasIssuer) -> m.BatchStartTask | None:
    """The start task installing the application on each node (none for an application without files)."""
    if not app.blobs:
        return None
    return m.BatchStartTask(
        command_line=shlex.join(app.install),
        resource_files=[
            m.ResourceFile(http_url=sas.blob_read(settings.app_container, blob), file_path=blob.rsplit("/", 1)[-1])
            for blob in app.blobs
        ],
        wait_for_success=True,
        max_task_retry_count=START_TASK_RETRIES,
    )


def _sas_expiry_of(query: dict[str, list[str]]) -> datetime | None:
    expiry = query.get("se")
    return datetime.fromisoformat(expiry[0].replace("Z", "+00:00")) if expiry else None


def autoscale_formula(settings: BatchSettings) -> str:
    """Nodes for the tasks waiting or running ($PendingTasks), up to the pool's dedicated and then spot
    maximum; the same nodes while tasks came in the last `autoscale_idle`; none after that."""
    idle = max(1, int(settings.autoscale_idle.total_seconds()))
    return (
        "// topn: nodes for the pending tasks; kept while tasks came recently; none when idle\n"
        "$now = max($PendingTasks.GetSample(1));\n"
        f"$recent = max($PendingTasks.GetSample(TimeInterval_Second * {idle}));\n"
        "$current = $CurrentDedicatedNodes + $CurrentLowPriorityNodes;\n"
        "$nodes = $now > 0 ? ceil($now / $TaskSlotsPerNode) : ($recent > 0 ? $current : 0);\n"
        f"$TargetDedicatedNodes = min({settings.dedicated_nodes}, $nodes);\n"
        f"$TargetLowPriorityNodes = min({settings.spot_nodes}, max(0, $nodes - {settings.dedicated_nodes}));\n"
        "$NodeDeallocationOption = taskcompletion;"
    )


def _size(settings: BatchSettings) -> dict:
    """The pool's size: fixed targets, or autoscale's formula (then no targets: the service refuses both)."""
    if settings.pool_mode == "autoscale":
        return {
            "enable_auto_scale": True,
            "auto_scale_formula": autoscale_formula(settings),
            "auto_scale_evaluation_interval": settings.autoscale_interval,
        }
    return {"target_dedicated_nodes": settings.dedicated_nodes, "target_low_priority_nodes": settings.spot_nodes}


def _set_mode(client, pool: m.BatchPool, settings: BatchSettings) -> None:
    """Brings a reused pool to the configured mode (or formula), without recreating it."""
    formula = autoscale_formula(settings)
    if settings.pool_mode == "autoscale" and (not pool.enable_auto_scale or pool.auto_scale_formula != formula):
        client.enable_pool_auto_scale(
            pool.id,
            m.BatchPoolEnableAutoScaleOptions(
                auto_scale_formula=formula, auto_scale_evaluation_interval=settings.autoscale_interval
            ),
        )
        get_run_logger().info(
            "pool %s: autoscale on (up to %d dedicated + %d spot nodes, none after %s idle)",
            pool.id,
            settings.dedicated_nodes,
            settings.spot_nodes,
            settings.autoscale_idle,
        )
    elif settings.pool_mode == "keep" and pool.enable_auto_scale:
        client.disable_pool_auto_scale(pool.id)
        size = m.BatchPoolResizeOptions(
            target_dedicated_nodes=settings.dedicated_nodes, target_low_priority_nodes=settings.spot_nodes
        )
        client.begin_resize_pool(pool.id, size)  # sent now; the watch waits for the nodes


def _start_task_lasts(pool: m.BatchPool, needed_until: datetime, entra: bool) -> bool:
    """Whether the start task's SAS URLs (the task application) stay valid as long as the run needs them:
    not expiring before, and signed as the account is used now (a user delegation SAS names its key's
    object id, `skoid`; account-key SAS stop working when an account turns to Entra ID only)."""
    files = pool.start_task.resource_files if pool.start_task else []
    queries = [parse_qs(urlsplit(f.http_url).query) for f in files if f.http_url]

    def lasts(query: dict[str, list[str]]) -> bool:
        expiry = _sas_expiry_of(query)
        return expiry is not None and expiry > needed_until and ("skoid" in query) == entra

    return all(map(lasts, queries))


# Nodes that run, or ran and failed, the start task they were given: a renewed one would not reach them.
_ON_THEIR_START_TASK = {"starting", "waitingforstarttask", "starttaskfailed"}


def _nodes_on_old_start_task(client, pool_id: str) -> bool:
    return any(n.state in _ON_THEIR_START_TASK for n in client.list_nodes(pool_id, select=["id", "state"]))


def _renew_start_task(client, settings: BatchSettings, app: AppBlobs, sas: SasIssuer) -> None:
    """Gives the pool's start task new SAS URLs in place (update_pool): nodes joining later (a resize,
    autoscale, a replaced spot node) can fetch the task application again; running nodes go on as they are."""
    starter = SasIssuer.for_lifetime(sas, START_TASK_SAS_LIFETIME)
    client.update_pool(settings.pool_id, m.BatchPoolUpdateOptions(start_task=_start_task(settings, app, starter)))
    get_run_logger().info(
        "pool %s: renewed its start task's access to the task application, until %s",
        settings.pool_id,
        starter.expiry.strftime("%Y-%m-%d %H:%M UTC"),
    )


@service_task(name="ensure-pool", task_run_name=named("ensure-pool {settings.pool_id}"), **BATCH_TASK)
def ensure_pool(settings: BatchSettings, app: AppBlobs, sas: SasIssuer, needed_until: datetime) -> str:
    """Reuses the pool if it runs this task application version (renewing its start task's SAS if they
    would expire during the run), else creates it (create_pool) with a start task that installs the
    wheel. A pool of another version with no active jobs is replaced."""
    client, log = batch_client(settings), get_run_logger()
    try:
        pool = client.get_pool(settings.pool_id)
    except ResourceNotFoundError:
        pool = None
    if pool is not None and not _is_ours(pool):
        raise PoolConflict(
            f"pool {pool.id!r} exists and was not created by topn: it is left untouched; "
            "set TOPN_POOL_ID to another pool id"
        )
    version = {item.name: item.value for item in pool.metadata or []}.get(app.name) if pool else None
    why = "it was made for another task application version"
    if pool is not None and pool.state == "active" and version == app.version:
        lasts = _start_task_lasts(pool, needed_until, settings.use_entra_id)
        # Renewed SAS serve the nodes that join from now on; a node running or failed on its old start task
        # would fail or stay failed for want of them, so such a pool is replaced instead (when idle).
        if lasts or not _nodes_on_old_start_task(client, pool.id):
            log.info(
                "reusing pool %s (%d nodes)", pool.id, pool.current_dedicated_nodes + pool.current_low_priority_nodes
            )
            if not lasts:
                _renew_start_task(client, settings, app, sas)
            _set_mode(client, pool, settings)
            return pool.id
        why = "its start task's access to the task application expired (or changed) under nodes starting with it"
    if pool is not None and pool.state == "deleting":
        log.info("pool %s is being deleted: waiting for it to go", pool.id)
        _wait_gone(client.get_pool, pool.id)
        pool = None
    if pool is not None:
        busy = [j.id for j in client.list_jobs(filter="state eq 'active'") if j.pool_info.pool_id == pool.id]
        if busy:
            raise PoolConflict(
                f"pool {pool.id!r} must be replaced ({why}) but has active jobs {busy}: "
                "set TOPN_POOL_ID to another pool id"
            )
        log.info("replacing pool %s: %s", pool.id, why)
        client.begin_delete_pool(pool.id, polling_interval=POLL).result()
    options = m.BatchPoolCreateOptions(id=settings.pool_id, **_pool_fields(settings, app, sas))
    try:
        _create_pool(client, options)
        log.info(
            "created pool %s: %s%d dedicated + %d spot nodes of %s",
            settings.pool_id,
            "autoscale, from 0 up to " if settings.pool_mode == "autoscale" else "",
            settings.dedicated_nodes,
            settings.spot_nodes,
            settings.vm_size,
        )
    except ResourceExistsError:  # created meanwhile by a concurrent run: use it
        pass
    return settings.pool_id


def _pool_fields(settings: BatchSettings, app: AppBlobs, sas: SasIssuer) -> dict[str, Any]:
    """What a pool topn creates is, whether a pool of its own id or a job's auto pool."""
    starter = SasIssuer.for_lifetime(sas, START_TASK_SAS_LIFETIME)
    return {
        "vm_size": settings.vm_size,
        "virtual_machine_configuration": m.VirtualMachineConfiguration(
            image_reference=m.BatchVmImageReference(
                publisher=settings.image_publisher, offer=settings.image_offer, sku=settings.image_sku, version="latest"
            ),
            node_agent_sku_id=settings.node_agent_sku_id,
        ),
        **_size(settings),
        "task_slots_per_node": settings.task_slots_per_node,
        "task_scheduling_policy": m.BatchTaskSchedulingPolicy(node_fill_type="spread"),
        "start_task": _start_task(settings, app, starter),
        "metadata": [
            m.BatchMetadataItem(name=app.name, value=app.version),
            m.BatchMetadataItem(name=OWNER_KEY, value=OWNER),
        ],
    }


def auto_pool(settings: BatchSettings, app: AppBlobs, sas: SasIssuer) -> m.BatchAutoPoolSpecification:
    """A pool of the job's own (pool mode per-job): Batch creates it with the job and deletes it when the job
    ends or is deleted; its id starts with the settings' pool id (at most 20 characters of it)."""
    return m.BatchAutoPoolSpecification(
        auto_pool_id_prefix=settings.pool_id[:20],
        pool_lifetime_option=m.BatchPoolLifetimeOption.JOB,
        keep_alive=False,
        pool=m.BatchPoolSpecification(**_pool_fields(settings, app, sas)),
    )


def pool_and_job(
    settings: BatchSettings,
    app: AppBlobs,
    sas: SasIssuer,
    needed_until: datetime,
    job: tuple[str, str, str, str | None],
) -> tuple[str, JobState]:
    """The pool the run's job runs on and the job's state: the settings' pool (ensure_pool) then the job
    (prepare_job); per-job, the job with its own pool, whose id Batch then gives (job_pool). `job` is
    prepare_job's job id, flow run id, inputs and final task."""
    if settings.pool_mode != "per-job":
        pool_id = ensure_pool(settings, app, sas, needed_until)
        return pool_id, prepare_job(settings, job[0], pool_id, *job[1:])
    state = prepare_job(settings, job[0], auto_pool(settings, app, sas), *job[1:])
    return job_pool(settings, job[0]), state


@service_task(name="job-pool", task_run_name=named("job-pool {job_id}"), **BATCH_TASK)
def job_pool(settings: BatchSettings, job_id: str) -> str:
    """The id of the pool Batch made for the job (get_job: its execution info), once it has one."""
    client = batch_client(settings)
    deadline = time.monotonic() + AUTO_POOL_WAIT
    while (pool_id := client.get_job(job_id).execution_info.pool_id) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} has no pool {AUTO_POOL_WAIT:.0f} s after it was created")
        time.sleep(POLL)
    get_run_logger().info("job %s runs on its own pool %s, deleted with the job", job_id, pool_id)
    return pool_id


@service_task(name="prepare-job", task_run_name=named("prepare-job {job_id}"), **BATCH_TASK)
def prepare_job(
    settings: BatchSettings,
    job_id: str,
    pool: str | m.BatchAutoPoolSpecification,
    flow_run_id: str,
    inputs: str,
    final_task: str | None = None,
) -> JobState:
    """Creates the run's job (create_job) on `pool` (a pool id, or a pool of its own), or picks up the one an
    earlier attempt of the same run left: running → resumed; finished well (its `final_task`, the one that
    runs last, succeeded) → reused; failed or stopped → deleted and created anew. A job of the same id made
    for other inputs (an explicit run id used again) is never taken for this run's."""
    client, log = batch_client(settings), get_run_logger()
    try:
        job = client.get_job(job_id)
    except ResourceNotFoundError:
        job = None
    made_for = {i.name: i.value for i in (job.metadata or [])}.get(INPUTS_KEY) if job else None
    if job is not None and made_for not in (None, inputs):
        raise RunConflict(
            f"job {job_id!r} was made for other inputs or another N: give another --run-id (run_id), "
            "or delete that job first"
        )
    if job is not None:
        if job.state == "active":
            log.info("resuming job %s", job_id)
            return JobState.RESUMED
        if job.state == "completed" and final_task and _succeeded(client, job_id, final_task):
            log.info("job %s already finished: reusing its outputs", job_id)
            return JobState.DONE
        log.info("job %s ended without success before: starting it again", job_id)
        if job.state != "deleting":
            client.begin_delete_job(job_id, polling_interval=POLL).result()
        else:
            _wait_gone(client.get_job, job_id)
    quotas.create_job(
        client,
        m.BatchJobCreateOptions(
            id=job_id,
            pool_info=(
                m.BatchPoolInfo(pool_id=pool)
                if isinstance(pool, str)
                else m.BatchPoolInfo(auto_pool_specification=pool)
            ),
            uses_task_dependencies=True,
            constraints=m.BatchJobConstraints(
                max_wall_clock_time=settings.job_timeout, max_task_retry_count=settings.max_task_retries
            ),
            # Never terminatejob: a completed job's failed tasks can no longer be run again (watch-job does).
            all_tasks_complete_mode="noaction",
            metadata=[
                m.BatchMetadataItem(name=FLOW_RUN_KEY, value=flow_run_id),
                m.BatchMetadataItem(name=INPUTS_KEY, value=inputs),
            ],
        ),
    )
    log.info("created job %s on %s", job_id, f"pool {pool}" if isinstance(pool, str) else "a pool of its own")
    return JobState.CREATED


def _create_pool(client, options: m.BatchPoolCreateOptions) -> None:
    try:
        client.create_pool(options)
    except HttpResponseError as e:
        if quota := quotas.pool_quota_reached(client, e):
            raise quota from None
        raise


def _succeeded(client, job_id: str, task_id: str) -> bool:
    try:
        last = client.get_task(job_id, task_id)
    except ResourceNotFoundError:
        return False
    return last.state == "completed" and last.execution_info.result == "success"


def _wait_gone(get: Callable[[str], object], ident: str) -> None:
    """Waits until a pool or job being deleted is gone (get_pool / get_job answer 404)."""
    while True:
        try:
            get(ident)
        except ResourceNotFoundError:
            return
        time.sleep(POLL)


def chunks(tasks: list[m.BatchTaskCreateOptions], limit: int = MAX_REQUEST_BYTES) -> list[list]:
    """The tasks in requests of at most 100 tasks and `limit` bytes, as Batch accepts them: packed tasks carry
    a hundred resource files each, so a full request of 100 would be refused (RequestBodyTooLarge)."""
    out: list[list[m.BatchTaskCreateOptions]] = []
    size = 0
    for t in tasks:
        n = len(json.dumps(t.as_dict())) + 1
        if not out or len(out[-1]) == TASKS_PER_REQUEST or size + n > limit:
            out.append([])
            size = 0
        out[-1].append(t)
        size += n
    return out


@service_task(name="add-tasks", task_run_name=named("add-tasks {job_id}: {n:,} task{n_s}", n="tasks"), **BATCH_TASK)
def add_tasks(settings: BatchSettings, job_id: str, tasks: list[m.BatchTaskCreateOptions]) -> tuple[int, int]:
    """Adds the tasks not in the job yet (create_tasks, requests of at most 100 tasks and 1 MB, 4 at once).
    Returns how many were added, and how many the job now holds. The job stays active when all are complete
    (not `terminatejob`): a task that failed for a reason not its own, the merge too, can then still run again."""
    client = batch_client(settings)
    present = {t.id for t in client.list_tasks(job_id, select=["id"])}
    missing = [t for t in tasks if t.id not in present]
    if missing:
        try:
            with ThreadPoolExecutor(ADD_CONCURRENCY) as pool:
                list(pool.map(lambda chunk: client.create_tasks(job_id, chunk), chunks(missing)))
        except AttributeError as e:  # azure-batch 15.1 fails so on a chunk that got no answer at all
            raise ServiceRequestError(f"Batch did not answer while tasks were added ({e})") from e
        # Its worker threads can also die on such a chunk without a word: check that every task is there.
        added = {t.id for t in client.list_tasks(job_id, select=["id"])}
        if lost := [t.id for t in missing if t.id not in added]:
            raise ServiceResponseError(f"{len(lost)} of {len(missing)} tasks were not added to job {job_id}")
    return len(missing), len(present | {t.id for t in tasks})


@service_task(name="terminate-job", task_run_name=named("terminate-job {job_id}"), **BATCH_TASK)
def terminate_job(settings: BatchSettings, job_id: str, reason: str) -> None:
    """Terminates the job if it is still active, killing its running tasks (begin_terminate_job)."""
    client = batch_client(settings)
    try:
        if client.get_job(job_id).state in ("active", "disabled"):
            client.begin_terminate_job(
                job_id, BatchJobTerminateOptions(termination_reason=reason), polling_interval=POLL
            ).result()
    except ResourceNotFoundError:
        pass
    except ResourceExistsError:  # already terminating or completed
        pass


@service_task(name="delete-job", task_run_name=named("delete-job {job_id}"), **BATCH_TASK)
def delete_job(settings: BatchSettings, job_id: str) -> None:
    """Deletes the job and its task files on the nodes (begin_delete_job)."""
    with contextlib.suppress(ResourceNotFoundError):
        batch_client(settings).begin_delete_job(job_id, polling_interval=POLL).result()


@service_task(name="delete-pool", task_run_name=named("delete-pool {pool_id}"), **BATCH_TASK)
def delete_pool(settings: BatchSettings, pool_id: str) -> None:
    """Deletes the pool, releasing its nodes (begin_delete_pool), if topn created it."""
    client = batch_client(settings)
    with contextlib.suppress(ResourceNotFoundError):
        if not _is_ours(client.get_pool(pool_id)):
            get_run_logger().warning("pool %s was not created by topn: not deleting it", pool_id)
            return
        client.begin_delete_pool(pool_id, polling_interval=POLL).result()


def jobs_of_flow_run(settings: BatchSettings, flow_run_id: str) -> list[str]:
    """Active jobs created by one flow run (found through their metadata)."""
    jobs = batch_client(settings).list_jobs(filter="state eq 'active'")
    return [j.id for j in jobs if any(i.name == FLOW_RUN_KEY and i.value == flow_run_id for i in j.metadata or [])]
