"""Blob Storage steps: containers, uploads (task application and inputs), listing, downloads, clean-up."""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from topn.tasks import clients, puts
from topn.tasks.application import AppBlobs, AppFiles
from topn.tasks.bounded import bounded_map
from topn.tasks.clients import blob_service
from topn.tasks.inputs import InputBlob, InputList, upload_blob_name
from topn.tasks.layout import PARTS, RESULTS, key_of, members_blobs, part_keys, result_folder
from topn.tasks.lineage import PREFIX as LINEAGES
from topn.tasks.lineage import Catalog, catalog_blob, keys_of_json
from topn.tasks.listing import list_blobs, list_tree
from topn.tasks.naming import named
from topn.tasks.policy import task_options
from topn.tasks.settings import BatchSettings
from topn.tasks.tags import service_task

T = TypeVar("T")
STORAGE_TASK = task_options("azure-storage")  # every step here calls Storage

# Azurite answers small requests fastest with 16-32 in flight (docs/local-stack.md: Upload rate); Azure Storage
# takes far more. A large file sends BLOCK_CONCURRENCY blocks at once, within the same connections.
CONNECTIONS = 32
FILE_CONCURRENCY = 16
BLOCK_CONCURRENCY = 4


class InputError(ValueError):
    """Inputs that cannot be counted: missing paths, empty folders, an empty prefix."""


@service_task(name="ensure-containers", task_run_name=named("ensure-containers"), **STORAGE_TASK)
def ensure_containers(settings: BatchSettings, names: list[str]) -> None:
    """Creates the containers that do not exist yet (BlobServiceClient.create_container)."""
    service = blob_service(settings)
    for name in dict.fromkeys(names):
        with contextlib.suppress(ResourceExistsError):
            service.create_container(name)


@service_task(name="upload-app", task_run_name=named("upload-app {app.name} {app.version}"), **STORAGE_TASK)
def upload_app(settings: BatchSettings, app: AppFiles) -> AppBlobs:
    """Uploads the application's files to the application container, under a folder named by its name and
    version (upload_blob)."""
    container = blob_service(settings).get_container_client(settings.app_container)
    blobs = tuple(AppBlobs.folder(app.name, app.version) + path.name for path in app.files)
    for path, name in zip(app.files, blobs, strict=True):
        with open(path, "rb") as data:
            container.upload_blob(name, data, overwrite=True)
    return AppBlobs(app.name, app.version, blobs, app.install)


def expand_paths(paths: list[str]) -> list[tuple[str, str]]:
    """Files to count, each as (path, the name users will see): a folder gives its files (recursively, in
    name order, no symbolic links) named relative to the folder's parent; a file its own name. Plain
    strings: 100,000 Path objects would hold 35 MB more while they upload."""
    found: list[tuple[str, str]] = []
    for raw in paths:
        try:
            found += _expand(raw)
        except OSError as e:  # e.g. a name longer than the file system allows
            raise InputError(f"cannot read {raw!r}: {e.strerror or e}") from None
    seen: set[str] = set()
    for _, name in found:
        if name in seen:
            raise InputError(f"two inputs are both called {name!r}: give each file once")
        seen.add(name)
    return found


def _expand(raw: str) -> list[tuple[str, str]]:
    path = Path(raw).expanduser()
    if path.is_file():
        return [(str(path), path.name)]
    if not path.is_dir():
        raise InputError(f"cannot read {raw!r}: no such file or folder")
    top = str(path)
    files = sorted(_files_under(top))
    if not files:
        raise InputError(f"the folder {raw!r} holds no files to count")
    within = len(top.rstrip("/")) + 1  # each file's path is top/its/path (top "/" has no slash to add)
    return [(p, f"{path.name}/{p[within:]}" if path.name else p[within:]) for p in files]


def _files_under(top: str) -> list[str]:
    """The regular files under a folder, not through symbolic links (as Path.rglob walks; one stat each)."""
    found, folders = [], [top]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        found.append(entry.path)
        except PermissionError:  # a folder it may not read, skipped as rglob skips it
            continue
    return found


@task(
    name="read-inputs",
    task_run_name=named("read-inputs {n_names} ({n:,} path{n_s})", n="paths"),
    persist_result=False,
    cache_policy=NO_CACHE,
)
def read_inputs(settings: BatchSettings, paths: list[str]) -> InputList:
    """Local files as the run's inputs, each read once and named by its content (SHA-256) in the input
    container: the plan needs their content keys only, and upload_inputs sends just the files a job reads (a
    file whose output storage holds already is not sent again)."""
    inputs, bases = [], {}  # one string per folder: 100,000 files of one folder hold one copy of its path
    for path, name in expand_paths(paths):
        base = path[: len(path) - len(name)]
        try:
            with open(path, "rb") as f:
                size, sha = _digest(f)
        except OSError as e:
            raise InputError(f"cannot read {path!r}: {e.strerror or e}") from None
        inputs.append(
            InputBlob(
                name, settings.input_container, upload_blob_name(name, sha), size, sha, bases.setdefault(base, base)
            )
        )
    get_run_logger().info("%d local files (%d bytes)", len(inputs), sum(i.size for i in inputs))
    return InputList(inputs)


