"""Validation of create and update bodies: what the service rejects with 400 (contract sections 6 and 8).

The SDKs check almost nothing themselves (SDK 15 none at all), so the emulator must. Features the
emulator does not model are refused by name instead of being silently ignored. Each property is read
as the service reads it (fields.py).
"""

from __future__ import annotations

import re
from datetime import timedelta

from batch_emulator.errors import BatchError, invalid, missing
from batch_emulator.fields import (
    boolean,
    canonical,
    choice,
    duration,
    environment,
    ident,
    integer,
    is_id,
    listed,
    refuse,
    renamed,
    require,
    unsupported,
)

UPLOAD_CONDITIONS = {"tasksuccess", "taskfailure", "taskcompletion"}
# An Azure Compute Gallery image, or its version: the only virtualMachineImageId the service takes.
GALLERY_IMAGE_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/galleries/[^/]+/images/[^/]+"
    r"(?:/versions/[^/]+)?",
    re.IGNORECASE,
)


def resource_files(body: dict, path: str = "") -> list[dict]:
    files = listed(body, "resourceFiles", path)
    for i, rf in enumerate(files):
        where = f"{path}resourceFiles[{i}]."
        if not isinstance(rf, dict):
            raise invalid(where[:-1], rf, "It must be an object.")
        if "blobSource" in rf:  # an older api-version's name, mapped in versions before it gets here
            raise renamed(where + "blobSource", "httpUrl", "2018-12-01.8.0")
        sources = [k for k in ("httpUrl", "storageContainerUrl", "autoStorageContainerName") if rf.get(k)]
        if len(sources) != 1:
            raise invalid(
                where + "httpUrl",
                sources,
                "Give exactly one of httpUrl, storageContainerUrl, autoStorageContainerName.",
            )
        if sources[0] == "autoStorageContainerName":
            raise unsupported(where + "autoStorageContainerName")
        if sources[0] == "httpUrl":
            require(rf, "filePath", where)
        _relative(rf.get("filePath") or "", where + "filePath")
        if rf.get("fileMode") is not None and not re.fullmatch(r"0?[0-7]{3,4}", str(rf["fileMode"])):
            raise invalid(where + "fileMode", rf["fileMode"], "It must be an octal mode such as 0770.")
    return files


def _relative(file_path: str, prop: str) -> None:
    if file_path.startswith("/") or ".." in file_path.replace("\\", "/").split("/"):
        raise invalid(prop, file_path, "It must be relative to the task's working directory and not leave it.")


def output_files(body: dict) -> list[dict]:
    files = listed(body, "outputFiles")
    for i, of in enumerate(files):
        where = f"outputFiles[{i}]."
        require(of, "filePattern", where)
        container = require(require(of, "destination", where), "container", where + "destination.")
        require(container, "containerUrl", where + "destination.container.")
        refuse(container, ("identityReference",), where + "destination.container.")
        options = require(of, "uploadOptions", where)
        choice(options, "uploadCondition", UPLOAD_CONDITIONS, "", where + "uploadOptions.")
    return files


def user_identity(body: dict, path: str) -> None:
    identity = body.get("userIdentity") or {}
    if identity.get("username"):
        raise unsupported(path + "userIdentity.username")
    auto = identity.get("autoUser") or {}
    choice(auto, "scope", {"task", "pool"}, "pool", path + "userIdentity.autoUser.")
    choice(auto, "elevationLevel", {"nonadmin", "admin"}, "nonadmin", path + "userIdentity.autoUser.")


def image_reference(image: dict) -> None:
    """A Marketplace image (publisher, offer, sku) or an Azure Compute Gallery image's ARM id."""
    where = "virtualMachineConfiguration.imageReference."
    image_id = image.get("virtualMachineImageId")
    if not image_id:
        require(image, "offer", where)
    elif not isinstance(image_id, str) or not GALLERY_IMAGE_ID.fullmatch(image_id):
        raise invalid(
            where + "virtualMachineImageId",
            image_id,
            "It must be an Azure Compute Gallery image id: /subscriptions/{subscriptionId}/resourceGroups/"
            "{resourceGroup}/providers/Microsoft.Compute/galleries/{galleryName}/images/{imageDefinitionName}"
            "[/versions/{versionId}].",
        )


