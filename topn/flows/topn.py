"""The `topn` flow: the classic Azure Batch "top N words" workload, each step a retryable Prefect task."""

# No `from __future__ import annotations` here: Prefect builds its parameter model from these annotations
# when a runner loads the flow, and string annotations of Annotated[...] cannot be resolved there.
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, get_args

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run as current_run
from pydantic import ByteSize, Field

from topn.flows import runs, wordcount
from topn.flows.crashes import ensure_crash_detection
from topn.flows.result import RunStats, TopnResult, file_results
from topn.flows.runs import RUN_ID, blank
from topn.flows.taskapp import taskapp_files
from topn.tasks import batch, lineage, monitor, preflight, storage
from topn.tasks.application import AppBlobs
from topn.tasks.clients import blob_service
from topn.tasks.inputs import InputBlob, InputList, describe
from topn.tasks.monitor import TopnFailed
from topn.tasks.packing import Packing
from topn.tasks.sas import SasIssuer
from topn.tasks.settings import PoolMode, TopnSettings


class _OwnFailureWithoutTraceback(logging.Filter):
    """Prefect's engine logs a run's exception as its repr and traceback, and the final state's repr after it.
    topn's own TopnFailed is a message for the user, with nothing to debug in the frames: the task run that
    raised it logs it as it reads, the flow run its one-line summary (the rest is in that task run, just
    above), and each "Finished in state Failed" without repeating it."""

    def __init__(self, whole: bool) -> None:
        super().__init__()
        self.whole = whole

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TopnFailed):
            text = str(error) if self.whole else error.summary
            record.msg, record.args, record.exc_info, record.exc_text = "%s", (text,), None, None
        elif (
            isinstance(record.msg, str)
            and record.msg.startswith("Finished in state Failed(")
            and ("TopnFailed" in record.msg)
        ):  # the state's repr repeats the whole message, line breaks as \n: it was just logged as it reads
            record.msg, record.args = "Finished in state Failed", ()
            record.levelno, record.levelname = logging.ERROR, "ERROR"
        return True


logging.getLogger("prefect.task_runs").addFilter(_OwnFailureWithoutTraceback(whole=True))
logging.getLogger("prefect.flow_runs").addFilter(_OwnFailureWithoutTraceback(whole=False))

BYTE_SIZE = r"^\s*\d+(\.\d+)?\s*[A-Za-z]*\s*$"  # what pydantic's ByteSize reads, e.g. 64MiB or 1000000
ADD_GROUP_FILES = 10_000  # files whose task specs are built and added at once
FILE_ROWS_SHOWN = 1_000  # rows of the per-file table artifact: a UI table, not a data export


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


def _found(what: str) -> None:
    """A scheduled run's name, once its listing is known, says what it found: the runs of a deployment all
    count the same prefix, and would otherwise be the same line in the runs list. Best effort: a name."""
    run_id = current_run.get_id()
    if not run_id or current_run.parameters.get("blob_prefix") is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, name=f"{_run_name()} ({what})"[:200])
    except Exception as e:  # the run's work is done either way: say why the name stayed
        get_run_logger().warning("could not rename the flow run: %s", e)