def _digest(f: BinaryIO) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    while chunk := f.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


@service_task(name="upload-inputs", task_run_name=named("upload-inputs {n:,} file{n_s}", n="inputs"), **STORAGE_TASK)
def upload_inputs(settings: BatchSettings, inputs: Sequence[InputBlob]) -> None:
    """Puts local files (read_inputs) into the input container under their content-addressed names: nothing is
    ever overwritten, and a file already there (from an earlier or interrupted run) is not sent again. A small
    file costs one request (a PUT that storage refuses if the blob exists), put from one event loop
    (`puts.py`); a large one a HEAD, then its blocks in parallel (upload_blob). A file changed since it was
    read is not sent: its blob would not hold the content its name says."""
    small = [i for i in inputs if i.size <= clients.SINGLE_PUT_BYTES]
    large = [i for i in inputs if i.size > clients.SINGLE_PUT_BYTES]

    def unchanged(k: int, data: bytes) -> str:
        if len(data) != small[k].size or hashlib.sha256(data).hexdigest() != small[k].version:
            raise _changed(small[k])
        return small[k].blob

    puts.put_files(settings, settings.input_container, [i.local_path for i in small], unchanged)
    container = blob_service(settings, CONNECTIONS).get_container_client(settings.input_container)

    def one(found: InputBlob) -> None:
        blob = container.get_blob_client(found.blob)
        if blob.exists():
            return
        with open(found.local_path, "rb") as data, contextlib.suppress(ResourceExistsError):
            if os.fstat(data.fileno()).st_size != found.size:
                raise _changed(found)
            blob.upload_blob(data, length=found.size, overwrite=False, max_concurrency=BLOCK_CONCURRENCY)

    _each_large(one, large)


def _changed(found: InputBlob) -> InputError:
    return InputError(f"{found.local_path!r} changed while the run read it: run again once it stays as it is")


