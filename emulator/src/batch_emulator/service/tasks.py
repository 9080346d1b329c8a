"""Tasks: add (one, or a collection), dependencies, delete, terminate, reactivate, counts, and their views."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from batch_emulator import validation, wire
from batch_emulator.errors import BatchError, exists, invalid, missing, not_found
from batch_emulator.models import Job, Task, View
from batch_emulator.service.state import ServiceState
from batch_emulator.taskrun import Outcome

MAX_TASKS_PER_COLLECTION = 100
_COUNTED = ("active", "running", "completed", "succeeded", "failed")


class TaskOps(ServiceState):
    """Uses jobs.py (job, active_job, check_all_complete) and scheduler.py (schedule, complete, satisfied)."""

    def add_task(self, job_id: str, body: dict) -> View:
        with self.lock:
            task = self._add(self.active_job(job_id), body)
            self.schedule()
            return task.view()

    def add_tasks(self, job_id: str, bodies: list, base: str = "") -> list[dict]:
        """Add task collection: one result per task, success (with the task's `location`, its URL under the
        client's `base` URL) or clienterror (docs/batch-wire.md 3.5)."""
        if not isinstance(bodies, list) or not bodies:
            raise missing("value")
        if len(bodies) > MAX_TASKS_PER_COLLECTION:
            raise invalid("value", len(bodies), f"A collection holds at most {MAX_TASKS_PER_COLLECTION} tasks.")
        with self.lock:
            job = self.active_job(job_id)
            results = [self._add_one(job, body, base) for body in bodies]
            self.schedule()
        return results

    def _add_one(self, job: Job, body: object, base: str) -> dict:
        """One task of a collection, as its result: a refused one does not stop the others."""
        task_id = body.get("id") if isinstance(body, dict) else None
        try:
            if not isinstance(body, dict):
                raise invalid("value", body)
            task = self._add(job, body)
        except BatchError as e:
            return {"status": "clienterror", "taskId": task_id or "", "error": e.as_task_result()}
        return {
            "status": "success",
            "taskId": task.id,
            "eTag": task.etag,
            "lastModified": wire.rfc3339(task.modified),
            "location": base + task.path,
        }

    def _add(self, job: Job, body: dict) -> Task:
        validation.task(body, bool(job.spec.get("usesTaskDependencies")))
        key = body["id"].lower()
        if key in job.tasks:
            raise exists("Task", body["id"])
        task = Task(body["id"], body, "active", job=job)
        job.tasks[key] = task
        job.open_tasks += 1
        self.queue(task)
        return task

    def queue(self, task: Task) -> None:
        """Puts an active task in its job's ready queue, or has it wait for the dependencies not yet met."""
        job, depends = task.job, task.spec.get("dependsOn") or {}
        ids = {d.lower() for d in depends.get("taskIds") or []}
        for r in depends.get("taskIdRanges") or []:
            ids.update(str(i) for i in range(r["start"], r["end"] + 1))
        for dep in ids:
            other = job.tasks.get(dep)
            if other is None or not self.satisfied(other):
                task.pending.add(dep)
                job.waiting.setdefault(dep, []).append(task)
        if not task.pending:
            job.ready.append(task)

    def task(self, job_id: str, task_id: str) -> Task:
        """Call under the lock."""
        task = self.job(job_id).tasks.get(task_id.lower())
        if task is None:
            raise not_found("Task", task_id)
        return task

    def delete_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self.task(job_id, task_id)
            job = task.job
            del job.tasks[task.id.lower()]
            if task.state != "completed":
                job.open_tasks -= 1
            if task.run:
                task.run.cancel("deleted")
            elif directory := task.directory():
                shutil.rmtree(directory, ignore_errors=True)
            task.set_state("deleted")
            self.check_all_complete(job)

    def terminate_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self.task(job_id, task_id)
            if task.state == "completed":
                raise BatchError(409, "TaskCompleted", "The specified task is already completed.", TaskId=task.id)
            if task.run:
                task.run.cancel("terminated")
            else:
                self.complete(task, Outcome("terminated", wire.now(), wire.now()))
                self.schedule()

    def reactivate_task(self, job_id: str, task_id: str) -> View:
        """A failed task runs again: active, its retry count 0, its exit code and failure forgotten. The view
        is the task as reactivated, not as the scheduler may change it next."""
        with self.lock:
            task = self.task(job_id, task_id)
            job = self.active_job(task.job.id)  # completed, terminating or deleting jobs refuse it
            if task.state != "completed":
                raise BatchError(409, "TaskNotCompleted", "The specified task is not completed.", TaskId=task.id)
            if task.result == "success":
                raise BatchError(409, "TaskSucceeded", "The specified task completed successfully.", TaskId=task.id)
            task.retry_count, task.last_retry_time = 0, None
            task.start_time = task.end_time = task.exit_code = task.failure_info = None
            task.set_state("active")
            job.open_tasks += 1
            # Dependents of a failed task still wait for it (job.waiting); a task terminated while
            # blocked keeps waiting for what is still pending.
            if not task.pending:
                job.ready.append(task)
            self.schedule()
            return task.view()

    def task_counts(self, job_id: str) -> dict:
        with self.lock:
            tasks = list(self.job(job_id).tasks.values())
        counts: Counter[str] = Counter()
        slots: Counter[str] = Counter()
        for t in tasks:
            state = "running" if t.state in ("running", "preparing") else t.state
            for key in (state, "succeeded" if t.result == "success" else "failed" if t.result else None):
                if key:
                    counts[key] += 1
                    slots[key] += t.slots
        return {"taskCounts": {k: counts[k] for k in _COUNTED}, "taskSlotCounts": {k: slots[k] for k in _COUNTED}}

    # ---- reads: views made under the lock --------------------------------------------------------

    def list_tasks(self, job_id: str, base: str) -> list[dict]:
        with self.lock:
            return [task.to_wire(base) for task in self.job(job_id).tasks.values()]

    def task_view(self, job_id: str, task_id: str, base: str) -> View:
        with self.lock:
            return self.task(job_id, task_id).view(base)

    def task_folder(self, job_id: str, task_id: str) -> tuple[Path | None, str]:
        """The task's folder on its node (None before it ever ran), and its path for its files' URLs."""
        with self.lock:
            task = self.task(job_id, task_id)
            return task.directory(), task.path