@flow(
    name="topn",
    flow_run_name=_run_name,
    on_cancellation=[runs.cancel_jobs(TopnSettings)],
    log_prints=True,
    persist_result=True,  # the TopnResult can be read back: state.result(), the UI, run_deployment callers
    result_serializer="json",
)
def topn(
    paths: Annotated[list[str] | None, blank(type="array", items={"type": "string"})] = None,
    top: Annotated[int, Field(ge=1, le=10_000)] = 10,
    blob_prefix: Annotated[str | None, blank(type="string")] = None,
    run_id: Annotated[str | None, Field(pattern=RUN_ID), blank(type="string", pattern=RUN_ID)] = None,
    delete_job: bool = True,
    delete_pool: bool = False,
    delete_uploads: bool = False,
    delete_outputs: bool = False,
    files_per_task: Annotated[
        int | None, Field(ge=1, le=10_000), blank(type="integer", minimum=1, maximum=10_000)
    ] = None,
    bytes_per_task: Annotated[ByteSize | None, blank(type="string", pattern=BYTE_SIZE)] = None,
    batch_credentials: Annotated[str | None, blank(type="string")] = None,
    storage_credentials: Annotated[str | None, blank(type="string")] = None,
    pool_mode: Annotated[PoolMode | None, blank(type="string", enum=list(get_args(PoolMode)))] = None,
) -> TopnResult:
    """Counts words across files with Azure Batch: the global top N and every file's own counts. Give either
    local paths to upload or a blob prefix already in the input container (what scheduled runs do).

    Args:
        paths: Local files or folders to upload and count (a folder's files recursively).
        top: How many of the most frequent words to report (N).
        blob_prefix: Count the blobs under this prefix of the input container instead, e.g. incoming/.
        run_id: A Batch job id to use: a clean start that counts everything anew (default: derived from
            the inputs, so that a re-run resumes and reuses what is in storage).
        delete_job: Delete the Batch job when the run ends.
        delete_pool: Delete the pool when the run ends (a later run then waits for new nodes).
        delete_uploads: Delete the blobs this run uploaded from local paths.
        delete_outputs: Forget this series of runs and remove the outputs only it uses.
        files_per_task: Files one count task takes at most (TOPN_FILES_PER_TASK by default).
        bytes_per_task: Bytes one count task takes at most, e.g. 64MiB or 1000000 (TOPN_BYTES_PER_TASK by
            default).
        batch_credentials: Name of an "Azure Batch Credentials" block to use instead of TOPN_* credentials.
        storage_credentials: Name of an "Azure Blob Storage Credentials" block to use instead.
        pool_mode: keep (a fixed pool kept between runs), autoscale (nodes only while runs need them) or
            per-job (a pool of the run's own, gone with its job); TOPN_POOL_MODE by default.
    """
    if bool(paths) == (blob_prefix is not None):
        raise ValueError("give either paths to upload or a blob_prefix already in the input container, not both")
    settings = runs.settings(
        TopnSettings, batch_credentials, storage_credentials
    )  # bad settings fail here, before anything is made
    settings = settings.with_pool_mode(pool_mode or settings.pool_mode)
    log, started = get_run_logger(), time.monotonic()
    ensure_crash_detection()
    expiry = datetime.now(UTC) + settings.job_timeout + settings.sas_margin

    preflight.check_access(settings)  # a bad key fails here, before anything is created
    storage.ensure_containers(settings, [settings.app_container, settings.input_container, settings.output_container])
    if blob_prefix is not None:  # a quiet day is found before the task application is built or sent
        inputs = _ordered(storage.list_inputs(settings, settings.input_container, blob_prefix))
        if not inputs:
            return _nothing_to_count(settings, blob_prefix, started)
    app_future = storage.upload_app.submit(settings, taskapp_files())
    if paths:  # read and keyed by content here; sent once planned, only those a task reads
        inputs = _ordered(storage.read_inputs(settings, paths))
    app = app_future.result()
    packing = Packing(
        files_per_task or settings.files_per_task, int(bytes_per_task or settings.bytes_per_task), settings.merge_fan_in
    )
    source = _source(settings, paths, blob_prefix)
    line = lineage.lineage_id(source, top, packing)
    catalog = storage.read_catalog(settings, line)
    sas = SasIssuer(settings, blob_service(settings), expiry)
    for _ in range(MOVED_ROUNDS):
        run = _count(
            settings, sas, app, inputs, catalog, source, line, packing, top, run_id, delete_job, expiry, bool(paths)
        )
        if paths or not run.counted:  # uploads are content-addressed: they never change under a run
            break
        moved = storage.moved_blobs(settings, [inputs[i] for i in run.read], sorted(i.blob for i in inputs))
        if not moved:
            break
        log.warning(
            "%d blobs changed while they were counted (%s): counting them again as they are now",
            len(moved),
            describe(moved),
        )
        listed = storage.list_inputs(settings, settings.input_container, blob_prefix)
        if not listed:
            return _nothing_to_count(settings, blob_prefix or "", started)
        inputs, catalog = _ordered(listed), run.catalog
    else:
        raise TopnFailed(
            f"blobs under {blob_prefix!r} kept changing while they were counted ({MOVED_ROUNDS} "
            "times): run again when they stay as they are"
        )
    merged, files = _read_result(settings, run, inputs)
    # Retention while the result is published (it never touches this run's outputs), unless it is to remove
    # them: then after. Not beside reading the result: both hold a file's worth per input for a moment.
    retention = None if delete_outputs else storage.remove_stale_outputs.submit(settings, set(run.catalog.keys))
    stats = RunStats(
        job_id=run.job_id,
        pool_id=run.pool_id,
        files=len(inputs),
        bytes=sum(s.size for s in inputs),
        tasks_added=run.added,
        reused_job=run.reused,
        polls=run.polls,
        seconds=round(time.monotonic() - started, 2),
        new=run.changes.new,
        changed=run.changes.changed,
        deleted=run.changes.deleted,
        counted=run.counted,
        reused=len(inputs) - run.counted,
        count_tasks=run.tasks[0],
        merge_tasks=run.tasks[1],
    )
    files_blob = wordcount.result_blobs(run.plan.root.key)[1]
    result = TopnResult(
        top=[tuple(p) for p in merged["top"]],
        words=merged["words"],
        distinct=merged["distinct"],
        files_counted=merged["files"],
        files=files,
        files_blob=f"{settings.output_container}/{files_blob}",
        stats=stats,
    )
    _publish(result, settings, run.job_id, files_blob, len(inputs))
    _publish_links(result, settings, blob_prefix)
    _found(
        f"{runs.plural(len(inputs), 'file')}, {stats.new:,} new, {stats.changed:,} changed, {stats.deleted:,} deleted"
    )
    _clean_up(settings, run, line, inputs if paths else [], delete_pool, delete_uploads, delete_outputs)
    if retention is not None:
        retention.result()
    log.info(
        "top %d of %d files in %.1f s (%s): %s",
        top,
        len(inputs),
        stats.seconds,
        stats.reuse_line(),
        ", ".join(f"{w} {n:,}" for w, n in result.top),
    )
    return result


