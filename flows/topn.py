"""The `topn` flow: the classic Azure Batch "top N words" workload, each step a retryable Prefect task."""

# No `from __future__ import annotations` here: Prefect builds its parameter model from these annotations
# when a runner loads the flow, and string annotations of Annotated[...] cannot be resolved there.
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run as current_run
from pydantic import Field

from flows.crashes import ensure_crash_detection
from flows.result import FileResult, RunStats, TopnResult
from tasks import batch, monitor, plan, preflight, storage
from tasks.clients import blob_service
from tasks.sas import SasIssuer, redact
from tasks.settings import TopnSettings, load_settings
from tasks.taskapp import build_taskapp


class TopnFailed(RuntimeError):
    """The run did not produce a result; the message says which files and why."""


def _on_cancellation(flow: object, flow_run: object, state: object) -> None:
    """Cancelling the flow run terminates its Batch jobs. The runner calls this hook, by keyword."""
    settings = load_settings()
    for job_id in batch.jobs_of_flow_run(settings, str(flow_run.id)):
        batch.terminate_job.fn(settings, job_id, "TopnFlowRunCancelled")


@flow(name="topn", on_cancellation=[_on_cancellation], log_prints=True)
def topn(
    paths: list[str] | None = None,
    top: Annotated[int, Field(ge=1, le=10_000)] = 10,
    blob_prefix: str | None = None,
    run_id: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    delete_job: bool = True,
    delete_pool: bool = False,
    delete_uploads: bool = False,
    delete_outputs: bool = False,
) -> TopnResult:
    """Counts words across files with Azure Batch: local `paths` (files or folders) are uploaded; or, with
    `blob_prefix`, the blobs already in the input container are counted (what scheduled runs do)."""
    if bool(paths) == (blob_prefix is not None):
        raise ValueError("give either paths to upload or a blob_prefix already in the input container, not both")
    settings = load_settings()  # bad settings fail here, before anything is created
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
    # Task ids number the inputs: in one order whatever order they were given in, as the job id is.
    inputs = sorted(inputs, key=lambda i: (i.name, i.container, i.blob, i.version))

    job_id = plan.job_id(inputs, top, run_id)
    layout = plan.Layout(job_id)
    sas = SasIssuer(settings, blob_service(settings), expiry)
    pool_id = batch.ensure_pool(settings, app, sas, expiry)
    state = batch.prepare_job(settings, job_id, pool_id, str(current_run.get_id() or ""), plan.inputs_key(inputs, top))
    if state == batch.JobState.CREATED and run_id is not None:  # an explicit id may have served other inputs
        storage.delete_blobs(
            settings,
            settings.output_container,
            storage.list_blob_names(settings, settings.output_container, f"{layout.job}/"),
        )
    files = {str(i): source for i, source in enumerate(inputs, start=1)}
    added, watch = 0, None
    if state != batch.JobState.DONE:
        # Files counted by an earlier attempt of the same inputs are not counted again. An explicit run id
        # may name other inputs than last time, so only a derived one (a hash of the inputs) trusts storage.
        finished = storage.finished_tasks(settings, layout) if run_id is None else set()
        todo = [i for i in files if i not in finished]
        output_url = sas.container(settings.output_container, "cw")
        tasks = [
            plan.count_task(int(i), files[i], sas.blob_read(files[i].container, files[i].blob), output_url, layout,
                            top, app.version)
            for i in todo
        ]  # fmt: skip
        tasks.append(
            plan.merge_task(
                [int(i) for i in todo],
                sas.container(settings.output_container, "rl"),
                output_url,
                layout,
                top,
                app.version,
            )
        )
        added, total = batch.add_tasks(settings, job_id, tasks)
        watch = monitor.watch_job(settings, job_id, pool_id, total, expiry - settings.sas_margin)
        if watch.ending != monitor.Ending.SUCCEEDED:
            _fail(settings, job_id, watch, {i: s.name for i, s in files.items()}, delete_job, run_id is None)
        if not delete_job:  # a kept job is ended, so that a later run with the same inputs reuses its outputs
            batch.terminate_job(settings, job_id, "AllTasksComplete")

    outputs = storage.download_json(settings, [layout.top()] + [layout.result(i) for i in files])
    merged = outputs.get(layout.top())
    missing = [files[i].name for i in files if layout.result(i) not in outputs]
    if merged is None or missing or merged["files"] != len(files):
        # Storage lost outputs the tasks wrote (e.g. a storage emulator killed before it saved them). The
        # job goes even if kept: a finished job would be taken as done by the next run.
        batch.delete_job(settings, job_id)
        raise TopnFailed(
            f"job {job_id}: outputs went missing from container {settings.output_container!r} "
            f"({len(missing)} files' results{', and the merged counts' if merged is None else ''}; the merge "
            f"counted {merged['files'] if merged else 0} of {len(files)} files): run again to count them anew"
        )
    result = TopnResult(
        top=[tuple(p) for p in merged["top"]], words=merged["words"], distinct=merged["distinct"],
        files_counted=merged["files"],
        files=[FileResult(name=s.name, task_id=i, **{k: v for k, v in outputs[layout.result(i)].items() if k != "file"})
               for i, s in files.items()],
        stats=RunStats(job_id=job_id, pool_id=pool_id, files=len(files), bytes=sum(s.size for s in inputs),
                       tasks_added=added, reused_job=state == batch.JobState.DONE, polls=watch.polls if watch else 0,
                       seconds=round(time.monotonic() - started, 2)),
    )  # fmt: skip
    create_table_artifact(
        [{"rank": r, "word": w, "count": n} for r, (w, n) in enumerate(result.top, 1)],
        key="topn-result",
        description=f"Top {top} words of {len(files)} files (job {job_id})",
    )
    create_table_artifact(
        [{"file": f.name, "words": f.words, "distinct": f.distinct, "skipped": f.skipped or "",
          "top word": f"{f.top[0][0]} ({f.top[0][1]})" if f.top else ""} for f in result.files],
        key="topn-files",
        description=f"Each file of job {job_id}",
    )  # fmt: skip
    _clean_up(
        settings,
        job_id,
        pool_id,
        inputs if paths else [],
        layout,
        delete_job,
        delete_pool,
        delete_uploads,
        delete_outputs,
    )
    log.info("top %d of %d files in %.1f s:\n%s", top, len(files), result.stats.seconds, result.table())
    return result


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
