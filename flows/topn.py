"""The `topn` flow: the classic Azure Batch "top N words" workload, each step a retryable Prefect task."""

# No `from __future__ import annotations` here: Prefect builds its parameter model from these annotations
# when a runner loads the flow, and string annotations of Annotated[...] cannot be resolved there.
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_run
from pydantic import ByteSize, Field

from flows.crashes import ensure_crash_detection
from flows.result import RunStats, TopnResult, file_results
from tasks import batch, monitor, plan, preflight, storage
from tasks.clients import blob_service
from tasks.sas import SasIssuer, redact
from tasks.settings import TopnSettings, load_settings
from tasks.taskapp import build_taskapp

ADD_GROUP_FILES = 10_000  # files whose task specs are built and added at once
FILE_ROWS_SHOWN = 1_000  # rows of the per-file table artifact: a UI table, not a data export


class TopnFailed(RuntimeError):
    """The run did not produce a result; the message says which files and why."""


def _on_cancellation(flow: object, flow_run: object, state: object) -> None:
    """Cancelling the flow run terminates its Batch jobs. The runner calls this hook, by keyword."""
    parameters = getattr(flow_run, "parameters", None) or {}
    settings = _settings(parameters.get("batch_credentials"), parameters.get("storage_credentials"))
    for job_id in batch.jobs_of_flow_run(settings, str(flow_run.id)):
        batch.terminate_job.fn(settings, job_id, "TopnFlowRunCancelled")


def _settings(batch_credentials: str | None, storage_credentials: str | None) -> TopnSettings:
    """The TOPN_* settings, with credentials from the named blocks instead, if any."""
    if batch_credentials or storage_credentials:
        from tasks.blocks import load_settings_from_blocks

        return load_settings_from_blocks(batch_credentials, storage_credentials)
    return load_settings()


def _run_name() -> str:
    """What a run counts, as its name says in the UI: "sample (10 files)" needs the listing; the parameters
    are all there is when the run is created."""
    parameters = current_run.parameters
    if parameters.get("blob_prefix") is not None:
        what = f"prefix {parameters['blob_prefix'] or '(all)'}"
    else:
        paths = [Path(p).name or p for p in parameters.get("paths") or []]
        what = ", ".join(paths[:2]) + (f" and {len(paths) - 2} more" if len(paths) > 2 else "")
    return f"top {parameters.get('top', 10)} of {what}"[:200]


def _artifact_key(kind: str) -> str:
    """Artifact keys per deployment (their history in the UI is that deployment's), or ad hoc."""
    scope = re.sub(r"[^a-z0-9]+", "-", (current_deployment.name or "adhoc").lower()).strip("-") or "adhoc"
    return f"topn-{kind}-{scope}"


