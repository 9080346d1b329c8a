"""HTTP in and out: turns requests into service calls and answers as the Batch service does.

Handlers take (service, request, *path ids) and return a Response. No state lives here, and no handler
takes the service's lock: the service's methods answer `View`s and JSON they made under it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from batch_emulator import files, odata, wire
from batch_emulator.conditions import Conditions
from batch_emulator.errors import BatchError
from batch_emulator.models import View
from batch_emulator.service import BatchService

JSON_TYPE = "application/json;odata=minimalmetadata"
MAX_PAGE = 1000
ENTITY_SETS = {"nodecounts": "poolnodecounts"}  # a list's entity set in odata.metadata, where not its kind


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

    @property
    def conditions(self) -> Conditions:
        """Its If-Match, If-None-Match, If-Modified-Since and If-Unmodified-Since."""
        return Conditions.from_headers(self.headers)

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


def entity_headers(view: View) -> dict[str, str]:
    return {"ETag": view.etag, "Last-Modified": wire.rfc1123(view.modified)}


def metadata(req: Request, entity_set: str, element: bool = False) -> str:
    """A success body's `odata.metadata`, as the service writes it: `{base}/$metadata#pools/@Element` for one
    entity, `{base}/$metadata#pools` for a list."""
    return f"{req.base_url}/$metadata#{entity_set}" + ("/@Element" if element else "")


def created(req: Request, view: View) -> Response:
    url = req.base_url + view.path
    return Response(201, headers={**entity_headers(view), "DataServiceId": url, "Location": url})


def updated(req: Request, view: View, status: int = 200) -> Response:
    return Response(status, headers={**entity_headers(view), "DataServiceId": req.base_url + view.path})


def one(req: Request, view: View) -> Response:
    entity_set = view.path.rsplit("/", 2)[-2]  # /jobs/j1/tasks/t1 -> tasks
    body = {"odata.metadata": metadata(req, entity_set, True), **odata.select(view.body, req.query.get("$select"))}
    return Response(200, body, entity_headers(view))


def page(req: Request, wires: list[dict], kind: str) -> Response:
    """A list answer: $filter, $select, maxresults and an absolute odata.nextLink (docs/batch-wire.md 3.6)."""
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
    if "$filter" in req.query:
        keep = odata.parse_filter(req.query["$filter"], kind)
        wires = [w for w in wires if keep(w)]
    chosen = wires[skip : skip + size]
    body: dict = {
        "odata.metadata": metadata(req, ENTITY_SETS.get(kind, kind)),
        "value": [odata.select(w, req.query.get("$select")) for w in chosen],
    }
    if skip + size < len(wires):
        params = {k: v for k, v in req.query.items() if k != "$skiptoken"} | {"$skiptoken": str(skip + size)}
        path = req.raw_path.split("?", 1)[0]
        body["odata.nextLink"] = f"{req.origin}{path}?{urlencode(params)}"
    return Response(200, body)


# ---- pools and nodes -----------------------------------------------------------------------------


def create_pool(svc: BatchService, req: Request) -> Response:
    return created(req, svc.create_pool(req.json()))


def list_pools(svc: BatchService, req: Request) -> Response:
    return page(req, svc.list_pools(req.base_url), "pools")


def get_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    return one(req, svc.pool_view(pool_id, req.base_url, req.conditions))


def pool_exists(svc: BatchService, req: Request, pool_id: str) -> Response:
    view = svc.find_pool(pool_id, req.conditions)
    return Response(200, b"", entity_headers(view)) if view else Response(404, b"")


def update_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    return updated(req, svc.update_pool(pool_id, req.json(), req.conditions))


def replace_pool_properties(svc: BatchService, req: Request, pool_id: str) -> Response:
    return updated(req, svc.replace_pool_properties(pool_id, req.json(), req.conditions), status=204)


def delete_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    svc.delete_pool(pool_id, req.conditions)
    return Response(202)


def resize_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    return updated(req, svc.resize_pool(pool_id, req.json(), req.conditions), status=202)


def stop_resize_pool(svc: BatchService, req: Request, pool_id: str) -> Response:
    return updated(req, svc.stop_resize(pool_id, req.conditions), status=202)


def remove_nodes(svc: BatchService, req: Request, pool_id: str) -> Response:
    return updated(req, svc.remove_nodes(pool_id, req.json(), req.conditions), status=202)


def enable_autoscale(svc: BatchService, req: Request, pool_id: str) -> Response:
    return updated(req, svc.enable_autoscale(pool_id, req.json()))


def disable_autoscale(svc: BatchService, req: Request, pool_id: str) -> Response:
    return updated(req, svc.disable_autoscale(pool_id))


def evaluate_autoscale(svc: BatchService, req: Request, pool_id: str) -> Response:
    run = svc.evaluate_autoscale(pool_id, req.json())
    body = {"odata.metadata": metadata(req, "Microsoft.Azure.Batch.Protocol.Entities.AutoScaleRun"), **run}
    return Response(200, body, {"DataServiceId": f"{req.base_url}/pools/{quote(pool_id)}"})


def list_nodes(svc: BatchService, req: Request, pool_id: str) -> Response:
    return page(req, svc.list_nodes(pool_id, req.base_url), "nodes")


def get_node(svc: BatchService, req: Request, pool_id: str, node_id: str) -> Response:
    return one(req, svc.node_view(pool_id, node_id, req.base_url))


def reboot_node(svc: BatchService, req: Request, pool_id: str, node_id: str) -> Response:
    svc.reboot_node(pool_id, node_id, req.json())
    return Response(202, headers={"DataServiceId": f"{req.base_url}/pools/{quote(pool_id)}/nodes/{quote(node_id)}"})


def list_node_files(svc: BatchService, req: Request, pool_id: str, node_id: str) -> Response:
    root, path = svc.node_folder(pool_id, node_id)
    url = f"{req.base_url}{path}/files"
    return page(req, files.entries(root, url, req.query.get("recursive") == "true"), "files")


def get_node_file(svc: BatchService, req: Request, pool_id: str, node_id: str, path: str) -> Response:
    root, node_path = svc.node_folder(pool_id, node_id)
    return _file(req, root, path, f"{req.base_url}{node_path}/files")


# ---- jobs ----------------------------------------------------------------------------------------


def create_job(svc: BatchService, req: Request) -> Response:
    return created(req, svc.create_job(req.json()))


def list_jobs(svc: BatchService, req: Request) -> Response:
    return page(req, svc.list_jobs(req.base_url), "jobs")


def get_job(svc: BatchService, req: Request, job_id: str) -> Response:
    return one(req, svc.job_view(job_id, req.base_url, req.conditions))


def update_job(svc: BatchService, req: Request, job_id: str) -> Response:
    return updated(req, svc.update_job(job_id, req.json(), req.conditions))


def replace_job(svc: BatchService, req: Request, job_id: str) -> Response:
    return updated(req, svc.replace_job(job_id, req.json(), req.conditions))


def terminate_job(svc: BatchService, req: Request, job_id: str) -> Response:
    svc.terminate_job(job_id, req.json().get("terminateReason"), req.conditions)
    return Response(202, headers={"DataServiceId": f"{req.base_url}/jobs/{quote(job_id)}"})


def delete_job(svc: BatchService, req: Request, job_id: str) -> Response:
    svc.delete_job(job_id, req.conditions)
    return Response(202)


def list_preparation_and_release_task_status(svc: BatchService, req: Request, job_id: str) -> Response:
    return page(req, svc.preparation_and_release_status(job_id, req.base_url), "jobpreparationandreleasetaskstatus")


def task_counts(svc: BatchService, req: Request, job_id: str) -> Response:
    return Response(200, {"odata.metadata": metadata(req, "taskcounts", True), **svc.task_counts(job_id)})


# ---- tasks ---------------------------------------------------------------------------------------


def create_task(svc: BatchService, req: Request, job_id: str) -> Response:
    return created(req, svc.add_task(job_id, req.json()))


def add_task_collection(svc: BatchService, req: Request, job_id: str) -> Response:
    results = svc.add_tasks(job_id, req.json().get("value"), req.base_url)
    return Response(200, {"odata.metadata": metadata(req, "taskaddresult"), "value": results})


def list_tasks(svc: BatchService, req: Request, job_id: str) -> Response:
    return page(req, svc.list_tasks(job_id, req.base_url), "tasks")


def get_task(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    return one(req, svc.task_view(job_id, task_id, req.base_url))


def delete_task(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    svc.delete_task(job_id, task_id)
    return Response(200)


def terminate_task(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    svc.terminate_task(job_id, task_id)
    return Response(204)


def reactivate_task(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    return updated(req, svc.reactivate_task(job_id, task_id), status=204)


def list_task_files(svc: BatchService, req: Request, job_id: str, task_id: str) -> Response:
    root, path = svc.task_folder(job_id, task_id)
    entries = files.entries(root, f"{req.base_url}{path}/files", req.query.get("recursive") == "true") if root else []
    return page(req, entries, "files")


def get_task_file(svc: BatchService, req: Request, job_id: str, task_id: str, path: str) -> Response:
    root, task_path = svc.task_folder(job_id, task_id)
    if root is None:
        raise files.not_found(path)
    return _file(req, root, path, f"{req.base_url}{task_path}/files")


def delete_task_file(svc: BatchService, req: Request, job_id: str, task_id: str, path: str) -> Response:
    root, _ = svc.task_folder(job_id, task_id)
    target = files.inside(root, path) if root else None
    if target is None or not target.is_file():
        raise files.not_found(path)
    target.unlink()
    return Response(200)


def _file(req: Request, root: Path, path: str, url: str) -> Response:
    """A file's GET (its bytes, or a range of them) or HEAD (its properties)."""
    target = files.inside(root, path)
    if target is None or not target.exists():
        raise files.not_found(path)
    stat = target.stat()
    headers = files.headers(target, stat, f"{url}/{quote(path, safe='')}")
    if target.is_dir():
        return Response(200, b"", headers)
    start, end = files.byte_range(req.headers.get("ocp-range"), stat.st_size)
    if req.method == "HEAD":
        headers["Content-Length"] = str(stat.st_size)
        return Response(200, None, headers)
    return Response(200, files.read(target, start, end), headers)  # the SDKs accept only 200, also for ranges
