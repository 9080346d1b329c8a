"""Pools, nodes, jobs and tasks: their state, and their JSON as the service returns it (docs/batch-wire.md 6)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

from batch_emulator import wire
from batch_emulator.taskrun import TaskRun


@dataclass(frozen=True)
class View:
    """An entity as it was at one moment, read under the service's lock: what a handler answers with, so that
    no handler reads a live entity (which another thread may be changing)."""

    id: str
    path: str  # its URL after the account's base URL, percent-encoded: /jobs/j1/tasks/t1
    etag: str
    modified: datetime
    body: dict | None = None  # its JSON (to_wire), when asked for


@dataclass(eq=False)
class Entity:
    id: str
    spec: dict
    state: str
    created: datetime = field(default_factory=wire.now)
    state_time: datetime = field(default_factory=wire.now)
    previous_state: str | None = None
    previous_state_time: datetime | None = None
    etag: str = field(default_factory=wire.new_etag)
    modified: datetime = field(default_factory=wire.now)

    changes: ClassVar[int] = 0  # grows on every change of any entity: what tells the state saver to save

    def __post_init__(self) -> None:
        Entity.changes += 1

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.previous_state, self.previous_state_time = self.state, self.state_time
            self.state, self.state_time = state, wire.now()
        self.touch()

    def touch(self) -> None:
        self.etag, self.modified = wire.new_etag(), wire.now()
        Entity.changes += 1

    @property
    def path(self) -> str:
        raise NotImplementedError

    def to_wire(self, base: str) -> dict:
        raise NotImplementedError

    def view(self, base: str | None = None) -> View:
        """A snapshot; with the client's `base` URL, its JSON too. Call under the service's lock."""
        return View(self.id, self.path, self.etag, self.modified, None if base is None else self.to_wire(base))

    def _common(self, url: str) -> dict:
        out = {
            "id": self.id,
            "url": url,
            "eTag": self.etag,
            "lastModified": wire.rfc3339(self.modified),
            "creationTime": wire.rfc3339(self.created),
            "state": self.state,
            "stateTransitionTime": wire.rfc3339(self.state_time),
        }
        if self.previous_state:
            out["previousState"] = self.previous_state
            out["previousStateTransitionTime"] = wire.rfc3339(self.previous_state_time)
        return out


@dataclass(eq=False)
class Node(Entity):
    pool: Pool | None = None
    root: Path = Path()
    dedicated: bool = True
    running: dict[Task, int] = field(default_factory=dict)  # task -> slots it holds
    start_task_info: dict | None = None
    start_task: dict | None = None  # the one it ran when it booted ({}: none); None: not booted yet
    start_run: TaskRun | None = None
    tasks_run: int = 0
    tasks_succeeded: int = 0
    ip: str = "10.0.0.4"
    errors: list[dict] = field(default_factory=list)  # its BatchNodeErrors (an unusable node's, unusable.py)
    boot_serial: int = 0  # grows on every (re)boot and interruption: a timer or start task of an older one is stale
    recent: list[Task] = field(default_factory=list)  # the last RECENT_TASKS tasks it ran, oldest first

    RECENT_TASKS: ClassVar[int] = 10

    def ran(self, task: Task) -> None:
        """The task starts here: it is one of the node's recentTasks."""
        if task in self.recent:
            self.recent.remove(task)
        self.recent = [*self.recent, task][-self.RECENT_TASKS :]

    @property
    def free_slots(self) -> int:
        if self.state not in ("idle", "running"):
            return 0
        return self.pool.slots_per_node - sum(self.running.values())

    def occupancy_changed(self) -> None:
        if self.state in ("idle", "running"):
            self.set_state("running" if self.running else "idle")

    @property
    def path(self) -> str:
        return f"{self.pool.path}/nodes/{quote(self.id)}"

    def to_wire(self, base: str) -> dict:
        out = self._common(base + self.path)
        for key in ("creationTime", "eTag", "lastModified", "previousState", "previousStateTransitionTime"):
            out.pop(key, None)
        out.update(
            {
                "schedulingState": "enabled",
                "lastBootTime": wire.rfc3339(self.created),
                "allocationTime": wire.rfc3339(self.created),
                "ipAddress": self.ip,
                "affinityId": f"TVM:{self.id}",
                "vmSize": self.pool.spec["vmSize"],
                "totalTasksRun": self.tasks_run,
                "totalTasksSucceeded": self.tasks_succeeded,
                "runningTasksCount": len(self.running),
                "runningTaskSlotsCount": sum(self.running.values()),
                "isDedicated": self.dedicated,
                "nodeAgentInfo": {"version": "emulator", "lastUpdateTime": wire.rfc3339(self.created)},
            }
        )
        # A node keeps the start task it booted with when the pool's is updated (until it reboots).
        if start := self.pool.spec.get("startTask") if self.start_task is None else self.start_task:
            out["startTask"] = start
        if self.start_task_info:
            out["startTaskInfo"] = self.start_task_info
        if self.errors:
            out["errors"] = self.errors
        if recent := [t.info(base) for t in self.recent if t.state != "deleted"]:
            out["recentTasks"] = recent
        return out