@flow(
    name="topn",
    flow_run_name=_run_name,
    on_cancellation=[_on_cancellation],
    log_prints=True,
    persist_result=True,  # the TopnResult can be read back: state.result(), the UI, run_deployment callers
    result_serializer="json",
)
def topn(
    paths: list[str] | None = None,
    top: Annotated[int, Field(ge=1, le=10_000)] = 10,
    blob_prefix: str | None = None,
    run_id: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    delete_job: bool = True,
    delete_pool: bool = False,
    delete_uploads: bool = False,
    delete_outputs: bool = False,
    files_per_task: Annotated[int | None, Field(ge=1, le=10_000)] = None,
    bytes_per_task: ByteSize | None = None,
    batch_credentials: str | None = None,
    storage_credentials: str | None = None,
    pool_mode: Literal["keep", "autoscale"] | None = None,
) -> TopnResult:
    """Counts words across files with Azure Batch: local `paths` (files or folders) are uploaded; or, with
    `blob_prefix`, the blobs already in the input container are counted (what scheduled runs do). Files are
    packed into tasks of at most `files_per_task` files and `bytes_per_task` bytes (settings by default).
    `batch_credentials` / `storage_credentials` name an "Azure Batch Credentials" / "Azure Blob Storage
    Credentials" block to use instead of the TOPN_* credentials. `pool_mode` (TOPN_POOL_MODE by default):
    `keep` a fixed-size pool between runs, `autoscale` a pool that grows with the tasks and has no node idle."""
    if bool(paths) == (blob_prefix is not None):
        raise ValueError("give either paths to upload or a blob_prefix already in the input container, not both")
    settings = _settings(batch_credentials, storage_credentials)  # bad settings fail here, before anything is made
    if pool_mode:
        settings = settings.model_copy(update={"pool_mode": pool_mode})
    log, started = get_run_logger(), time.monotonic()
    ensure_crash_detection()
    expiry = datetime.now(UTC) + settings.job_timeout + settings.sas_margin

    preflight.check_access(settings)  # a bad key fails here, before anything is created
    storage.ensure_containers(settings, [settings.app_container, settings.input_container, settings.output_container])
    app_future = storage.upload_taskapp.submit(settings, build_taskapp(settings.local_dir / "cache"))
    if paths:
        inputs = storage.upload_inputs(settings, paths)
    else:
        inputs = storage.list_inputs(settings, settings.input_container, blob_prefix)
    app = app_future.result()
    if not inputs:
        return _nothing_to_count(settings, blob_prefix or "", started)
    # Task ids number the inputs: in one order whatever order they were given in, as the job id is.
    inputs = sorted(inputs, key=lambda i: (i.name, i.container, i.blob, i.version))

    packing = plan.Packing(
        files_per_task or settings.files_per_task, int(bytes_per_task or settings.bytes_per_task), settings.merge_fan_in
    )
    job_id = plan.job_id(inputs, top, run_id, packing)
    layout, run_plan = plan.Layout(job_id), plan.make_plan([i.size for i in inputs], packing)
    # What an earlier attempt of the same inputs finished is not run again. An explicit run id may name other
    # inputs than last time, so only a derived one (a hash of the inputs) trusts storage.
    todo = run_plan.todo(storage.finished_steps(settings, layout, run_plan) if run_id is None else set())
    sas = SasIssuer(settings, blob_service(settings), expiry)
    pool_id, state, added, watch = settings.pool_id, batch.JobState.DONE, 0, None
    if todo:
        pool_id = batch.ensure_pool(settings, app, sas, expiry)
        key = plan.inputs_key(inputs, top, packing)
        state = batch.prepare_job(settings, job_id, pool_id, str(current_run.get_id() or ""), key)
    if state == batch.JobState.CREATED and run_id is not None:  # an explicit id may have served other inputs
        storage.delete_blobs(
            settings,
            settings.output_container,
            storage.list_blob_names(settings, settings.output_container, f"{layout.job}/"),
        )
    if state != batch.JobState.DONE:
        added, watch = _run_job(settings, sas, inputs, run_plan, todo, job_id, pool_id, top, app.version, expiry)
        if watch.ending != monitor.Ending.SUCCEEDED:
            names = {s.id: plan.describe([inputs[i].name for i in s.over]) for s in run_plan.levels[0]}
            _fail(settings, job_id, watch, names, delete_job, run_id is None)
        if not delete_job:  # a kept job is ended, so that a later run with the same inputs reuses its outputs
            batch.terminate_job(settings, job_id, "AllTasksComplete")
    merged, files = _read_result(settings, layout, inputs, run_plan)
    result = TopnResult(
        top=[tuple(p) for p in merged["top"]], words=merged["words"], distinct=merged["distinct"],
        files_counted=merged["files"],
        files=files,
        files_blob=f"{settings.output_container}/{layout.files()}",
        stats=RunStats(job_id=job_id, pool_id=pool_id, files=len(inputs), bytes=sum(s.size for s in inputs),
                       tasks_added=added, reused_job=state == batch.JobState.DONE, polls=watch.polls if watch else 0,
                       seconds=round(time.monotonic() - started, 2)),
    )  # fmt: skip
    _publish(result, settings, layout, len(inputs))
    _clean_up(
        settings,
        job_id,
        pool_id,
        inputs if paths else [],
        layout,
        delete_job and bool(todo),  # no job was made when every output was in storage already
        delete_pool,
        delete_uploads,
        delete_outputs,
    )
    log.info("top %d of %d files in %.1f s: %s", top, len(inputs), result.stats.seconds,
             ", ".join(f"{w} {n:,}" for w, n in result.top))  # fmt: skip
    return result


def _nothing_to_count(settings: TopnSettings, prefix: str, started: float) -> TopnResult:
    """An empty prefix is a run that found nothing to do, not a failure: a scheduled run on a quiet day."""
    where = f"container {settings.input_container!r} under the prefix {prefix!r}"
    create_markdown_artifact(
        f"**Nothing to count**: no blobs in {where}.\n\nPut files there with `topn upload PATH --prefix {prefix}`.",
        key=_artifact_key("result"),
        description="topn found nothing to count",
    )
    get_run_logger().warning("nothing to count: no blobs in %s", where)
    stats = RunStats(job_id="", pool_id=settings.pool_id, files=0, bytes=0, tasks_added=0, reused_job=False, polls=0,
                     seconds=round(time.monotonic() - started, 2))  # fmt: skip
    return TopnResult(top=[], words=0, distinct=0, files_counted=0, files=[], stats=stats)


def _run_job(
    settings: TopnSettings,
    sas: SasIssuer,
    inputs: list[plan.InputBlob],
    run_plan: plan.Plan,
    todo: list,
    job_id: str,
    pool_id: str,
    top: int,
    version: str,
    expiry: datetime,
) -> tuple[int, monitor.Watch]:
    """Adds the tasks still to run and watches the job; returns how many tasks were added, and how it ended.
    Task specs are built and added for at most ADD_GROUP_FILES files at a time: memory stays flat, and each
    merge is added after the tasks it waits for (todo lists children first)."""
    layout, added, total = plan.Layout(job_id), 0, 0
    for group in _groups(todo, ADD_GROUP_FILES):
        n, total = batch.add_tasks(
            settings, job_id, _tasks(settings, sas, inputs, run_plan, group, layout, top, version)
        )
        added += n
    return added, monitor.watch_job(settings, job_id, pool_id, total, expiry - settings.sas_margin)