MOVED_ROUNDS = 3  # plans made anew when listed blobs changed while they were counted


@dataclass(frozen=True)
class _Counted:
    """One plan carried out: its packs and plan, what the job did, and what the inputs were to the lineage."""

    plan: wordcount.Plan
    catalog: lineage.Catalog
    changes: lineage.Changes
    job_id: str
    pool_id: str
    read: tuple[int, ...]  # positions of the inputs read by count tasks of this run, in order (no set: 4 MB less)
    tasks: tuple[int, int]  # count tasks and merge tasks this run ran
    added: int
    polls: int
    reused: bool

    @property
    def counted(self) -> int:
        return len(self.read)


def _ordered(inputs: Sequence[InputBlob]) -> list[InputBlob]:
    """In one order whatever order they were given or listed in: new files are packed in this order."""
    return sorted(inputs, key=lambda i: (i.name, i.container, i.blob, i.version))


def _source(settings: TopnSettings, paths: list[str] | None, blob_prefix: str | None) -> str:
    """What a series of runs counts: a prefix of the input container, or a set of local paths."""
    if paths:
        return "paths:" + json.dumps(sorted(str(Path(p).expanduser().resolve()) for p in paths))
    return f"prefix:{settings.input_container}/{blob_prefix}"


@dataclass(frozen=True)
class _Edits:
    """What a job's steps are made from besides their inputs: earlier merges (`merges`) and packs (`packs`)
    to edit, and the combined packs whose members file is joined from their packs' (`joined`)."""

    merges: dict[str, wordcount.Edit]
    packs: dict[str, wordcount.PackEdit]
    joined: frozenset[str]


