"""What every workload's flow does the same way: its settings (TOPN_* or credential blocks), artifact keys,
cancelling its jobs, links to where things are, and failing with its job's failures."""

from __future__ import annotations

import re
from collections.abc import Callable

from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment as current_deployment
from pydantic import WithJsonSchema

from topn.tasks import batch, monitor
from topn.tasks.settings import AzureConnection, BatchSettings, S, load_settings

RUN_ID = r"^[A-Za-z0-9_-]{1,64}$"  # a Batch job id


def blank(**schema: object) -> WithJsonSchema:
    """The run form's view of an optional parameter: a plain field, left blank for its default (the form
    shows `X | None` as a choice between X and None, and says "Property is type 'None'")."""
    return WithJsonSchema(schema)


def settings(kind: type[S], batch_credentials: str | None, storage_credentials: str | None) -> S:
    """The TOPN_* settings of `kind`, with credentials from the named blocks instead, if any."""
    if batch_credentials or storage_credentials:
        from topn.tasks.blocks import load_settings_from_blocks

        return load_settings_from_blocks(batch_credentials, storage_credentials, kind)
    return load_settings(kind)


def cancel_jobs(kind: type[BatchSettings]) -> Callable[..., None]:
    """An on_cancellation hook: cancelling the flow run terminates its Batch jobs. The runner calls it by
    keyword."""

    def hook(flow: object, flow_run: object, state: object) -> None:
        parameters = getattr(flow_run, "parameters", None) or {}
        found = settings(kind, parameters.get("batch_credentials"), parameters.get("storage_credentials"))
        for job_id in batch.jobs_of_flow_run(found, str(flow_run.id)):
            batch.terminate_job.fn(found, job_id, "TopnFlowRunCancelled")

    return hook


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def artifact_key(kind: str) -> str:
    """Artifact keys per deployment (their history in the UI is that deployment's), or ad hoc."""
    scope = re.sub(r"[^a-z0-9]+", "-", (current_deployment.name or "adhoc").lower()).strip("-") or "adhoc"
    return f"topn-{kind}-{scope}"


def batch_links(settings: AzureConnection, job_id: str, pool_id: str) -> list[tuple[str, str, str]]:
    return [
        ("Batch job", job_id, f"{settings.batch_url}/jobs/{job_id}"),
        ("pool", pool_id, f"{settings.batch_url}/pools/{pool_id}"),
    ]


def listing_url(settings: AzureConnection, container: str, prefix: str = "") -> str:
    """List Blobs of a container (under a prefix): what a signed-in explorer opens."""
    return f"{settings.blob_url}/{container}?restype=container&comp=list" + (f"&prefix={prefix}" if prefix else "")


def link_table(where: list[tuple[str, str, str]]) -> list[str]:
    return ["| what | where |", "|---|---|", *(f"| {what} | [{name}]({url}) |" for what, name, url in where)]


def publish_failure_links(settings: BatchSettings, job_id: str, pool_id: str, deleted: bool) -> None:
    """Where a failed run's job, pool and failed tasks' logs are. No SAS: nothing here grants access."""
    logs = f"{settings.output_container}/{job_id}/logs/"
    job, pool = batch_links(settings, job_id, pool_id)
    where = [
        *([] if deleted else [job]),
        pool,
        ("failed tasks' logs", logs, listing_url(settings, settings.output_container, f"{job_id}/logs/")),
    ]
    lines = link_table(where)
    if deleted:
        lines += ["", f"Job {job_id} is deleted with the run (`--keep-job` keeps it)."]
    create_markdown_artifact("\n".join(lines), key=artifact_key("links"), description=f"Where failed job {job_id} is")


def fail(
    settings: BatchSettings,
    job_id: str,
    pool_id: str,
    watch: monitor.Watch,
    names: dict[str, str],
    delete: bool,
    failures_key: str,
    kept: str,
) -> None:
    """The job is stopped, its failures reported (a failed task run and a table under `failures_key`), and
    the run fails with them (TopnFailed); `kept` says what of the work stays."""
    batch.terminate_job(settings, job_id, f"Topn{watch.ending.title().replace(' ', '')}")
    heading = [f"job {job_id} {watch.ending}: {watch.completed} of {watch.total} tasks completed"]
    if watch.ending == monitor.Ending.NO_NODES:  # the cause and its fix in the one line users read first
        heading = [f"job {job_id} {watch.ending}: {watch.detail} ({watch.completed} of {watch.total} tasks completed)"]
    elif watch.detail:
        heading.append(f"  {watch.detail}")
    publish_failure_links(settings, job_id, pool_id, delete)
    try:
        monitor.report_failures(settings, job_id, names, heading, failures_key, kept)
    finally:
        if delete:
            batch.delete_job(settings, job_id)