def pool(body: dict) -> None:
    ident(body)
    require(body, "vmSize")
    refuse(
        body,
        (
            "cloudServiceConfiguration",
            "mountConfiguration",
            "applicationPackageReferences",
            "userAccounts",
            "certificateReferences",
        ),
    )
    vmc = require(body, "virtualMachineConfiguration")
    image_reference(require(vmc, "imageReference", "virtualMachineConfiguration."))
    require(vmc, "nodeAgentSKUId", "virtualMachineConfiguration.")
    refuse(vmc, ("containerConfiguration",), "virtualMachineConfiguration.")
    integer(body, "targetDedicatedNodes", 0, 100, 0)
    integer(body, "targetLowPriorityNodes", 0, 100, 0)
    if boolean(body, "enableAutoScale", False):
        for prop in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            if body.get(prop) is not None:
                raise autoscale_settings(f"{prop} must not be given when enableAutoScale is true.", prop)
        require(body, "autoScaleFormula")
    else:
        for prop in ("autoScaleFormula", "autoScaleEvaluationInterval"):
            if body.get(prop) is not None:
                raise autoscale_settings(f"{prop} is given only when enableAutoScale is true.", prop)
    if "maxTasksPerNode" in body:  # an older api-version's name, mapped in versions before it gets here
        raise renamed("maxTasksPerNode", "taskSlotsPerNode", "2020-09-01.12.0")
    integer(body, "taskSlotsPerNode", 1, 256, 1)
    boolean(body, "enableInterNodeCommunication", False)
    duration(body, "resizeTimeout")
    choice(
        body.get("taskSchedulingPolicy") or {},
        "nodeFillType",
        {"spread", "pack"},
        "spread",
        "taskSchedulingPolicy.",
    )
    if (start := body.get("startTask")) is not None:
        start_task(start)
    metadata(body)


POOL_UPDATABLE = (
    "startTask",
    "metadata",
    "applicationPackageReferences",
    "certificateReferences",
    "targetNodeCommunicationMode",
)


def pool_update(body: dict) -> dict:
    """PATCH /pools/{id}: the properties it replaces, checked as create_pool checks them. A null one is left
    unchanged, as an omitted one. What only an empty pool may change (vmSize, taskSlotsPerNode, ...) is refused:
    the emulator does not model it."""
    changes = {k: v for k, v in body.items() if v is not None}
    if refused := sorted(set(changes) - set(POOL_UPDATABLE)):
        raise unsupported(refused[0])
    refuse(changes, ("applicationPackageReferences", "certificateReferences"))  # an empty list clears them
    if "startTask" in changes:
        if not isinstance(changes["startTask"], dict):
            raise invalid("startTask", changes["startTask"], "It must be an object.")
        start_task(changes["startTask"])
    metadata(changes)
    if "targetNodeCommunicationMode" in changes:
        choice(changes, "targetNodeCommunicationMode", {"default", "classic", "simplified"}, "default")
    return changes


def pool_replace(body: dict) -> dict:
    """POST /pools/{id}/updateproperties: every updatable property, replaced. `metadata` and
    `applicationPackageReferences` are required (an empty list clears them), `certificateReferences` too before
    api-version 2024-07-01.20.0 (the emulator takes it as empty when omitted); a start task not given is removed
    (None), a targetNodeCommunicationMode not given is `default`. What the pool shows of certificates is then
    `certificateReferences: []`, as on Azure."""
    for prop in ("applicationPackageReferences", "metadata"):
        if body.get(prop) is None:
            raise missing(prop)
    changes = {
        "startTask": None,
        "targetNodeCommunicationMode": "default",
        **{k: v for k, v in body.items() if v is not None},
    }
    changes = pool_update(changes)
    changes.setdefault("startTask", None)
    changes["metadata"] = changes.get("metadata") or None  # an empty list: none shown
    changes["certificateReferences"] = []
    changes.pop("applicationPackageReferences", None)
    return changes