def _count(
    settings: TopnSettings,
    sas: SasIssuer,
    app: AppBlobs,
    inputs: list[InputBlob],
    catalog: lineage.Catalog,
    source: str,
    line: str,
    packing: Packing,
    top: int,
    run_id: str | None,
    delete_job: bool,
    expiry: datetime,
    local: bool,
) -> _Counted:
    """Plans the run against the lineage's catalog and runs what storage does not hold yet: a pack whose
    output any earlier run left (by content key) is not counted again, a finished merge needs nothing below it.
    `local`: the inputs are local files, of which those its tasks read are uploaded before the job."""
    packs, changes = lineage.arrange(inputs, catalog, packing)
    run_plan = wordcount.make_plan(inputs, packs, top, app.version, packing)
    # An explicit run id is a clean start: everything is counted anew (refreshing the outputs later runs reuse).
    done = storage.finished_outputs(settings, run_plan.root.key, wordcount.finished) if run_id is None else set()
    edits = wordcount.edits(run_plan, wordcount.earlier_tree(catalog, top, app.version, packing), done)
    repacks = wordcount.pack_edits(run_plan, inputs, catalog, done, top, app.version)
    todo = run_plan.todo(done, edits)
    new_catalog = lineage.catalog_of(source, inputs, packs, wordcount.output_keys(run_plan, edits, repacks))
    if new_catalog != catalog:  # saved before the job: what it makes is referenced while it runs
        storage.write_catalog(settings, line, new_catalog)
    job_id = run_id or f"topn-{run_plan.root.key[:16]}"
    counted = sum(len(_reads(step, repacks)) for step, _ in todo if step.kind == wordcount.COUNT)
    if counted < len(inputs):
        get_run_logger().info(
            "%d of %d files have outputs in storage already: not counting them again",
            len(inputs) - counted,
            len(inputs),
        )
    if edited := [(step, e) for step, _ in todo if (e := edits.get(step.id))]:
        reads = sum(1 + len(e.drops) + len(e.adds) for _, e in edited)
        children = sum(len(step.children) for step, _ in edited)
        get_run_logger().info(
            "%s made from %s last output: reading %d parts, not %d",
            runs.plural(len(edited), "merge"),
            "their" if len(edited) > 1 else "its",
            reads,
            children,
        )
    if edited_packs := [(step, e) for step, _ in todo if (e := repacks.get(step.id))]:
        get_run_logger().info(
            "%s made from %s last output: counting %d files, not %d",
            runs.plural(len(edited_packs), "pack"),
            "their" if len(edited_packs) > 1 else "its",
            sum(len(e.adds) for _, e in edited_packs),
            sum(len(step.inputs) for step, _ in edited_packs),
        )
    if local:  # before the job: a failed upload leaves none behind
        _upload(settings, inputs, todo, repacks)
    pool_id, state, added, watch = settings.pool_id, batch.JobState.DONE, 0, None
    if todo:
        job = (job_id, str(current_run.get_id() or ""), run_plan.root.key, wordcount.MERGE_ID)
        pool_id, state = batch.pool_and_job(settings, app, sas, expiry, job)
    if state == batch.JobState.CREATED and run_id is not None:  # an explicit id: logs of another run's failures
        storage.delete_blobs(
            settings,
            settings.output_container,
            storage.list_blob_names(settings, settings.output_container, f"{job_id}/"),
        )
    if state != batch.JobState.DONE:
        made_from = _Edits(edits, repacks, wordcount.joinable(todo, done))
        added, watch = _run_job(
            settings, sas, inputs, run_plan, todo, made_from, job_id, pool_id, top, app.version, expiry
        )
        if watch.ending != monitor.Ending.SUCCEEDED:
            names = {s.id: describe([inputs[i].name for i in s.inputs]) for s in run_plan.counts}
            kept = "files counted so far are kept: running the same command again counts only the others"
            runs.fail(settings, job_id, pool_id, watch, names, delete_job, runs.artifact_key("failures"), kept)
        if delete_job:
            batch.delete_job(settings, job_id)
        else:  # a kept job is ended, so that a later run with the same inputs reuses its outputs
            batch.terminate_job(settings, job_id, "AllTasksComplete")
    elif todo and delete_job:
        batch.delete_job(settings, job_id)
    ran = [step for step, _ in todo] if state != batch.JobState.DONE else []
    read = tuple(sorted({i for step in ran if step.kind == wordcount.COUNT for i in _reads(step, repacks)}))
    counts = sum(step.kind == wordcount.COUNT for step in ran)
    return _Counted(
        run_plan,
        new_catalog,
        changes,
        job_id,
        pool_id,
        read,
        (counts, len(ran) - counts),
        added,
        watch.polls if watch else 0,
        state == batch.JobState.DONE,
    )


def _nothing_to_count(settings: TopnSettings, prefix: str, started: float) -> TopnResult:
    """An empty prefix is a run that found nothing to do, not a failure: a scheduled run on a quiet day."""
    where = f"container {settings.input_container!r} under the prefix {prefix!r}"
    create_markdown_artifact(
        f"**Nothing to count**: no blobs in {where}.\n\nPut files there with `topn upload PATH --prefix {prefix}`.",
        key=runs.artifact_key("result"),
        description="topn found nothing to count",
    )
    get_run_logger().warning("nothing to count: no blobs in %s", where)
    _found("nothing to count")
    stats = RunStats(
        job_id="",
        pool_id=settings.pool_id,
        files=0,
        bytes=0,
        tasks_added=0,
        reused_job=False,
        polls=0,
        seconds=round(time.monotonic() - started, 2),
    )
    return TopnResult(top=[], words=0, distinct=0, files_counted=0, files=[], stats=stats)