@dataclass(eq=False)
class Pool(Entity):
    allocation_state: str = "resizing"
    allocation_time: datetime = field(default_factory=wire.now)
    nodes: list[Node] = field(default_factory=list)
    node_serial: int = 0
    autoscale_run: dict | None = None  # the last periodic evaluation's AutoScaleRun
    resize_errors: list[dict] = field(default_factory=list)  # the last resize's ResizeErrors, shown once steady

    @property
    def slots_per_node(self) -> int:
        return self.spec.get("taskSlotsPerNode") or 1

    @property
    def fill_type(self) -> str:
        return ((self.spec.get("taskSchedulingPolicy") or {}).get("nodeFillType") or "spread").lower()

    def pick_node(self, slots: int, allowed: Callable[[Node], bool] = lambda n: True) -> Node | None:
        """A node with `slots` free (among those `allowed`), spreading tasks or packing them as the pool's policy
        says."""
        fits = [n for n in self.nodes if n.free_slots >= slots and allowed(n)]
        if not fits:
            return None
        pick = min if self.fill_type == "pack" else max
        return pick(fits, key=lambda n: n.free_slots)

    @property
    def path(self) -> str:
        return f"/pools/{quote(self.id)}"

    def to_wire(self, base: str) -> dict:
        spec = self.spec
        out = self._common(base + self.path)
        for key in ("previousState", "previousStateTransitionTime"):  # not in the pool's schema
            out.pop(key, None)
        out.update(
            {
                "allocationState": self.allocation_state,
                "allocationStateTransitionTime": wire.rfc3339(self.allocation_time),
                "vmSize": spec["vmSize"],
                "virtualMachineConfiguration": spec["virtualMachineConfiguration"],
                "resizeTimeout": spec.get("resizeTimeout") or "PT15M",
                "currentDedicatedNodes": sum(n.dedicated for n in self.nodes),
                "currentLowPriorityNodes": sum(not n.dedicated for n in self.nodes),
                "targetDedicatedNodes": spec.get("targetDedicatedNodes") or 0,
                "targetLowPriorityNodes": spec.get("targetLowPriorityNodes") or 0,
                "enableAutoScale": bool(spec.get("enableAutoScale")),
                "enableInterNodeCommunication": bool(spec.get("enableInterNodeCommunication")),
                "taskSlotsPerNode": self.slots_per_node,
                "taskSchedulingPolicy": {"nodeFillType": self.fill_type},
            }
        )
        for key in (
            "displayName",
            "metadata",
            "startTask",
            "networkConfiguration",
            "upgradePolicy",
            "autoScaleFormula",
            "autoScaleEvaluationInterval",
            "targetNodeCommunicationMode",
            "certificateReferences",
        ):
            if spec.get(key) is not None:
                out[key] = spec[key]
        if self.autoscale_run:
            out["autoScaleRun"] = self.autoscale_run
        if self.resize_errors and self.allocation_state == "steady":
            out["resizeErrors"] = self.resize_errors
        return out


