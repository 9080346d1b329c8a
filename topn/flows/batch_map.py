"""The `batch-map` flow: a command run over every blob under a prefix on Azure Batch, one output per input.

The second workload on the generic Batch steps (tasks/), beside the word count: it packs, adds, watches,
recovers, resumes, reuses and cleans up as that does, with no step written for it (flows/mapping.py holds
what is its own: the command line and where outputs go).
"""

# No `from __future__ import annotations` here: Prefect builds its parameter model from these annotations.
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, get_args

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run as current_run
from pydantic import BaseModel, Field

from topn.flows import mapping, runs
from topn.flows.runs import RUN_ID, blank
from topn.tasks import batch, lineage, monitor, preflight, storage
from topn.tasks.application import AppBlobs, nothing_installed
from topn.tasks.clients import blob_service
from topn.tasks.inputs import InputBlob, describe
from topn.tasks.monitor import TopnFailed
from topn.tasks.packing import Packing
from topn.tasks.sas import SasIssuer
from topn.tasks.settings import PoolMode

MOVED_ROUNDS = 3  # plans made anew when listed blobs changed while their tasks read them
OUTPUT_ROWS_SHOWN = 1_000


class MapStats(BaseModel):
    job_id: str
    pool_id: str
    inputs: int
    new: int = 0
    changed: int = 0
    deleted: int = 0
    ran: int = 0  # inputs whose command ran in this run
    reused: int = 0  # inputs whose output an earlier run made
    tasks: int = 0
    seconds: float = 0.0


class MapResult(BaseModel):
    """Every input's output blob (in the output container), and what the run did."""

    container: str
    outputs: list[tuple[str, str]]  # (input blob, output blob), every input's
    stats: MapStats

    def table(self) -> str:
        s = self.stats
        head = (
            f"{runs.plural(s.inputs, 'input')} -> {self.container}: {s.ran:,} ran, {s.reused:,} reused "
            f"({s.new:,} new, {s.changed:,} changed, {s.deleted:,} deleted) in {s.seconds:.1f} s"
        )
        return "\n".join(
            [head, *(f"  {i} -> {o}" for i, o in self.outputs[:20])]
            + ([f"  ... and {len(self.outputs) - 20:,} more"] if len(self.outputs) > 20 else [])
        )


def _run_name() -> str:
    parameters = current_run.parameters
    return f"map {parameters.get('blob_prefix', '')} -> {parameters.get('output_prefix', '')}"[:200]