def upload_named(settings: BatchSettings, paths: list[str], prefix: str) -> list[str]:
    """Uploads local files to the input container under `prefix`, each named by its path as users know it
    (a folder's files keep their path from the folder on), replacing a blob of the same name: a drop folder
    that a scheduled run counts. Returns the blob names. Not a Prefect task: `topn upload` needs no server."""
    files = expand_paths(paths)
    container = blob_service(settings, CONNECTIONS).get_container_client(settings.input_container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    sizes, small, large = _by_size(files)
    puts.put_files(
        settings,
        settings.input_container,
        [files[k][0] for k in small],
        lambda i, _data: prefix + files[small[i]][1],
        overwrite=True,
    )

    def one(k: int) -> None:
        path, name = files[k]
        with open(path, "rb") as data:
            container.upload_blob(
                prefix + name, data, length=sizes[k], overwrite=True, max_concurrency=BLOCK_CONCURRENCY
            )

    _each_large(one, large)
    return [prefix + name for _, name in files]


def _by_size(files: list[tuple[str, str]]) -> tuple[list[int], list[int], list[int]]:
    """Each file's size, and which are small (one PUT each, from the event loop) and which large (blocks)."""
    sizes = [os.stat(path).st_size for path, _ in files]
    small = [k for k, size in enumerate(sizes) if size <= clients.SINGLE_PUT_BYTES]
    return sizes, small, [k for k, size in enumerate(sizes) if size > clients.SINGLE_PUT_BYTES]


def _each_large(one: Callable[[T], None], large: list[T]) -> None:
    """`one` for each large file, a few at a time: each sends BLOCK_CONCURRENCY blocks at once."""
    for _ in bounded_map(one, large, max(1, FILE_CONCURRENCY // BLOCK_CONCURRENCY)):
        pass


@service_task(name="list-inputs", task_run_name=named("list-inputs {container}/{prefix}"), **STORAGE_TASK)
def list_inputs(settings: BatchSettings, container: str, prefix: str) -> InputList:
    """The blobs already in storage under a prefix (List Blobs, read lean, its folders at once: tasks/listing.py):
    what scheduled runs count.
    None (or no container) is not an error: the flow then says there was nothing to count."""
    client = blob_service(settings, CONNECTIONS).get_container_client(container)
    try:
        inputs = [
            InputBlob(b.name, container, b.name, b.size, b.etag)
            for b in list_tree(client, prefix)
            if not b.name.endswith("/")
        ]
    except ResourceNotFoundError:  # nothing was ever uploaded: nothing to count
        inputs = []
    get_run_logger().info("%d blobs in container %s under %r", len(inputs), container, prefix)
    return InputList(sorted(inputs, key=lambda i: i.name))


# Asking for one blob's properties takes as long as listing about 30 (3 ms against 0.1 ms a blob, with
# FILE_CONCURRENCY in flight), and a listing request about as long as 100 blobs listed in it (`./dev bench
# incremental`).
LISTED_PER_HEAD, REQUEST_COST = 30, 100


@service_task(
    name="moved-blobs", task_run_name=named("moved-blobs: check {n:,} counted blob{n_s}", n="inputs"), **STORAGE_TASK
)
def moved_blobs(settings: BatchSettings, inputs: list[InputBlob], listed: list[str]) -> list[str]:
    """The names of these blobs of the input container that changed (another ETag) or went since they were
    listed (`listed`: every name the run listed, in order): a task that counted one may have read either
    version. Runs of them close together in the listing are listed again under their common prefix, the
    others asked for one by one (get_blob_properties), whichever costs less (`cover`), FILE_CONCURRENCY
    requests at a time. An ETag never comes back."""
    client = blob_service(settings, CONNECTIONS).get_container_client(settings.input_container)
    prefixes, heads = cover([i.blob for i in inputs], listed)

    def etag(name: str) -> str | None:
        try:
            return client.get_blob_client(name).get_blob_properties().etag.strip('"')
        except ResourceNotFoundError:
            return None

    with ThreadPoolExecutor(FILE_CONCURRENCY) as pool:
        listings = [pool.submit(lambda p: {b.name: b.etag for b in list_blobs(client, p)}, p) for p in prefixes]
        now: dict[str, str | None] = dict(zip(heads, pool.map(etag, heads), strict=True))
        for listing in listings:
            now.update(listing.result())
    return [i.name for i in inputs if now.get(i.blob) != i.version]


def cover(names: list[str], listed: list[str]) -> tuple[list[str], list[str]]:
    """How to see these names again cheaply: prefixes to list and names to ask for one by one. Names close
    together in `listed` (sorted) are listed again under their common prefix when that lists fewer blobs
    (plus REQUEST_COST) than LISTED_PER_HEAD for each of them."""
    place = {name: i for i, name in enumerate(listed)}
    heads = [name for name in names if name not in place]  # not listed: nothing to compare it with but itself
    runs: list[list[int]] = []
    for at in sorted(place[name] for name in names if name in place):
        if runs and at - runs[-1][-1] <= LISTED_PER_HEAD:
            runs[-1].append(at)
        else:
            runs.append([at])
    prefixes = []
    for run in runs:
        prefix = os.path.commonprefix([listed[run[0]], listed[run[-1]]])  # noqa: RUF071 - characters
        under = bisect.bisect_left(listed, prefix + "\U0010ffff") - bisect.bisect_left(listed, prefix)
        if prefix and under + REQUEST_COST < len(run) * LISTED_PER_HEAD:
            prefixes.append(prefix)
        else:
            heads.extend(listed[at] for at in run)
    outer: list[str] = []
    for prefix in sorted(prefixes):  # in order, a prefix comes before every name it covers
        if not (outer and prefix.startswith(outer[-1])):
            outer.append(prefix)
    return outer, heads


@service_task(name="read-lineage", task_run_name=named("read-lineage {lineage}"), **STORAGE_TASK)
def read_catalog(settings: BatchSettings, lineage: str) -> Catalog:
    """The lineage's catalog (download_blob): how its last run packed its inputs. None yet: an empty one."""
    container = blob_service(settings).get_container_client(settings.output_container)
    try:
        return Catalog.from_json(container.download_blob(catalog_blob(lineage)).readall())
    except ResourceNotFoundError:
        return Catalog()


@service_task(name="write-lineage", task_run_name=named("write-lineage {lineage}"), **STORAGE_TASK)
def write_catalog(settings: BatchSettings, lineage: str, catalog: Catalog) -> None:
    """Saves the catalog of this run's plan (upload_blob), before its job runs: what the job makes is then
    referenced, so retention keeps it, and a re-run after a crash plans the same packs."""
    container = blob_service(settings).get_container_client(settings.output_container)
    container.upload_blob(catalog_blob(lineage), catalog.to_json(), overwrite=True)


@service_task(name="find-finished", task_run_name=named("find-finished {root_key}"), **STORAGE_TASK)
def finished_outputs(
    settings: BatchSettings, root_key: str | None = None, complete: Callable[[list[str]], set[str]] = part_keys
) -> set[str]:
    """The keys of outputs in the output container already, from any earlier run (list_blobs, 5,000 names a
    request): with a `root_key`, its results folder first (one request), and only when that is not
    `complete` (the workload says what a finished folder holds), every part file; and the names of the
    members files there (`parts/<key>.members`: which packs can be edited)."""
    container = blob_service(settings).get_container_client(settings.output_container)
    try:
        if root_key is not None:
            names = [b.name for b in list_blobs(container, result_folder(root_key))]
            if root_key in complete(names):
                return {root_key}
        names = [b.name for b in list_blobs(container, PARTS)]
        return part_keys(names) | members_blobs(names)
    except ResourceNotFoundError:  # no output container yet
        return set()


@service_task(name="download-outputs", task_run_name=named("download-outputs {job_id}"), **STORAGE_TASK)
def download_outputs(settings: BatchSettings, names: list[str], job_id: str, folder: str) -> list[str | None]:
    """These blobs of the output container (download_blob), each streamed to a file of its own in `folder`,
    never held whole (the file rows of 100,000 files are 180 MB): the files' paths, None for a blob not in
    storage. `job_id` names the run whose outputs they are (outputs have none)."""
    container = blob_service(settings).get_container_client(settings.output_container)

    def one(n: int, name: str) -> str | None:
        path = Path(folder) / f"{n}-{name.rsplit('/', 1)[-1]}"
        try:
            with open(path, "wb") as f:  # a retried attempt writes it anew
                container.download_blob(name).readinto(f)
        except ResourceNotFoundError:
            path.unlink(missing_ok=True)
            return None
        return str(path)

    return [one(n, name) for n, name in enumerate(names)]


@service_task(name="remove-stale-outputs", task_run_name="remove-stale-outputs", **STORAGE_TASK)
def remove_stale_outputs(settings: BatchSettings, keep: set[str], forget: str | None = None) -> int:
    """Retention (`remove_stale`), as a step of the flow, saying what it removed."""
    removed = remove_stale(settings, keep, forget)
    if removed:
        get_run_logger().info("removed %d outputs that no run references any more", removed)
    return removed


def remove_stale(settings: BatchSettings, keep: set[str], forget: str | None = None) -> int:
    """Deletes the outputs (part files, results) that no lineage's catalog references and that are older than
    TOPN_OUTPUT_RETENTION; `keep` are referenced too (this run's). With `forget`, that lineage's catalog goes
    first and what only it referenced goes at once, whatever its age (`--delete-outputs`). Returns how many."""
    container = blob_service(settings, CONNECTIONS).get_container_client(settings.output_container)
    catalogs = {b.name for b in list_blobs(container, LINEAGES)}
    own: set[str] = set()
    if forget is not None:
        own, keep = set(keep) | _catalog_keys(container, catalog_blob(forget)), set()
        with contextlib.suppress(ResourceNotFoundError):
            container.delete_blob(catalog_blob(forget))
        catalogs.discard(catalog_blob(forget))
    referenced = set(keep).union(*(_catalog_keys(container, name) for name in sorted(catalogs)))
    cutoff = datetime.now(UTC) - settings.output_retention
    stale = [
        b.name
        for prefix in (PARTS, RESULTS)
        for b in list_blobs(container, prefix)
        if (key := key_of(b.name)) and key not in referenced and (key in own or b.last_modified < cutoff)
    ]
    return delete_blobs.fn(settings, settings.output_container, stale)


def _catalog_keys(container, name: str) -> frozenset[str]:
    try:
        return keys_of_json(container.download_blob(name).readall())
    except ResourceNotFoundError:
        return frozenset()


@service_task(
    name="delete-blobs", task_run_name=named("delete-blobs {container}: {n:,} blob{n_s}", n="names"), **STORAGE_TASK
)
def delete_blobs(settings: BatchSettings, container: str, names: list[str]) -> int:
    """Deletes the named blobs (what this run created), never a whole container of the user's."""
    client = blob_service(settings, CONNECTIONS).get_container_client(container)

    def one(name: str) -> int:
        try:
            client.delete_blob(name)
        except ResourceNotFoundError:
            return 0
        return 1

    return sum(bounded_map(one, names, FILE_CONCURRENCY))


@service_task(name="list-blobs", task_run_name=named("list-blobs {container}/{prefix}"), **STORAGE_TASK)
def list_blob_names(settings: BatchSettings, container: str, prefix: str) -> list[str]:
    """The names of the blobs under a prefix."""
    return [b.name for b in list_blobs(blob_service(settings).get_container_client(container), prefix)]
