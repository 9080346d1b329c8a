"""Durable state: pools, nodes, jobs and tasks survive a restart of the emulator, as Azurite's --location does.

The service's state is written to `<data-dir>/state.json` (atomically: a temporary file, then a rename)
at most every SAVE_INTERVAL seconds while it changes, and once more when the emulator stops. A restart
after a crash is what a node reboot is on Azure: tasks that were running go back to the queue (their
requeueCount grows), nodes run their start task again, and what was completed stays completed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch_emulator import wire
from batch_emulator.models import Entity, Job, Node, Pool, Task

if TYPE_CHECKING:
    from batch_emulator.service import BatchService

STATE_FILE = "state.json"
FORMAT = 1
SAVE_INTERVAL = 0.5
_ENTITY = ("id", "spec", "state", "created", "state_time", "previous_state", "previous_state_time", "etag",
           "modified")  # fmt: skip
_TIMES = {"created", "state_time", "previous_state_time", "modified", "allocation_time", "last_retry_time",
          "start_time", "end_time"}  # fmt: skip


def _dump(entity: Entity, *extra: str) -> dict[str, Any]:
    out = {}
    for name in (*_ENTITY, *extra):
        value = getattr(entity, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _load(data: dict[str, Any]) -> dict[str, Any]:
    return {k: datetime.fromisoformat(v) if k in _TIMES and v else v for k, v in data.items()}


def snapshot(service: BatchService) -> dict[str, Any]:
    """The whole state as plain data. Call under the service's lock; specs are replaced, never changed in
    place, so the result may be serialized after the lock is released."""
    pools = []
    for pool in service.pools.values():
        nodes = [{**_dump(n, "dedicated", "ip", "tasks_run", "tasks_succeeded"), "root": str(n.root),
                  "start_task_info": dict(n.start_task_info) if n.start_task_info else None}
                 for n in pool.nodes]  # fmt: skip
        pools.append({**_dump(pool, "allocation_state", "allocation_time", "node_serial"), "nodes": nodes})
    jobs = []
    for job in service.jobs.values():
        tasks = [{**_dump(t, "retry_count", "requeue_count", "last_retry_time", "start_time", "end_time",
                          "exit_code", "failure_info"),
                  "last_node": [t.last_node.pool.id, t.last_node.id] if t.last_node else None}
                 for t in job.tasks.values()]  # fmt: skip
        jobs.append({**_dump(job, "pool_id", "end_time", "terminate_reason"), "tasks": tasks})
    return {"format": FORMAT, "scheduled": service.scheduled, "pools": pools, "jobs": jobs,
            "processes": service.processes.groups()}  # fmt: skip


def write(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(state, f, separators=(",", ":"))
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
    _kill_leftovers(state.get("processes") or [], service.data_dir)
    service.scheduled = state.get("scheduled", 0)
    nodes: dict[tuple[str, str], Node] = {}
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
        service.pools[pool.id.lower()] = pool
    for data in state["jobs"]:
        if data["state"] == "deleting":
            continue
        job = Job(**_load({k: v for k, v in data.items() if k != "tasks"}))
        if job.state == "terminating":  # its tasks were stopped by the crash
            job.state, job.end_time = "completed", job.end_time or wire.now()
        for t in data["tasks"]:
            last = t.pop("last_node")
            task = Task(**_load(t), job=job, last_node=nodes.get(tuple(last)) if last else None)
            if task.state in ("running", "preparing"):  # the node rebooted under it: back to the queue
                task.state, task.requeue_count, task.start_time = "active", task.requeue_count + 1, None
            job.tasks[task.id.lower()] = task
        service.jobs[job.id.lower()] = job
    _remove_unknown_node_folders(service)


def _kill_leftovers(groups: list[int], data_dir: Path) -> None:
    """Task processes of the emulator that died are killed, as a reboot would: only processes that still
    run inside this data folder, so a reused pid is never hit."""
    for pgid in groups:
        with contextlib.suppress(OSError):
            if Path(os.readlink(f"/proc/{pgid}/cwd")).resolve().is_relative_to(data_dir):
                os.killpg(pgid, signal.SIGKILL)


def _remove_unknown_node_folders(service: BatchService) -> None:
    known = {n.root.resolve() for p in service.pools.values() for n in p.nodes}
    for folder in (service.data_dir / "pools").glob("*/nodes/*"):
        if folder.resolve() not in known:
            shutil.rmtree(folder, ignore_errors=True)


class Saver:
    """Writes the state when it changed, at most every SAVE_INTERVAL s (longer when a save is slow, so that
    saving never takes more than a fifth of the time)."""

    def __init__(self, service: BatchService, path: Path) -> None:
        self.service, self.path = service, path
        self._saved = -1
        self._stop = threading.Event()
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
            except OSError as e:  # a full disk, say: keep serving, keep trying, say it once
                if not failing:
                    print(f"azure-batch-emulator: cannot save the state to {self.path}: {e}", file=sys.stderr)
                failing = True
            pause = max(SAVE_INTERVAL, 4 * (time.monotonic() - began))

    def save(self) -> None:
        with self.service.lock:
            changes = Entity.changes
            if changes == self._saved:
                return
            state = snapshot(self.service)
        write(self.path, state)
        self._saved = changes

    def stop(self) -> None:
        """Stops the thread and saves a last time."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.save()