def _read_result(
    settings: TopnSettings, layout: plan.Layout, inputs: list[plan.InputBlob], run_plan: plan.Plan
) -> tuple[dict, list]:
    """The root merge's result and the files' rows; if storage lost some (e.g. a storage emulator killed
    before it saved them), the job and the partial result go, and the run says to run again."""
    merged, lines = storage.download_result(settings, layout)
    task_of = [""] * len(inputs)
    for step in run_plan.levels[0]:
        for i in step.over:
            task_of[i] = step.id
    files, missing = file_results(lines, [i.name for i in inputs], task_of)
    if merged is None or missing:
        # The job goes even if kept: a finished job would be taken as done by the next run.
        batch.delete_job(settings, layout.job)
        storage.delete_blobs(settings, settings.output_container, [layout.top(), layout.files()])
        raise TopnFailed(
            f"job {layout.job}: outputs went missing from container {settings.output_container!r} "
            f"({'the merged result' if merged is None else f'{missing} of {len(inputs)} files'}): "
            "run again to count them anew"
        )
    return merged, files


def _publish(result: TopnResult, settings: TopnSettings, layout: plan.Layout, files: int) -> None:
    """The result as two table artifacts: the top N, and one row per file (the first FILE_ROWS_SHOWN)."""
    create_table_artifact(
        [{"rank": r, "word": w, "count": n} for r, (w, n) in enumerate(result.top, 1)],
        key=_artifact_key("result"),
        description=f"Top {len(result.top)} words of {files} files (job {layout.job})",
    )
    shown = result.files[:FILE_ROWS_SHOWN]
    create_table_artifact(
        [{"file": f.name, "words": f.words, "distinct": f.distinct, "skipped": f.skipped or "",
          "top word": f"{f.top[0][0]} ({f.top[0][1]})" if f.top else ""} for f in shown],
        key=_artifact_key("files"),
        description=f"Each file of job {layout.job}" if len(shown) == files else
        f"The first {len(shown):,} of {files:,} files of job {layout.job}: every file is in the flow's result, "
        f"and in blob {settings.output_container}/{layout.files()} unless the outputs were deleted",
    )  # fmt: skip


def _groups(todo: list, files: int) -> list[list]:
    """The steps to run, cut into groups whose count tasks hold at most `files` files."""
    groups: list[list] = [[]]
    held = 0
    for entry in todo:
        size = len(entry[0].over) if entry[0].level == 0 else 0
        if held and held + size > files:
            groups.append([])
            held = 0
        groups[-1].append(entry)
        held += size
    return groups


def _tasks(
    settings: TopnSettings,
    sas: SasIssuer,
    inputs: list[plan.InputBlob],
    run_plan: plan.Plan,
    todo: list[tuple[plan.Step, list[plan.Step]]],
    layout: plan.Layout,
    top: int,
    version: str,
) -> list:
    """The Batch tasks for the steps still to run: counts read their inputs with read-only blob SAS, merges the
    parts with a read+list container SAS; all write with a create+write container SAS."""
    output_url = sas.container(settings.output_container, "cw")
    parts_url = sas.container(settings.output_container, "rl")
    tasks = []
    for step, waits in todo:
        if step.level == 0:
            sources = [
                plan.Source(i + 1, inputs[i], sas.blob_read(inputs[i].container, inputs[i].blob)) for i in step.over
            ]
            tasks.append(plan.count_task(step, sources, output_url, layout, run_plan, top, version))
        else:
            tasks.append(plan.merge_task(step, waits, parts_url, output_url, layout, run_plan, top, version))
    return tasks


def _fail(
    settings: TopnSettings, job_id: str, watch: monitor.Watch, names: dict[str, str], delete: bool, resumable: bool
) -> None:
    batch.terminate_job(settings, job_id, f"Topn{watch.ending.title().replace(' ', '')}")
    failures = monitor.collect_failures(settings, job_id, names)
    lines = [f"job {job_id} {watch.ending}: {watch.completed} of {watch.total} tasks completed"]
    if watch.detail:
        lines.append(f"  {watch.detail}")
    lines += [f.describe() for f in failures if f.task_id != plan.MERGE_ID or len(failures) == 1]
    if resumable:
        lines.append("  files counted so far are kept: running the same command again counts only the others")
    if delete:
        batch.delete_job(settings, job_id)
    raise TopnFailed(redact("\n".join(lines)))


def _clean_up(
    settings: TopnSettings,
    job_id: str,
    pool_id: str,
    uploads: list[plan.InputBlob],
    layout: plan.Layout,
    delete_job: bool,
    delete_pool: bool,
    delete_uploads: bool,
    delete_outputs: bool,
) -> None:
    if delete_job:
        batch.delete_job(settings, job_id)
    if delete_pool:
        batch.delete_pool(settings, pool_id)
    if delete_uploads and uploads:
        storage.delete_blobs(settings, settings.input_container, [u.blob for u in uploads])
    if delete_outputs:
        names = storage.list_blob_names(settings, settings.output_container, f"{layout.job}/")
        storage.delete_blobs(settings, settings.output_container, names)


DEFAULT_SAMPLE = str(Path(__file__).resolve().parent.parent / "data" / "sample")