def metadata(body: dict) -> None:
    for i, item in enumerate(listed(body, "metadata")):
        if not isinstance(item, dict):
            raise invalid(f"metadata[{i}]", item, "It must be an object with a name and a value.")
        require(item, "name", f"metadata[{i}].")


def autoscale_settings(message: str, prop: str) -> BatchError:
    return BatchError(400, "InvalidAutoScalingSettings", message, PropertyName=prop)


def autoscale_interval(body: dict, minimum: timedelta) -> timedelta:
    """autoScaleEvaluationInterval: 15 minutes unless given, from `minimum` (the service's: 5 minutes) to 168 hours."""
    if body.get("autoScaleEvaluationInterval") is None:
        default = max(timedelta(minutes=15), minimum)
        body["autoScaleEvaluationInterval"] = canonical(default)
        return default
    value = duration(body, "autoScaleEvaluationInterval")
    if not minimum <= value <= timedelta(hours=168):
        raise invalid(
            "autoScaleEvaluationInterval",
            body["autoScaleEvaluationInterval"],
            f"It must be from {canonical(minimum)} to PT168H.",
        )
    return value


def start_task(body: dict) -> None:
    where = "startTask."
    require(body, "commandLine", where)
    refuse(body, ("containerSettings",), where)
    resource_files(body, where)
    environment(body, "environmentSettings", where)
    user_identity(body, where)
    integer(body, "maxTaskRetryCount", -1, 100, 0, where)
    boolean(body, "waitForSuccess", True, where)


def job(body: dict) -> None:
    ident(body)
    pool_info(require(body, "poolInfo"))
    refuse(body, ("networkConfiguration",))
    job_manager_task(body)
    job_preparation_task(body)
    job_release_task(body)
    job_update(body)
    boolean(body, "usesTaskDependencies", False)
    environment(body, "commonEnvironmentSettings")


def _special_task(body: dict, name: str, default_id: str | None) -> dict | None:
    """What a job's manager, preparation and release tasks share: an id (`default_id` when none is given), a
    command line, resource files, environment and identity; containers and packages are refused."""
    spec = body.get(name)
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise invalid(name, spec, "It must be an object.")
    where = name + "."
    if default_id is not None:
        spec.setdefault("id", default_id)
    ident(spec, "id", where)
    require(spec, "commandLine", where)
    refuse(spec, ("containerSettings", "applicationPackageReferences"), where)
    resource_files(spec, where)
    environment(spec, "environmentSettings", where)
    user_identity(spec, where)
    constraints = spec.get("constraints") or {}
    duration(constraints, "maxWallClockTime", where + "constraints.")
    duration(constraints, "retentionTime", where + "constraints.")
    integer(constraints, "maxTaskRetryCount", -1, 100, 0, where + "constraints.")
    return spec


def job_manager_task(body: dict) -> None:
    """jobManagerTask: a task of the job, started before the others; killJobOnCompletion, runExclusive and
    allowLowPriorityNode default to true, as on Azure."""
    spec = _special_task(body, "jobManagerTask", None)
    if spec is None:
        return
    where = "jobManagerTask."
    output_files({"outputFiles": spec.get("outputFiles")})
    token_settings(spec)
    integer(spec, "requiredSlots", 1, 256, 1, where)
    for prop in ("killJobOnCompletion", "runExclusive", "allowLowPriorityNode"):
        spec[prop] = boolean(spec, prop, True, where)