@flow(
    name="batch-map",
    flow_run_name=_run_name,
    on_cancellation=[runs.cancel_jobs(mapping.MapSettings)],
    log_prints=True,
    persist_result=True,
    result_serializer="json",
)
def batch_map(
    blob_prefix: str,
    command: str,
    output_prefix: str,
    output_suffix: str = "",
    app: Annotated[str | None, blank(type="string")] = None,
    files_per_task: Annotated[
        int | None, Field(ge=1, le=1_000), blank(type="integer", minimum=1, maximum=1_000)
    ] = None,
    run_id: Annotated[str | None, Field(pattern=RUN_ID), blank(type="string", pattern=RUN_ID)] = None,
    delete_job: bool = True,
    delete_pool: bool = False,
    pool_mode: Annotated[PoolMode | None, blank(type="string", enum=list(get_args(PoolMode)))] = None,
    batch_credentials: Annotated[str | None, blank(type="string")] = None,
    storage_credentials: Annotated[str | None, blank(type="string")] = None,
) -> MapResult:
    """Runs a command over every blob under a prefix of the input container, on Azure Batch: one output
    blob per input in the output container. Outputs of inputs unchanged since an earlier run with the same
    command are reused, not made again.

    Args:
        blob_prefix: The blobs to run the command over, e.g. photos/.
        command: A shell command with {input} (the input's path on the node) and {output} (the path to
            write), e.g. gzip -c {input} > {output}. Leave the placeholders unquoted: topn quotes them.
        output_prefix: Where outputs go in the output container, e.g. thumbnails/: an input photos/a/b.jpg
            gives thumbnails/a/b.jpg plus the suffix.
        output_suffix: Appended to each output's name, e.g. .gz.
        app: A local wheel, zip or tar archive (or single file) the pool's nodes unpack for the command, at
            $TOPN_APP (also on PYTHONPATH, and its bin/ on PATH).
        files_per_task: Inputs one task takes, at most (TOPN_MAP_FILES_PER_TASK by default, 10).
        run_id: A Batch job id to use: a clean start that runs every input again.
        delete_job: Delete the Batch job when the run ends.
        delete_pool: Delete the pool when the run ends.
        pool_mode: keep (a fixed pool kept between runs), autoscale (nodes only while runs need them) or
            per-job (a pool of the run's own, gone with its job).
        batch_credentials: Name of an "Azure Batch Credentials" block to use instead of TOPN_* credentials.
        storage_credentials: Name of an "Azure Blob Storage Credentials" block to use instead.
    """
    settings = runs.settings(mapping.MapSettings, batch_credentials, storage_credentials)
    settings = settings.with_pool_mode(pool_mode or settings.pool_mode)
    started, log = time.monotonic(), get_run_logger()
    app_path = Path(app).expanduser() if app else None
    if app_path is not None and not app_path.is_file():
        raise ValueError(f"app: no such file {app!r}: give a wheel, zip or tar archive, or a single file")
    spec = mapping.MapSpec(command, blob_prefix, output_prefix, output_suffix, "")
    if problems := spec.problems():
        raise ValueError("; ".join(problems))
    preflight.check_access(settings)
    storage.ensure_containers(settings, [settings.app_container, settings.input_container, settings.output_container])
    inputs = list(storage.list_inputs(settings, settings.input_container, blob_prefix))
    if not inputs:
        log.warning("nothing to do: no blobs in container %r under %r", settings.input_container, blob_prefix)
        return MapResult(
            container=settings.output_container,
            outputs=[],
            stats=MapStats(job_id="", pool_id=settings.pool_id, inputs=0),
        )
    apps = (
        storage.upload_app(settings, mapping.app_files(app_path)) if app_path else nothing_installed(mapping.APP_NAME)
    )
    spec = mapping.MapSpec(command, blob_prefix, output_prefix, output_suffix, apps.version)
    packing = Packing(files_per_task or settings.map_files_per_task, settings.map_bytes_per_task, 2)
    source = f"prefix:{settings.input_container}/{blob_prefix}"
    line = lineage.lineage_id(source, ["map", spec.command, spec.output_prefix, spec.suffix], packing)
    catalog = storage.read_catalog(settings, line)
    for _ in range(MOVED_ROUNDS):
        done = _run(settings, spec, apps, inputs, catalog, (source, line), packing, run_id, delete_job)
        if not done.read:  # nothing ran: nothing read could have moved
            break
        moved = storage.moved_blobs(settings, [inputs[i] for i in sorted(done.read)], [i.blob for i in inputs])
        if not moved:
            break
        log.warning(
            "%d blobs changed while their command ran (%s): running it again on them as they are now",
            len(moved),
            describe(moved),
        )
        inputs, catalog = list(storage.list_inputs(settings, settings.input_container, blob_prefix)), done.catalog
    else:
        raise TopnFailed(f"blobs under {blob_prefix!r} kept changing while they were read ({MOVED_ROUNDS} times)")
    if delete_pool:
        batch.delete_pool(settings, done.pool_id)
    storage.remove_stale_outputs(settings, set(done.catalog.keys))
    stats = MapStats(
        job_id=done.job_id,
        pool_id=done.pool_id,
        inputs=len(inputs),
        new=done.changes.new,
        changed=done.changes.changed,
        deleted=done.changes.deleted,
        ran=len(done.read),
        reused=len(inputs) - len(done.read),
        tasks=done.tasks,
        seconds=round(time.monotonic() - started, 2),
    )
    result = MapResult(
        container=settings.output_container, outputs=[(i.name, spec.output_blob(i)) for i in inputs], stats=stats
    )
    _publish(result)
    log.info("%s", result.table().splitlines()[0])
    return result