@dataclass(eq=False)
class Job(Entity):
    pool_id: str = ""
    tasks: dict[str, Task] = field(default_factory=dict)  # by lower-cased id
    ready: collections.deque = field(default_factory=collections.deque)
    waiting: dict[str, list[Task]] = field(default_factory=dict)  # dependency id (lower) -> dependents
    open_tasks: int = 0  # tasks not completed
    end_time: datetime | None = None
    terminate_reason: str | None = None
    node_tasks: dict[Node, NodeJobTasks] = field(default_factory=dict)  # where its preparation task ran

    def special(self, name: str) -> dict:
        """Its jobManagerTask, jobPreparationTask or jobReleaseTask ({}: none)."""
        return self.spec.get(name) or {}

    def is_manager(self, task: Task) -> bool:
        return task.id.lower() == str(self.special("jobManagerTask").get("id", "")).lower()

    @property
    def priority(self) -> int:
        return self.spec.get("priority") or 0

    def option(self, name: str, default: str) -> str:
        return (self.spec.get(name) or default).lower()

    @property
    def max_task_retries(self) -> int:
        return (self.spec.get("constraints") or {}).get("maxTaskRetryCount") or 0

    def running_count(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state in ("running", "preparing"))

    @property
    def path(self) -> str:
        return f"/jobs/{quote(self.id)}"

    def to_wire(self, base: str) -> dict:
        spec = self.spec
        constraints = spec.get("constraints") or {}
        out = self._common(base + self.path)
        out.update(
            {
                "priority": self.priority,
                "maxParallelTasks": spec.get("maxParallelTasks", -1) or -1,
                "allowTaskPreemption": bool(spec.get("allowTaskPreemption")),
                "usesTaskDependencies": bool(spec.get("usesTaskDependencies")),
                "constraints": {
                    "maxWallClockTime": constraints.get("maxWallClockTime") or wire.INFINITE_WIRE,
                    "maxTaskRetryCount": self.max_task_retries,
                },
                "poolInfo": spec["poolInfo"],
                "onAllTasksComplete": self.option("onAllTasksComplete", "noaction"),
                "onTaskFailure": self.option("onTaskFailure", "noaction"),
                "executionInfo": {"startTime": wire.rfc3339(self.created), "poolId": self.pool_id},
            }
        )
        if self.end_time:
            out["executionInfo"]["endTime"] = wire.rfc3339(self.end_time)
        if self.terminate_reason:
            out["executionInfo"]["terminateReason"] = self.terminate_reason
        for key in (
            "displayName",
            "metadata",
            "commonEnvironmentSettings",
            "jobManagerTask",
            "jobPreparationTask",
            "jobReleaseTask",
        ):
            if spec.get(key) is not None:
                out[key] = spec[key]
        return out


