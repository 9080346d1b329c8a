"""Blob Storage steps: containers, uploads (task application and inputs), listing, downloads, clean-up."""

from __future__ import annotations

import contextlib
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from prefect import get_run_logger, task

from tasks.clients import blob_service
from tasks.plan import InputBlob, Layout, upload_blob_name
from tasks.retry import AZURE_TASK
from tasks.settings import TopnSettings
from tasks.taskapp import TaskappFiles

UPLOAD_CONCURRENCY = 8  # within azure-core's default pool of 10 connections


class InputError(ValueError):
    """Inputs that cannot be counted: missing paths, empty folders, an empty prefix."""


@dataclass(frozen=True)
class TaskappBlobs:
    """Where the task application's wheel and installer are in the application container."""

    version: str
    wheel: str
    installer: str


@task(name="ensure-containers", **AZURE_TASK)
def ensure_containers(settings: TopnSettings, names: list[str]) -> None:
    """Creates the containers that do not exist yet (BlobServiceClient.create_container)."""
    service = blob_service(settings)
    for name in dict.fromkeys(names):
        with contextlib.suppress(ResourceExistsError):
            service.create_container(name)


@task(name="upload-taskapp", **AZURE_TASK)
def upload_taskapp(settings: TopnSettings, files: TaskappFiles) -> TaskappBlobs:
    """Uploads the wheel and its installer under a folder named by their version (upload_blob)."""
    container = blob_service(settings).get_container_client(settings.app_container)
    blobs = TaskappBlobs(
        files.version, f"taskapp/{files.version}/{files.wheel.name}", f"taskapp/{files.version}/{files.installer.name}"
    )
    for path, name in ((files.wheel, blobs.wheel), (files.installer, blobs.installer)):
        with open(path, "rb") as data:
            container.upload_blob(name, data, overwrite=True)
    return blobs


def expand_paths(paths: list[str]) -> list[tuple[Path, str]]:
    """Files to count, each with the name users will see: a folder gives its files (recursively, in order)
    named relative to the folder's parent; a file its own name."""
    found: list[tuple[Path, str]] = []
    for raw in paths:
        try:
            found += _expand(raw)
        except OSError as e:  # e.g. a name longer than the file system allows
            raise InputError(f"cannot read {raw!r}: {e.strerror or e}") from None
    names = [name for _, name in found]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise InputError(f"two inputs are both called {duplicate!r}: give each file once")
    return found


def _expand(raw: str) -> list[tuple[Path, str]]:
    path = Path(raw).expanduser()
    if path.is_file():
        return [(path, path.name)]
    if not path.is_dir():
        raise InputError(f"cannot read {raw!r}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    if not files:
        raise InputError(f"the folder {raw!r} holds no files to count")
    return [(p, p.relative_to(path.parent).as_posix()) for p in files]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@task(name="upload-inputs", **AZURE_TASK)
def upload_inputs(settings: TopnSettings, paths: list[str]) -> list[InputBlob]:
    """Uploads local files to the input container, concurrently; content-addressed, so a file already
    uploaded (by an earlier or interrupted run) is not sent again and nothing is ever overwritten."""
    files = expand_paths(paths)
    container = blob_service(settings).get_container_client(settings.input_container)

    def one(item: tuple[Path, str]) -> InputBlob:
        path, name = item
        sha = _sha256(path)
        blob = container.get_blob_client(upload_blob_name(name, sha))
        size = path.stat().st_size
        if not blob.exists():
            with open(path, "rb") as data:
                blob.upload_blob(data, overwrite=True, length=size)
        return InputBlob(name, settings.input_container, blob.blob_name, size, sha)

    with ThreadPoolExecutor(UPLOAD_CONCURRENCY) as pool:
        inputs = list(pool.map(one, files))
    get_run_logger().info(
        "%d input files (%d bytes) in container %s", len(inputs), sum(i.size for i in inputs), settings.input_container
    )
    return inputs


@task(name="list-inputs", **AZURE_TASK)
def list_inputs(settings: TopnSettings, container: str, prefix: str) -> list[InputBlob]:
    """The blobs already in storage under a prefix (ContainerClient.list_blobs): what scheduled runs count."""
    client = blob_service(settings).get_container_client(container)
    try:
        inputs = [InputBlob(b.name, container, b.name, b.size, b.etag.strip('"'))
                  for b in client.list_blobs(name_starts_with=prefix) if not b.name.endswith("/")]  # fmt: skip
    except ResourceNotFoundError:
        raise InputError(f"the container {container!r} does not exist") from None
    if not inputs:
        raise InputError(f"no blobs in container {container!r} under the prefix {prefix!r}")
    return sorted(inputs, key=lambda i: i.name)


@task(name="find-finished", **AZURE_TASK)
def finished_tasks(settings: TopnSettings, layout: Layout) -> set[str]:
    """Count tasks whose outputs (result and counts) are both in storage already, from an earlier attempt
    of the same run: they are not run again (two list_blobs calls, 5,000 names a page)."""
    container = blob_service(settings).get_container_client(settings.output_container)

    def ids(prefix: str, suffix: str) -> set[str]:
        names = container.list_blobs(name_starts_with=prefix)
        return {b.name[len(prefix) : -len(suffix)] for b in names if b.name.endswith(suffix)}

    try:
        done = ids(f"{layout.job}/results/", ".json") & ids(layout.counts_prefix(), ".counts")
    except ResourceNotFoundError:  # no output container yet
        return set()
    if done:
        get_run_logger().info("%d files were counted by an earlier attempt of this run: not counting them again",
                              len(done))  # fmt: skip
    return done


@task(name="download-json", **AZURE_TASK)
def download_json(settings: TopnSettings, names: list[str]) -> dict[str, dict]:
    """Downloads JSON outputs from the output container, concurrently (download_blob); a blob that is not
    there is left out of the answer."""
    container = blob_service(settings).get_container_client(settings.output_container)

    def one(name: str) -> tuple[str, dict | None]:
        try:
            return name, json.loads(container.download_blob(name).readall())
        except ResourceNotFoundError:
            return name, None

    with ThreadPoolExecutor(UPLOAD_CONCURRENCY) as pool:
        return {name: data for name, data in pool.map(one, names) if data is not None}


@task(name="delete-blobs", **AZURE_TASK)
def delete_blobs(settings: TopnSettings, container: str, names: list[str]) -> int:
    """Deletes the named blobs (what this run created), never a whole container of the user's."""
    client = blob_service(settings).get_container_client(container)

    def one(name: str) -> int:
        try:
            client.delete_blob(name)
        except ResourceNotFoundError:
            return 0
        return 1

    with ThreadPoolExecutor(UPLOAD_CONCURRENCY) as pool:
        return sum(pool.map(one, names))


@task(name="list-blobs", **AZURE_TASK)
def list_blob_names(settings: TopnSettings, container: str, prefix: str) -> list[str]:
    """The names of the blobs under a prefix."""
    return [b.name for b in blob_service(settings).get_container_client(container).list_blobs(name_starts_with=prefix)]