@dataclass(frozen=True)
class _Done:
    """One plan carried out: the lineage's new catalog, what changed, and what the job ran."""

    catalog: lineage.Catalog
    changes: lineage.Changes
    job_id: str
    pool_id: str
    read: frozenset[int]  # positions of the inputs whose command ran
    tasks: int


def _run(
    settings: mapping.MapSettings,
    spec: mapping.MapSpec,
    apps: AppBlobs,
    inputs: list[InputBlob],
    catalog: lineage.Catalog,
    lineage_of: tuple[str, str],
    packing: Packing,
    run_id: str | None,
    delete_job: bool,
) -> _Done:
    """Plans the packs against the lineage (`lineage_of`: its source and id), and runs those whose marker is
    not in storage yet."""
    source, line = lineage_of
    packs, changes = lineage.arrange(inputs, catalog, packing)
    packs = mapping.single_packs(packs)
    tasks = mapping.plan(inputs, packs, spec)
    finished = storage.finished_outputs(settings) if run_id is None else set()
    todo = [t for t in tasks if t.key not in finished]
    new_catalog = lineage.catalog_of(source, inputs, packs, {t.key for t in tasks})
    if new_catalog != catalog:
        storage.write_catalog(settings, line, new_catalog)
    job_id = run_id or f"topn-map-{lineage.lineage_id(line, [t.key for t in tasks], packing)}"
    if not todo:
        return _Done(
            catalog=new_catalog, changes=changes, job_id=job_id, pool_id=settings.pool_id, read=frozenset(), tasks=0
        )
    expiry = datetime.now(UTC) + settings.job_timeout + settings.sas_margin
    sas = SasIssuer(settings, blob_service(settings), expiry)
    pool_id, state = batch.pool_and_job(
        settings, apps, sas, expiry, (job_id, str(current_run.get_id() or ""), job_id, None)
    )
    if state != batch.JobState.DONE:
        output_url = sas.container(settings.output_container, "cw")
        version = apps.version if apps.blobs else None
        specs = [
            mapping.map_task(
                t,
                [(inputs[i], sas.blob_read(inputs[i].container, inputs[i].blob)) for i in t.members],
                spec,
                output_url,
                job_id,
                version,
            )
            for t in todo
        ]
        _, total = batch.add_tasks(settings, job_id, specs)
        watch = monitor.watch_job(settings, job_id, pool_id, total, expiry - settings.sas_margin)
        if watch.ending != monitor.Ending.SUCCEEDED:
            names = {t.id: describe([inputs[i].name for i in t.members]) for t in tasks}
            runs.fail(
                settings,
                job_id,
                pool_id,
                watch,
                names,
                delete_job,
                runs.artifact_key("map-failures"),
                "outputs of the tasks that finished are kept: running the same command again runs only the others",
            )
        if delete_job:
            batch.delete_job(settings, job_id)
        else:
            batch.terminate_job(settings, job_id, "AllTasksComplete")
    read = frozenset(i for t in todo for i in t.members)
    return _Done(catalog=new_catalog, changes=changes, job_id=job_id, pool_id=pool_id, read=read, tasks=len(todo))


def _publish(result: MapResult) -> None:
    shown = result.outputs[:OUTPUT_ROWS_SHOWN]
    create_table_artifact(
        [{"input": i, "output": f"{result.container}/{o}"} for i, o in shown],
        key=runs.artifact_key("map-outputs"),
        description=f"Outputs of {len(shown):,} of {result.stats.inputs:,} inputs",
    )
    s = result.stats
    create_markdown_artifact(
        f"**batch-map**: {result.table().splitlines()[0]}; {runs.plural(s.tasks, 'task')}, "
        f"job {s.job_id or '(none)'}, pool {s.pool_id}",
        key=runs.artifact_key("map-result"),
        description="What the batch-map run did",
    )