def _upload(settings: TopnSettings, inputs: list[InputBlob], todo: list, packs: dict[str, wordcount.PackEdit]) -> None:
    """Sends the local files that the steps to run read (of an edited pack, its additions): a file whose
    output storage holds already is not sent again."""
    reads = [inputs[i] for step, _ in todo if step.kind == wordcount.COUNT for i in _reads(step, packs)]
    if reads:
        storage.upload_inputs(settings, InputList(reads))


def _run_job(
    settings: TopnSettings,
    sas: SasIssuer,
    inputs: list[InputBlob],
    run_plan: wordcount.Plan,
    todo: list,
    edits: _Edits,
    job_id: str,
    pool_id: str,
    top: int,
    version: str,
    expiry: datetime,
) -> tuple[int, monitor.Watch]:
    """Adds the tasks still to run and watches the job; returns how many tasks were added, and how it ended.
    Task specs are built and added for at most ADD_GROUP_FILES files at a time: memory stays flat, and each
    merge is added after the tasks it waits for (todo lists children first)."""
    added, total = 0, 0
    for group in _groups(todo, ADD_GROUP_FILES):
        n, total = batch.add_tasks(
            settings, job_id, _tasks(settings, sas, inputs, run_plan, group, edits, job_id, top, version)
        )
        added += n
    return added, monitor.watch_job(settings, job_id, pool_id, total, expiry - settings.sas_margin)


def _read_result(settings: TopnSettings, run: _Counted, inputs: list[InputBlob]) -> tuple[dict, list]:
    """The root merge's result and the files' rows; if storage lost some (e.g. a storage emulator killed
    before it saved them), the job and the partial result go, and the run says to run again."""
    root = run.plan.root.key
    task_of = [""] * len(inputs)
    for step in run.plan.counts:
        for i in step.inputs:
            task_of[i] = step.id
    with tempfile.TemporaryDirectory(prefix="topn-result-") as folder:
        top, lines = storage.download_outputs(settings, list(wordcount.result_blobs(root)), run.job_id, folder)
        merged = json.loads(Path(top).read_bytes()) if top is not None and lines is not None else None
        with open(lines or os.devnull, "rb") as rows:  # line by line: never every file's row at once
            files, missing = file_results(rows, [i.row_key for i in inputs], [i.name for i in inputs], task_of)
    if merged is None or missing:
        # The job goes even if kept: a finished job would be taken as done by the next run.
        batch.delete_job(settings, run.job_id)
        storage.delete_blobs(settings, settings.output_container, list(wordcount.result_blobs(root)))
        raise TopnFailed(
            f"job {run.job_id}: outputs went missing from container {settings.output_container!r} "
            f"({'the merged result' if merged is None else f'{missing} of {len(inputs)} files'}): "
            "run again to count them anew"
        )
    return merged, files


def _publish(result: TopnResult, settings: TopnSettings, job_id: str, files_blob: str, files: int) -> None:
    """The result as two table artifacts: the top N, and one row per file (the first FILE_ROWS_SHOWN)."""
    create_table_artifact(
        [{"rank": r, "word": w, "count": n} for r, (w, n) in enumerate(result.top, 1)],
        key=runs.artifact_key("result"),
        description=f"Top {len(result.top)} words of {files:,} files ({result.stats.reuse_line()}; job {job_id})",
    )
    shown = result.files[:FILE_ROWS_SHOWN]
    create_table_artifact(
        [
            {
                "file": f.name,
                "bytes": f"{f.bytes:,}",
                "words": f"{f.words:,}",
                "distinct": f"{f.distinct:,}",
                "skipped": f.skipped or ("empty" if f.bytes == 0 else ""),
                "top word": f"{f.top[0][0]} ({f.top[0][1]:,})" if f.top else "",
                "task": f.task_id,
            }
            for f in shown
        ],
        key=runs.artifact_key("files"),
        description=f"Each file of job {job_id}"
        if len(shown) == files
        else f"The first {len(shown):,} of {files:,} files of job {job_id}: every file is in the flow's result, "
        f"and in blob {settings.output_container}/{files_blob} unless the outputs were deleted",
    )