def job_preparation_task(body: dict) -> None:
    """jobPreparationTask: id `jobpreparation` unless given; waitForSuccess and rerunOnNodeRebootAfterSuccess
    default to true."""
    spec = _special_task(body, "jobPreparationTask", "jobpreparation")
    if spec is not None:
        for prop in ("waitForSuccess", "rerunOnNodeRebootAfterSuccess"):
            spec[prop] = boolean(spec, prop, True, "jobPreparationTask.")


RELEASE_LIMIT = timedelta(minutes=15)  # a release task's longest (and default) maxWallClockTime


def job_release_task(body: dict) -> None:
    """jobReleaseTask: id `jobrelease` unless given; only with a preparation task; at most 15 minutes (the
    default), as on Azure."""
    spec = _special_task(body, "jobReleaseTask", "jobrelease")
    if spec is None:
        return
    if body.get("jobPreparationTask") is None:
        raise BatchError(
            400,
            "InvalidPropertyValue",
            "A job release task cannot be specified without also specifying a job preparation task.",
            PropertyName="jobReleaseTask",
        )
    if spec["id"].lower() == body["jobPreparationTask"]["id"].lower():
        raise invalid("jobReleaseTask.id", spec["id"], "It must differ from the job preparation task's id.")
    limit = duration(spec, "maxWallClockTime", "jobReleaseTask.")
    if spec.get("maxWallClockTime") is None:
        spec["maxWallClockTime"] = canonical(RELEASE_LIMIT)
    elif limit > RELEASE_LIMIT:
        raise invalid("jobReleaseTask.maxWallClockTime", spec["maxWallClockTime"], "It must be at most PT15M.")
    duration(spec, "retentionTime", "jobReleaseTask.")


def pool_info(info: dict) -> None:
    """A job's poolInfo: a `poolId`, or an `autoPoolSpecification` (the pool the job brings), not both."""
    if not isinstance(info, dict):
        raise invalid("poolInfo", info, "It must be an object.")
    auto = info.get("autoPoolSpecification")
    if auto is None:
        require(info, "poolId", "poolInfo.")
        return
    if info.get("poolId"):
        raise invalid("poolInfo", "poolId", "Give either poolId or autoPoolSpecification, not both.")
    auto_pool(auto)


AUTO_POOL_PREFIX_LENGTH = 20


def auto_pool(auto: dict) -> None:
    """poolInfo.autoPoolSpecification: the pool specification checked as a pool create is; `poolLifetimeOption`
    `job` (`jobschedule` is for job schedules, which the emulator does not keep); keepAlive false by default."""
    where = "poolInfo.autoPoolSpecification."
    if not isinstance(auto, dict):
        raise invalid(where[:-1], auto, "It must be an object.")
    require(auto, "poolLifetimeOption", where)
    if choice(auto, "poolLifetimeOption", {"job", "jobschedule"}, "job", where) == "jobschedule":
        raise invalid(where + "poolLifetimeOption", auto["poolLifetimeOption"], "jobschedule applies to job schedules.")
    auto["keepAlive"] = boolean(auto, "keepAlive", False, where)
    prefix = auto.get("autoPoolIdPrefix")
    if prefix is not None and (not is_id(prefix) or len(prefix) > AUTO_POOL_PREFIX_LENGTH):
        raise invalid(where + "autoPoolIdPrefix", prefix, "It has up to 20 letters, digits, hyphens and underscores.")
    spec = require(auto, "pool", where)
    if not isinstance(spec, dict):
        raise invalid(where + "pool", spec, "It must be an object.")
    checked = {**spec, "id": "autopool"}  # checked as a pool create, its values read as the service reads them
    pool(checked)
    del checked["id"]
    auto["pool"] = checked