@dataclass(eq=False)
class Task(Entity):
    job: Job | None = None
    pending: set[str] = field(default_factory=set)  # lower-cased ids of unsatisfied dependencies
    node: Node | None = None
    run: TaskRun | None = None
    retry_count: int = 0
    requeue_count: int = 0
    last_retry_time: datetime | None = None
    last_requeue_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    failure_info: dict | None = None
    last_node: Node | None = None

    @property
    def slots(self) -> int:
        return self.spec.get("requiredSlots") or 1

    @property
    def result(self) -> str | None:
        if self.state != "completed":
            return None
        return "success" if self.failure_info is None and self.exit_code == 0 else "failure"

    @property
    def max_retries(self) -> int:
        constraints = self.spec.get("constraints") or {}
        value = constraints.get("maxTaskRetryCount")
        return self.job.max_task_retries if value is None else value

    @property
    def wall_clock(self) -> timedelta:
        value = (self.spec.get("constraints") or {}).get("maxWallClockTime")
        return wire.parse_duration(value) if value else wire.INFINITE

    def directory(self) -> Path | None:
        node = self.node or self.last_node
        return node.root / "workitems" / self.job.id / "job-1" / self.id if node else None

    @property
    def path(self) -> str:
        return f"{self.job.path}/tasks/{quote(self.id)}"

    def to_wire(self, base: str) -> dict:
        spec = self.spec
        constraints = spec.get("constraints") or {}
        out = self._common(base + self.path)
        out.update(
            {
                "commandLine": spec["commandLine"],
                "requiredSlots": self.slots,
                "userIdentity": spec.get("userIdentity")
                or {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
                "constraints": {
                    "maxWallClockTime": constraints.get("maxWallClockTime") or wire.INFINITE_WIRE,
                    "retentionTime": constraints.get("retentionTime") or "P7D",
                    "maxTaskRetryCount": self.max_retries,
                },
                "executionInfo": self._execution_info(),
            }
        )
        for key in (
            "displayName",
            "resourceFiles",
            "outputFiles",
            "environmentSettings",
            "dependsOn",
            "exitConditions",
            "authenticationTokenSettings",
        ):
            if spec.get(key) is not None:
                out[key] = spec[key]
        if node := self.node or self.last_node:
            directory = f"workitems/{self.job.id}/job-1/{self.id}"
            node_url = base + node.path
            out["nodeInfo"] = {
                "affinityId": f"TVM:{node.id}",
                "nodeUrl": node_url,
                "poolId": node.pool.id,
                "nodeId": node.id,
                "taskRootDirectory": directory,
                "taskRootDirectoryUrl": f"{node_url}/files/{quote(directory, safe='')}",
            }
        return out

    def info(self, base: str) -> dict:
        """The task as a node's recentTasks shows it (a TaskInformation)."""
        return {
            "taskUrl": base + self.path,
            "jobId": self.job.id,
            "taskId": self.id,
            "taskState": self.state,
            "executionInfo": self._execution_info(),
        }

    def _execution_info(self) -> dict:
        info: dict = {"retryCount": self.retry_count, "requeueCount": self.requeue_count}
        times = {
            "startTime": self.start_time,
            "endTime": self.end_time,
            "lastRetryTime": self.last_retry_time,
            "lastRequeueTime": self.last_requeue_time,
        }
        info.update({k: wire.rfc3339(v) for k, v in times.items() if v})
        if self.exit_code is not None:
            info["exitCode"] = self.exit_code
        if self.result:
            info["result"] = self.result
        if self.failure_info:
            info["failureInfo"] = self.failure_info
        return info


@dataclass(eq=False)
class NodeJobTasks:
    """A job's preparation and release tasks on one node: their execution info (JobPreparationTaskExecution-
    Information, JobReleaseTaskExecutionInformation), the attempts running now, and when the preparation ended."""

    node: Node
    directory: str  # the preparation task's folder, under the node's: workitems/<job>/job-1/<id>
    prep: dict = field(default_factory=dict)
    release: dict | None = None
    release_directory: str = ""
    prep_run: TaskRun | None = None
    release_run: TaskRun | None = None
    done: threading.Event = field(default_factory=threading.Event)  # set once the preparation has ended

    @property
    def prepared(self) -> str | None:
        """The preparation's result (success, failure) once it completed; None while it runs."""
        return self.prep.get("result")

    def to_wire(self, base: str) -> dict:
        node_url = base + self.node.path
        out = {"poolId": self.node.pool.id, "nodeId": self.node.id, "nodeUrl": node_url}
        for key, info, directory in (
            ("jobPreparationTaskExecutionInfo", self.prep, self.directory),
            ("jobReleaseTaskExecutionInfo", self.release, self.release_directory),
        ):
            if info:
                url = f"{node_url}/files/{quote(directory, safe='')}"
                out[key] = {**info, "taskRootDirectory": directory, "taskRootDirectoryUrl": url}
        return out