def _publish_links(result: TopnResult, settings: TopnSettings, blob_prefix: str | None) -> None:
    """Where this run's things are, as links (the account's own endpoints: on Azure, open them with Batch
    Explorer or Storage Explorer signed in; locally, the emulator and Azurite), and the run's totals. No SAS:
    nothing here grants access."""
    stats, blob_url = result.stats, settings.blob_url
    inputs = f"{settings.input_container}/{blob_prefix}" if blob_prefix is not None else settings.input_container
    where = [
        *runs.batch_links(settings, stats.job_id, stats.pool_id),
        ("inputs", inputs, runs.listing_url(settings, settings.input_container, blob_prefix or "")),
        ("every file's row", result.files_blob, f"{blob_url}/{result.files_blob}"),
        ("outputs", settings.output_container, runs.listing_url(settings, settings.output_container)),
    ]
    lines = runs.link_table(where)
    lines += [
        "",
        f"{runs.plural(stats.files, 'file')} ({stats.bytes:,} bytes): {stats.reuse_line()}; "
        f"{runs.plural(result.words, 'word')}, {result.distinct:,} distinct; "
        f"{runs.plural(stats.count_tasks, 'count task')} and {runs.plural(stats.merge_tasks, 'merge task')} "
        f"in {stats.seconds:.1f} s",
    ]
    create_markdown_artifact(
        "\n".join(lines), key=runs.artifact_key("links"), description=f"Where job {stats.job_id} is"
    )


def _groups(todo: list, files: int) -> list[list]:
    """The steps to run, cut into groups whose count tasks hold at most `files` files."""
    groups: list[list] = [[]]
    held = 0
    for entry in todo:
        size = len(entry[0].inputs) if entry[0].kind == wordcount.COUNT else 0
        if held and held + size > files:
            groups.append([])
            held = 0
        groups[-1].append(entry)
        held += size
    return groups


def _reads(step: wordcount.Step, packs: dict[str, wordcount.PackEdit]) -> tuple[int, ...]:
    """The inputs a count step downloads and counts: an edited pack's additions only."""
    return packs[step.id].adds if step.id in packs else step.inputs


def _tasks(
    settings: TopnSettings,
    sas: SasIssuer,
    inputs: list[InputBlob],
    run_plan: wordcount.Plan,
    todo: list[tuple[wordcount.Step, list[wordcount.Step]]],
    edits: _Edits,
    job_id: str,
    top: int,
    version: str,
) -> list:
    """The Batch tasks for the steps still to run: counts read their inputs with read-only blob SAS, merges the
    parts with a read-only container SAS; all write with a create+write container SAS."""
    output_url = sas.container(settings.output_container, "cw")
    parts_url = sas.container(settings.output_container, "r")
    tasks = []
    for step, waits in todo:
        if step.kind == wordcount.COUNT:
            repack = edits.packs.get(step.id)
            reads = _reads(step, edits.packs)
            sources = [wordcount.Source(inputs[i], sas.blob_read(inputs[i].container, inputs[i].blob)) for i in reads]
            urls = (output_url, parts_url)
            tasks.append(wordcount.count_task(step, sources, urls, job_id, run_plan, top, version, repack))
        else:
            edit, joined = edits.merges.get(step.id), step.id in edits.joined
            tasks.append(wordcount.merge_task(step, waits, parts_url, output_url, job_id, top, version, edit, joined))
    return tasks


def _clean_up(
    settings: TopnSettings,
    run: _Counted,
    line: str,
    uploads: list[InputBlob],
    delete_pool: bool,
    delete_uploads: bool,
    delete_outputs: bool,
) -> None:
    """What the run's flags ask for: `delete_outputs` forgets this lineage and removes its outputs that no
    other lineage references (retention, which otherwise runs beside reading the result)."""
    if delete_pool:
        batch.delete_pool(settings, run.pool_id)
    if delete_uploads and uploads:
        storage.delete_blobs(settings, settings.input_container, [u.blob for u in uploads])
    if delete_outputs:
        storage.remove_stale_outputs(settings, set(run.catalog.keys), forget=line)


DEFAULT_SAMPLE = str(Path(__file__).resolve().parents[2] / "data" / "sample")  # in a checkout only