def job_update(body: dict) -> None:
    """Properties that create and update (PATCH) share."""
    integer(body, "priority", -1000, 1000, 0)
    max_parallel = integer(body, "maxParallelTasks", -1, 1_000_000, -1)
    if max_parallel == 0:
        raise invalid("maxParallelTasks", 0, "It must be -1 (unlimited) or at least 1.")
    constraints = body.get("constraints") or {}
    duration(constraints, "maxWallClockTime", "constraints.")
    integer(constraints, "maxTaskRetryCount", -1, 100, 0, "constraints.")
    choice(body, "onAllTasksComplete", {"noaction", "terminatejob"}, "noaction")
    choice(body, "onTaskFailure", {"noaction", "performexitoptionsjobaction"}, "noaction")
    boolean(body, "allowTaskPreemption", False)


def task(body: dict, uses_dependencies: bool) -> None:
    ident(body)
    require(body, "commandLine")
    refuse(
        body,
        (
            "multiInstanceSettings",
            "containerSettings",
            "applicationPackageReferences",
            "affinityInfo",
        ),
    )
    token_settings(body)
    resource_files(body)
    output_files(body)
    environment(body, "environmentSettings")
    user_identity(body, "")
    constraints = body.get("constraints") or {}
    duration(constraints, "maxWallClockTime", "constraints.")
    duration(constraints, "retentionTime", "constraints.")
    integer(constraints, "maxTaskRetryCount", -1, 100, 0, "constraints.")
    integer(body, "requiredSlots", 1, 256, 1)
    depends = body.get("dependsOn")
    if depends:
        if not uses_dependencies:
            raise BatchError(
                400,
                "TaskDependenciesNotSpecifiedOnJob",
                "The task has dependencies but its job was not created with usesTaskDependencies set to true.",
            )
        for i, dep in enumerate(listed(depends, "taskIds", "dependsOn.")):
            if not is_id(dep):
                raise invalid(f"dependsOn.taskIds[{i}]", dep)
        for i, r in enumerate(listed(depends, "taskIdRanges", "dependsOn.")):
            where = f"dependsOn.taskIdRanges[{i}]."
            start = integer(r, "start", 0, 2**31 - 1, -1, where)
            end = integer(r, "end", 0, 2**31 - 1, -1, where)
            if start < 0 or end < start or end - start >= 100_000:
                raise invalid(where + "end", end, "A range needs 0 <= start <= end and at most 100000 ids.")
    exit_conditions(body.get("exitConditions") or {})


def token_settings(body: dict) -> None:
    """authenticationTokenSettings: `access` lists what the task's token may do; the service knows only `job`."""
    settings = body.get("authenticationTokenSettings")
    if settings is None:
        return
    if not isinstance(settings, dict):
        raise invalid("authenticationTokenSettings", settings, "It must be an object.")
    for i, access in enumerate(listed(settings, "access", "authenticationTokenSettings.")):
        if not isinstance(access, str) or access.lower() != "job":
            raise invalid(f"authenticationTokenSettings.access[{i}]", access, "The only access scope is job.")
    settings["access"] = [a.lower() for a in settings.get("access") or []]


def exit_conditions(body: dict) -> None:
    codes, ranges = listed(body, "exitCodes", "exitConditions."), listed(body, "exitCodeRanges", "exitConditions.")
    low, high = -(2**31), 2**31 - 1
    for i, entry in enumerate(codes):
        require(entry, "code", f"exitConditions.exitCodes[{i}].")
        integer(entry, "code", low, high, 0, f"exitConditions.exitCodes[{i}].")
    for i, entry in enumerate(ranges):
        for prop in ("start", "end"):
            require(entry, prop, f"exitConditions.exitCodeRanges[{i}].")
            integer(entry, prop, low, high, 0, f"exitConditions.exitCodeRanges[{i}].")
    options = [e.get("exitOptions") or {} for e in codes]
    options += [e.get("exitOptions") or {} for e in ranges]
    options += [body.get(k) or {} for k in ("preProcessingError", "fileUploadError", "default")]
    for opt in options:
        choice(opt, "jobAction", {"none", "disable", "terminate"}, "none", "exitConditions.exitOptions.")
        choice(opt, "dependencyAction", {"satisfy", "block"}, "block", "exitConditions.exitOptions.")
