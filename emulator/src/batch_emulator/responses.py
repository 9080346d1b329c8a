"""HTTP in and out: turns requests into service calls and answers as the Batch service does.

Handlers take (service, request, *path ids) and return a Response. No state lives here.
"""

from __future__ import annotations

import json
import mimetypes
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from batch_emulator import odata, wire
from batch_emulator.errors import BatchError
from batch_emulator.models import Entity
from batch_emulator.service import BatchService

JSON_TYPE = "application/json;odata=minimalmetadata"
MAX_PAGE = 1000


@dataclass
class Request:
    method: str
    raw_path: str  # as sent, percent-encoded, including any account prefix
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    origin: str  # scheme://host:port
    prefix: str = ""  # an account path prefix in the endpoint the client used, e.g. /devbatchaccount1

    @property
    def base_url(self) -> str:
        return self.origin + self.prefix

    def json(self) -> dict:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BatchError(400, "InvalidRequestBody", f"The request body is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise BatchError(400, "InvalidRequestBody", "The request body must be a JSON object.")
        return value


@dataclass
class Response:
    status: int
    body: dict | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def entity_headers(entity: Entity) -> dict[str, str]:
    return {"ETag": entity.etag, "Last-Modified": wire.rfc1123(entity.modified)}


def created(req: Request, entity: Entity, path: str) -> Response:
    return Response(201, headers={**entity_headers(entity), "DataServiceId": f"{req.base_url}{path}"})


def one(req: Request, entity: Entity) -> Response:
    return Response(200, odata.select(entity.to_wire(req.base_url), req.query.get("$select")), entity_headers(entity))


def page(req: Request, items: list, kind: str) -> Response:
    """A list answer: $filter, $select, maxresults and an absolute odata.nextLink (contract 3.6)."""
    try:
        size = int(req.query.get("maxresults", MAX_PAGE))
        skip = int(req.query.get("$skiptoken", 0))
    except ValueError:
        size, skip = -1, -1
    if not 1 <= size <= MAX_PAGE or skip < 0:
        raise BatchError(
            400,
            "OutOfRangeQueryParameterValue",
            f"maxresults must be from 1 to {MAX_PAGE}.",
            QueryParameterName="maxresults",
            QueryParameterValue=req.query.get("maxresults", ""),
        )
    wires = [i if isinstance(i, dict) else i.to_wire(req.base_url) for i in items]
    if "$filter" in req.query:
        keep = odata.parse_filter(req.query["$filter"], kind)
        wires = [w for w in wires if keep(w)]
    chosen = wires[skip : skip + size]
    body: dict = {"value": [odata.select(w, req.query.get("$select")) for w in chosen]}
    if skip + size < len(wires):
        params = {k: v for k, v in req.query.items() if k != "$skiptoken"} | {"$skiptoken": str(skip + size)}
        path = req.raw_path.split("?", 1)[0]
        body["odata.nextLink"] = f"{req.origin}{path}?{urlencode(params)}"
    return Response(200, body)


# ---- pools and nodes -----------------------------------------------------------------------------


def create_pool(svc: BatchService, req: Request) -> Response:
    pool = svc.create_pool(req.json())
    return created(req, pool, f"/pools/{quote(pool.id)}")


def list_pools(svc: BatchService, req: Request) -> Response:
    with svc.lock:
        return page(req, list(svc.pools.values()), "pools")


def get_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    with svc.lock:
        return one(req, svc.pool(pool_id))


def pool_exists(svc: BatchService, req: Request, pool_id: str) -> Response:
    with svc.lock:
        pool = svc.pools.get(pool_id.lower())
        return Response(200, b"", entity_headers(pool)) if pool else Response(404, b"")


def update_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    with svc.lock:  # the entity headers of the pool as updated, not as autoscale may change it next
        pool = svc.update_pool(pool_id, req.json())
        url = f"{req.base_url}/pools/{quote(pool.id)}"
        return Response(200, headers={**entity_headers(pool), "DataServiceId": url})


def delete_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    svc.delete_pool(pool_id)
    return Response(202)


def resize_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    svc.resize_pool(pool_id, req.json())
    return Response(202, headers={"DataServiceId": f"{req.base_url}/pools/{quote(pool_id)}"})


def stop_resize_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    svc.stop_resize(pool_id)
    return Response(202, headers={"DataServiceId": f"{req.base_url}/pools/{quote(pool_id)}"})


def enable_autoscale(svc: BatchService, req: Request, pool_id: str) -> Response:
    pool = svc.enable_autoscale(pool_id, req.json())
    return Response(200, headers={**entity_headers(pool), "DataServiceId": f"{req.base_url}/pools/{quote(pool.id)}"})


def disable_autoscale(svc: BatchService, req: Request, pool_id: str) -> Response:
    pool = svc.disable_autoscale(pool_id)
    return Response(200, headers={**entity_headers(pool), "DataServiceId": f"{req.base_url}/pools/{quote(pool.id)}"})


def evaluate_autoscale(svc: BatchService, req: Request, pool_id: str) -> Response:
    run = svc.evaluate_autoscale(pool_id, req.json())
    return Response(200, run, {"DataServiceId": f"{req.base_url}/pools/{quote(pool_id)}"})


def list_nodes(svc: BatchService, req: Request, pool_id: str) -> Response:
    with svc.lock:
        return page(req, list(svc.pool(pool_id).nodes), "nodes")


def get_node(svc: BatchService, req: Request, pool_id: str, node_id: str) -> Response:
    with svc.lock:
        return one(req, svc.node(pool_id, node_id))


def list_node_files(svc: BatchService, req: Request, pool_id: str, node_id: str) -> Response:
    with svc.lock:
        node = svc.node(pool_id, node_id)
        url = f"{req.base_url}/pools/{quote(node.pool.id)}/nodes/{quote(node.id)}/files"
    return page(req, _file_entries(node.root, url, req.query.get("recursive") == "true"), "files")


def get_node_file(svc: BatchService, req: Request, pool_id: str, node_id: str, path: str) -> Response:
    with svc.lock:
        node = svc.node(pool_id, node_id)
        url = f"{req.base_url}/pools/{quote(node.pool.id)}/nodes/{quote(node.id)}/files"
    return _file(req, node.root, path, url)


# ---- jobs ----------------------------------------------------------------------------------------


def create_job(svc: BatchService, req: Request) -> Response:
    job = svc.create_job(req.json())
    return created(req, job, f"/jobs/{quote(job.id)}")


def list_jobs(svc: BatchService, req: Request) -> Response:
    with svc.lock:
        return page(req, list(svc.jobs.values()), "jobs")


def get_job(svc: BatchService, req: Request, job_id: str) -> Response:
    with svc.lock:
        return one(req, svc.job(job_id))


def update_job(svc: BatchService, req: Request, job_id: str) -> Response:
    job = svc.update_job(job_id, req.json())
    return Response(200, headers={**entity_headers(job), "DataServiceId": f"{req.base_url}/jobs/{quote(job.id)}"})


def terminate_job(svc: BatchService, req: Request, job_id: str) -> Response:
    svc.terminate_job(job_id, req.json().get("terminateReason"))
    return Response(202, headers={"DataServiceId": f"{req.base_url}/jobs/{quote(job_id)}"})


def delete_job(svc: BatchService, req: Request, job_id: str) -> Response:
    svc.delete_job(job_id)
    return Response(202)


def task_counts(svc: BatchService, req: Request, job_id: str) -> Response:
    return Response(200, svc.task_counts(job_id))


# ---- tasks ---------------------------------------------------------------------------------------


def create_task(svc: BatchService, req: Request, job_id: str) -> Response:
    task = svc.add_task(job_id, req.json())
    return created(req, task, f"/jobs/{quote(task.job.id)}/tasks/{quote(task.id)}")


def add_task_collection(svc: BatchService, req: Request, job_id: str) -> Response:
    return Response(200, {"value": svc.add_tasks(job_id, req.json().get("value"))})


def list_tasks(svc: BatchService, req: Request, job_id: str) -> Response:
    with svc.lock:
        return page(req, list(svc.job(job_id).tasks.values()), "tasks")


def get_task(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    with svc.lock:
        return one(req, svc.task(job_id, task_id))


def delete_task(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    svc.delete_task(job_id, task_id)
    return Response(200)


def terminate_task(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    svc.terminate_task(job_id, task_id)
    return Response(204)


def reactivate_task(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    with svc.lock:  # the entity headers of the task as reactivated, not as the scheduler may change it next
        task = svc.reactivate_task(job_id, task_id)
        url = f"{req.base_url}/jobs/{quote(task.job.id)}/tasks/{quote(task.id)}"
        return Response(204, headers={**entity_headers(task), "DataServiceId": url})


def _task_files_root(svc: BatchService, req: Request, job_id: str, task_id: str) -> tuple[Path | None, str]:
    with svc.lock:
        task = svc.task(job_id, task_id)
        url = f"{req.base_url}/jobs/{quote(task.job.id)}/tasks/{quote(task.id)}/files"
        return task.directory(), url


def list_task_files(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    root, url = _task_files_root(svc, req, job_id, task_id)
    entries = _file_entries(root, url, req.query.get("recursive") == "true") if root else []
    return page(req, entries, "files")


def get_task_file(svc: BatchService, req: Request, job_id: str, task_id: str, path: str) -> Response:
    root, url = _task_files_root(svc, req, job_id, task_id)
    if root is None:
        raise _file_not_found(path)
    return _file(req, root, path, url)


def delete_task_file(svc: BatchService, req: Request, job_id: str, task_id: str, path: str) -> Response:
    root, _ = _task_files_root(svc, req, job_id, task_id)
    target = _inside(root, path) if root else None
    if target is None or not target.is_file():
        raise _file_not_found(path)
    target.unlink()
    return Response(200)


# ---- files ---------------------------------------------------------------------------------------


def _file_not_found(path: str) -> BatchError:
    return BatchError(404, "FileNotFound", "The specified file does not exist.", FilePath=path)


def _inside(root: Path, path: str) -> Path | None:
    target = (root / path).resolve()
    return target if target.is_relative_to(root.resolve()) else None


def _file_entries(root: Path, url: str, recursive: bool) -> list[dict]:
    if not root.is_dir():
        return []
    paths = sorted(root.rglob("*")) if recursive else sorted(root.iterdir())
    entries = []
    for p in paths:
        name = p.relative_to(root).as_posix()
        entry: dict = {"name": name, "url": f"{url}/{quote(name, safe='')}", "isDirectory": p.is_dir()}
        if not p.is_dir():
            stat = p.stat()
            entry["properties"] = {
                "creationTime": wire.rfc3339(datetime.fromtimestamp(stat.st_ctime, UTC)),
                "lastModified": wire.rfc3339(datetime.fromtimestamp(stat.st_mtime, UTC)),
                "contentLength": str(stat.st_size), "contentType": _content_type(p),
                "fileMode": f"0{stat.st_mode:o}",
            }  # fmt: skip
        entries.append(entry)
    return entries


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _file(req: Request, root: Path, path: str, url: str) -> Response:
    target = _inside(root, path)
    if target is None or not target.exists():
        raise _file_not_found(path)
    stat = target.stat()
    headers = {
        "Last-Modified": wire.rfc1123(datetime.fromtimestamp(stat.st_mtime, UTC)),
        "ocp-creation-time": wire.rfc1123(datetime.fromtimestamp(stat.st_ctime, UTC)),
        "ocp-batch-file-isdirectory": str(target.is_dir()).lower(),
        "ocp-batch-file-mode": f"0{stat.st_mode:o}",
        "ocp-batch-file-url": f"{url}/{quote(path, safe='')}",
        "Content-Type": "application/octet-stream",
    }  # fmt: skip
    if target.is_dir():
        return Response(200, b"", headers)
    start, end = _range(req.headers.get("ocp-range"), stat.st_size)
    if req.method == "HEAD":
        headers["Content-Length"] = str(stat.st_size)
        return Response(200, None, headers)
    with open(target, "rb") as f:
        f.seek(start)
        data = f.read(max(0, end - start))
    return Response(200, data, headers)  # the SDKs accept only 200, also for ranges


def _range(header: str | None, size: int) -> tuple[int, int]:
    if not header:
        return 0, size
    try:
        first, last = header.removeprefix("bytes=").split("-")
        start = int(first) if first else max(0, size - int(last))
        end = min(size, int(last) + 1) if first and last else size
    except ValueError:
        start, end = -1, -1
    if not 0 <= start <= end:
        raise BatchError(416, "InvalidRange", f"The range {header!r} is not satisfiable.")
    return start, end


# ---- the emulator's own endpoints ------------------------------------------------------------


def stats(svc: BatchService, counts: dict[str, int]) -> Response:
    with svc.lock:
        scheduler = {"tasksScheduled": svc.scheduled, "seconds": round(svc.scheduler_seconds, 6)}
    return Response(
        200,
        {
            "requests": dict(sorted(counts.items())),
            "total": sum(counts.values()),
            "scheduler": scheduler,
            "pid": os.getpid(),
        },
    )
