"""The api-versions the emulator understands, and what each older one called things.

Every version from 2017-09-01.6.0 (azure-batch 4.0) to 2025-06-01 (azure-batch 15.1) is understood; any other
value gets the service's 400 `UnsupportedRequestVersion` naming that range, never a reading as the current
version. The emulator works in the current shape: a body sent with an older version is renamed into it before it
is validated, and the answer is renamed back where an older SDK reads the old name. From 2020-09-01.12.0 on
nothing is renamed, so the current SDKs pay one dictionary lookup.

Sources: the azure-batch CHANGELOG (github.com/Azure/azure-sdk-for-python, sdk/batch/azure-batch/CHANGELOG.md)
and the versioning page learn.microsoft.com/rest/api/batchservice/batch-service-rest-api-versioning.
"""

from __future__ import annotations

import json

from batch_emulator import wire
from batch_emulator.errors import BatchError, missing

# (api-version, the Python SDK that sends it): oldest first. Versions between two of these do not exist.
VERSIONS: tuple[tuple[str, str], ...] = (
    ("2017-09-01.6.0", "azure-batch 4.0"),
    ("2018-03-01.6.1", "azure-batch 4.1"),
    ("2018-08-01.7.0", "azure-batch 5.x"),
    ("2018-12-01.8.0", "azure-batch 6.0"),
    ("2019-06-01.9.0", "azure-batch 7.0"),
    ("2019-08-01.10.0", "azure-batch 8.0"),
    ("2020-03-01.11.0", "azure-batch 9.0"),
    ("2020-09-01.12.0", "azure-batch 10.0"),
    ("2021-06-01.14.0", "azure-batch 11.0"),
    ("2022-01-01.15.0", "azure-batch 12.0"),
    ("2022-10-01.16.0", "azure-batch 13.0"),
    ("2023-05-01.17.0", "azure-batch 14.0"),
    ("2023-11-01.18.0", "azure-batch 14.1"),
    ("2024-02-01.19.0", "azure-batch 14.2"),
    ("2024-07-01.20.0", "azure-batch 15.0"),
    ("2025-06-01", "azure-batch 15.1"),
)
RANK = {name: i for i, (name, _) in enumerate(VERSIONS)}
OLDEST, LATEST = VERSIONS[0][0], VERSIONS[-1][0]

# The versions that changed what the emulator reads or writes: before each one, the older shape.
VALIDATION_STATUS = RANK["2018-08-01.7.0"]  # job task counts carried validationStatus
HTTP_URL = RANK["2018-12-01.8.0"]  # resourceFiles[].blobSource became httpUrl (+ storageContainerUrl,
# autoStorageContainerName, blobPrefix); a task's default retentionTime became 7 days (was unlimited)
WAIT_FOR_SUCCESS = RANK["2019-08-01.10.0"]  # startTask.waitForSuccess defaults to true (was false)
TASK_SLOTS = RANK["2020-09-01.12.0"]  # maxTasksPerNode became taskSlotsPerNode; task counts became
# {taskCounts, taskSlotCounts}
CURRENT = TASK_SLOTS  # from here on, the current names

_SINCE_HTTP_URL = ("httpUrl", "storageContainerUrl", "autoStorageContainerName", "blobPrefix")
_TASK_BODIES = {"create_task": False, "create_task_collection": True}


def rank(version: str) -> int:
    """The version's place in VERSIONS; 400 UnsupportedRequestVersion for any other value."""
    found = RANK.get(version)
    if found is None:
        raise BatchError(
            400,
            "UnsupportedRequestVersion",
            f"The specified request version is not supported. The Azure Batch emulator understands api-version "
            f"{OLDEST} to {LATEST}: {', '.join(name for name, _ in VERSIONS)}.",
            QueryParameterName="api-version",
            QueryParameterValue=version,
        )
    return found


def _not_in(prop: str, version: int, since: int) -> BatchError:
    return BatchError(
        400,
        "UnsupportedProperty",
        f"The property {prop} is not supported in api-version {VERSIONS[version][0]}: it exists from "
        f"{VERSIONS[since][0]} on.",
        PropertyName=prop,
    )


