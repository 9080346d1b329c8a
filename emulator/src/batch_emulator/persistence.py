"""Durable state: pools, nodes, jobs and tasks survive a restart of the emulator, as Azurite's --location does.

The service's state is written to `<data-dir>/state.json` (atomically: a temporary file, then a rename)
at most every SAVE_INTERVAL seconds while it changes, and once more when the emulator stops. A restart
after a crash is what a node reboot is on Azure: tasks that were running go back to the queue (their
requeueCount grows), nodes run their start task again, and what was completed stays completed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch_emulator import wire
from batch_emulator.models import Entity, Job, Node, Pool, Task
from batch_emulator.processes import kill_node_processes
from batch_emulator.taskrun import failure

if TYPE_CHECKING:
    from batch_emulator.service import BatchService

STATE_FILE = "state.json"
FORMAT = 1
SAVE_INTERVAL = 0.5
_ENTITY = ("id", "spec", "state", "created", "state_time", "previous_state", "previous_state_time", "etag", "modified")
_TIMES = {
    "created",
    "state_time",
    "previous_state_time",
    "modified",
    "allocation_time",
    "last_retry_time",
    "last_requeue_time",
    "start_time",
    "end_time",
}


def _dump(entity: Entity, *extra: str) -> dict[str, Any]:
    out = {}
    for name in (*_ENTITY, *extra):
        value = getattr(entity, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _load(data: dict[str, Any]) -> dict[str, Any]:
    return {k: datetime.fromisoformat(v) if k in _TIMES and v else v for k, v in data.items()}


def _task(task: Task) -> str:
    data = {
        **_dump(
            task,
            "retry_count",
            "requeue_count",
            "last_retry_time",
            "last_requeue_time",
            "start_time",
            "end_time",
            "exit_code",
            "failure_info",
        ),
        "last_node": [task.last_node.pool.id, task.last_node.id] if task.last_node else None,
    }
    return json.dumps(data, separators=(",", ":"))


def snapshot(service: BatchService, task_json: Callable[[Task], str] = _task) -> str:
    """The whole state as JSON text. Call under the service's lock. Tasks are most of it: `task_json` may
    answer from a cache (a task's ETag changes with every change of it)."""
    pools = []
    for pool in service.pools.values():
        nodes = [
            {
                **_dump(n, "dedicated", "ip", "tasks_run", "tasks_succeeded"),
                "root": str(n.root),
                "start_task_info": dict(n.start_task_info) if n.start_task_info else None,
            }
            for n in pool.nodes
        ]
        pools.append({**_dump(pool, "allocation_state", "allocation_time", "node_serial"), "nodes": nodes})
    jobs = []
    for job in service.jobs.values():
        head = json.dumps(_dump(job, "pool_id", "end_time", "terminate_reason"), separators=(",", ":"))
        jobs.append(f'{head[:-1]},"tasks":[{",".join(map(task_json, job.tasks.values()))}]}}')
    head = json.dumps({"format": FORMAT, "scheduled": service.scheduled, "pools": pools}, separators=(",", ":"))
    return f'{head[:-1]},"jobs":[{",".join(jobs)}]}}'


def write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def restore(service: BatchService, path: Path) -> None:
    """Loads a saved state into an empty service, as Azure would find it after every node rebooted."""
    if not path.exists():
        return
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} was written by another version of the emulator (format {state.get('format')})")
    kill_node_processes(service.data_dir)
    nodes: dict[tuple[str, str], Node] = {}
    pools, jobs = [], []
    for data in state["pools"]:
        if data["state"] == "deleting":
            continue  # it was going: it is gone
        pool = Pool(**_load({k: v for k, v in data.items() if k != "nodes"}))
        for n in data["nodes"]:
            if n["state"] == "leavingpool":
                continue
            node = Node(**_load({**n, "root": Path(n["root"])}), pool=pool)
            pool.nodes.append(node)
            nodes[(pool.id, node.id)] = node
        pools.append(pool)
    for data in state["jobs"]:
        if data["state"] == "deleting":
            continue
        job = Job(**_load({k: v for k, v in data.items() if k != "tasks"}))
        ending = job.state == "terminating"  # it was killing its running tasks: they ended
        if ending:
            job.state, job.end_time = "completed", job.end_time or wire.now()
        for t in data["tasks"]:
            last = t.pop("last_node")
            task = Task(**_load(t), job=job, last_node=nodes.get(tuple(last)) if last else None)
            if task.state in ("running", "preparing") and ending:
                task.state, task.end_time = "completed", wire.now()
                task.failure_info = failure(
                    "usererror", "TaskEnded", "The task was ended because its job was terminated."
                )
            elif task.state in ("running", "preparing"):  # the node rebooted under it: back to the queue
                task.state, task.requeue_count, task.start_time = "active", task.requeue_count + 1, None
            job.tasks[task.id.lower()] = task
        jobs.append(job)
    service.load(pools, jobs, state.get("scheduled", 0))
    _remove_unknown_node_folders(service.data_dir, pools)


def _remove_unknown_node_folders(data_dir: Path, pools: list[Pool]) -> None:
    known = {n.root.resolve() for p in pools for n in p.nodes}
    for folder in (data_dir / "pools").glob("*/nodes/*"):
        if folder.resolve() not in known:
            shutil.rmtree(folder, ignore_errors=True)


class Saver:
    """Writes the state when it changed, at most every SAVE_INTERVAL s (longer when a save is slow, so that
    saving never takes more than a fifth of the time)."""

    def __init__(self, service: BatchService, path: Path) -> None:
        self.service, self.path = service, path
        self._saved = -1
        self._tasks: dict[int, tuple[str, str]] = {}  # id(task) -> (its ETag, its JSON) when last saved
        self._stop = threading.Event()
        self._saving = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="batch-emulator-state", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        pause, failing = SAVE_INTERVAL, False
        while not self._stop.wait(pause):
            began = time.monotonic()
            try:
                self.save()
                failing = False
            except Exception as e:  # a full disk, say: keep serving, keep trying, say it once
                if not failing:
                    print(f"azure-batch-emulator: cannot save the state to {self.path}: {e}", file=sys.stderr)
                failing = True
            pause = max(SAVE_INTERVAL, 4 * (time.monotonic() - began))

    def save(self) -> None:
        with self._saving:  # one writer at a time: the thread, or stop()
            with self.service.lock:
                changes = Entity.changes
                if changes == self._saved:
                    return
                previous, self._tasks = self._tasks, {}
                text = snapshot(self.service, lambda task: self._task_json(task, previous))
            write(self.path, text)
            self._saved = changes

    def _task_json(self, task: Task, previous: dict[int, tuple[str, str]]) -> str:
        """A task's JSON, serialized again only if it changed since the last save (an ETag is never reused)."""
        etag, text = previous.get(id(task), ("", ""))
        if etag != task.etag:
            etag, text = task.etag, _task(task)
        self._tasks[id(task)] = (etag, text)
        return text

    def stop(self) -> None:
        """Stops the thread and saves a last time."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.save()