def map_request(name: str, req, version: int) -> None:
    """Renames an older version's request (body and $select) into the current names, in place."""
    if version < TASK_SLOTS and "$select" in req.query:
        req.query["$select"] = ",".join(
            "taskSlotsPerNode" if p.strip() == "maxTasksPerNode" else p for p in req.query["$select"].split(",")
        )
    pool = name == "create_pool"
    if not req.body or not (pool or (name in _TASK_BODIES and version < HTTP_URL)):
        return
    body = req.json()
    if pool:
        _pool(body, version)
    elif _TASK_BODIES[name]:
        for i, item in enumerate(body.get("value") or []):
            if isinstance(item, dict):
                _task(item, version, f"value[{i}].")
    else:
        _task(body, version, "")
    req.body = json.dumps(body).encode()


def _pool(body: dict, version: int) -> None:
    if "taskSlotsPerNode" in body:
        raise _not_in("taskSlotsPerNode", version, TASK_SLOTS)
    if "maxTasksPerNode" in body:
        body["taskSlotsPerNode"] = body.pop("maxTasksPerNode")
    start = body.get("startTask")
    if isinstance(start, dict):
        if version < WAIT_FOR_SUCCESS:
            start.setdefault("waitForSuccess", False)
        _resource_files(start, version, "startTask.")


def _task(body: dict, version: int, where: str) -> None:
    _resource_files(body, version, where)
    if version < HTTP_URL:
        constraints = body.get("constraints")
        if constraints is None:
            constraints = body["constraints"] = {}
        if isinstance(constraints, dict) and constraints.get("retentionTime") is None:
            constraints["retentionTime"] = wire.INFINITE_WIRE


def _resource_files(body: dict, version: int, where: str) -> None:
    files = body.get("resourceFiles")
    if version >= HTTP_URL or not isinstance(files, list):
        return
    for i, rf in enumerate(files):
        if not isinstance(rf, dict):
            continue
        at = f"{where}resourceFiles[{i}]."
        for prop in _SINCE_HTTP_URL:
            if prop in rf:
                raise _not_in(at + prop, version, HTTP_URL)
        if not rf.get("blobSource"):
            raise missing(at + "blobSource")
        rf["httpUrl"] = rf.pop("blobSource")


def map_response(name: str, body: object, version: int) -> object:
    """The answer in the older version's names: a new body, or `body` changed in place."""
    if not isinstance(body, dict):
        return body
    if name == "get_job_task_counts":
        counts = dict(body.get("taskCounts") or {})
        if version < VALIDATION_STATUS:
            counts["validationStatus"] = "validated"
        return counts
    if name == "create_task_collection":
        for result in body.get("value") or []:
            if isinstance(result.get("error"), dict):
                result["error"] = json.loads(_old_names(json.dumps(result["error"]), version))
        return body
    if name in ("get_pool", "list_pools"):
        for pool in body.get("value") or [] if name == "list_pools" else [body]:
            if "taskSlotsPerNode" in pool:
                pool["maxTasksPerNode"] = pool.pop("taskSlotsPerNode")
            if isinstance(pool.get("startTask"), dict):
                pool["startTask"] = _old_files(pool["startTask"], version)
    elif name == "get_task":
        return _old_files(body, version)
    elif name == "list_tasks":
        body["value"] = [_old_files(task, version) for task in body.get("value") or []]
    return body


def _old_files(holder: dict, version: int) -> dict:
    """A copy of a task or start task whose resourceFiles name httpUrl as blobSource: the stored spec is shared."""
    files = holder.get("resourceFiles")
    if version >= HTTP_URL or not files:
        return holder
    renamed = [{("blobSource" if k == "httpUrl" else k): v for k, v in rf.items()} for rf in files]
    return {**holder, "resourceFiles": renamed}


def map_error(error: BatchError, version: int) -> None:
    """An error found in the current names, told in the older version's names."""
    error.message = _old_names(error.message, version)
    error.values = {k: _old_names(v, version) for k, v in error.values.items()}


def _old_names(text: str, version: int) -> str:
    if version < TASK_SLOTS:
        text = text.replace("taskSlotsPerNode", "maxTasksPerNode")
    if version < HTTP_URL:
        text = text.replace("httpUrl", "blobSource")
    return text
