"""Jobs: create, update, terminate (its running tasks killed), delete, time limits, and their views."""

from __future__ import annotations

import shutil

from batch_emulator import fields, validation, wire
from batch_emulator.conditions import ANY, Conditions
from batch_emulator.errors import BatchError, being_deleted, invalid, not_found
from batch_emulator.models import Job, View
from batch_emulator.service.state import ServiceState, ensure_new

# What update_job (PATCH) may change; the rest of a job is fixed once created, or not emulated.
UPDATABLE = {
    "priority",
    "maxParallelTasks",
    "constraints",
    "onAllTasksComplete",
    "poolInfo",
    "metadata",
    "allowTaskPreemption",
    "onTaskFailure",
}
# What replace_job (PUT) resets when it is not given: the service's defaults (None: removed).
REPLACED = {
    "priority": None,
    "maxParallelTasks": None,
    "allowTaskPreemption": None,
    "constraints": None,
    "metadata": None,
    "onAllTasksComplete": None,
}
# Jobs in these states refuse what changes them (409, with the service's code).
_ENDED = {"completed": "JobCompleted", "terminating": "JobBeingTerminated", "deleting": "JobBeingDeleted"}


class JobOps(ServiceState):
    """Uses tasks.py (queue), scheduler.py (schedule), jobtasks.py (the manager, preparation and release tasks),
    autopools.py (the pool a job brings) and runtime.py."""

    def create_job(self, body: dict) -> View:
        validation.job(body)
        with self.lock:
            ensure_new(self.jobs, "Job", body["id"])
            for guard in self.guards:
                guard.admit_job(self, body)
            job = Job(body["id"], body, "active", pool_id=self.create_auto_pool(body))
            self.jobs[job.id.lower()] = job
            self.add_job_manager(job)
            self.schedule()
            limit = fields.duration(body.get("constraints") or {}, "maxWallClockTime")
            if limit < wire.INFINITE:
                self.later(limit.total_seconds(), self._deadline, job)
            self.check_all_complete(job)
            return job.view()

    def job(self, job_id: str) -> Job:
        """The job, whatever its state. Call under the lock."""
        job = self.jobs.get(job_id.lower())
        if job is None:
            raise not_found("Job", job_id)
        return job

    def all_jobs(self) -> list[Job]:
        """Every job, whatever its state. Call under the lock."""
        return list(self.jobs.values())

    def active_job(self, job_id: str) -> Job:
        """The job, refused (409) once it is completed, terminating or being deleted. Call under the lock."""
        job = self.job(job_id)
        if job.state in _ENDED:
            raise BatchError(409, _ENDED[job.state], f"The specified job is {job.state}.", JobId=job.id)
        return job

    def update_job(self, job_id: str, body: dict, when: Conditions = ANY) -> View:
        """PATCH: replaces only the properties given."""
        validation.job_update(body)
        if refused := set(body) - UPDATABLE:
            raise fields.unsupported(sorted(refused)[0])
        return self._change_job(job_id, {k: v for k, v in body.items() if v is not None}, when)

    def replace_job(self, job_id: str, body: dict, when: Conditions = ANY) -> View:
        """PUT: replaces every updatable property; one not given is reset to the service's default (constraints
        and metadata removed, priority 0, ...). `poolInfo` is required."""
        validation.job_update(body)
        if refused := set(body) - UPDATABLE - {"onTaskFailure"}:
            raise fields.unsupported(sorted(refused)[0])
        fields.require(body, "poolInfo")
        return self._change_job(job_id, {**REPLACED, **body}, when)

    def _change_job(self, job_id: str, changes: dict, when: Conditions) -> View:
        with self.lock:
            job = self.active_job(job_id)
            when.check(job.etag, job.modified)
            if changes.get("poolInfo") is not None:
                changes = {**changes, "poolInfo": self.auto_pool_change(job, changes["poolInfo"])}
            _check_completion(job, changes)
            spec = {**job.spec, **changes}
            job.spec = {k: v for k, v in spec.items() if v is not None}
            job.touch()
            self.check_all_complete(job)
            self.schedule()
            return job.view()

    def terminate_job(self, job_id: str, reason: str | None, when: Conditions = ANY) -> None:
        with self.lock:
            job = self.active_job(job_id)
            when.check(job.etag, job.modified)
            self.terminate(job, reason or "UserTerminate")

    def delete_job(self, job_id: str, when: Conditions = ANY) -> None:
        with self.lock:
            job = self.job(job_id)
            if job.state == "deleting":
                raise being_deleted("Job", job.id)
            when.check(job.etag, job.modified)
            job.set_state("deleting")
            runs = [t.run for t in job.tasks.values() if t.run]
            self.stop_preparations(job)
        for run in runs:
            run.cancel("deleted")
        self.background(self._reclaim_job, job)

    def _reclaim_job(self, job: Job) -> None:
        """In a node thread: once its tasks have ended and its release tasks have run, the job is gone."""
        self.wait_until(lambda: not any(t.run for t in job.tasks.values()))
        self.wait_for_release(job)
        with self.lock:
            nodes = {t.last_node for t in job.tasks.values() if t.last_node}
            if self.jobs.get(job.id.lower()) is job:
                del self.jobs[job.id.lower()]
            self.end_auto_pool(job)
        for node in nodes:
            shutil.rmtree(node.root / "workitems" / job.id, ignore_errors=True)

    # ---- reads: views made under the lock --------------------------------------------------------

    def list_jobs(self, base: str) -> list[dict]:
        with self.lock:
            return [job.to_wire(base) for job in self.jobs.values()]

    def job_view(self, job_id: str, base: str, when: Conditions = ANY) -> View:
        with self.lock:
            job = self.job(job_id)
            when.check(job.etag, job.modified, read=True)
            return job.view(base)

    # ---- ending ----------------------------------------------------------------------------------

    def _deadline(self, job: Job) -> None:
        with self.lock:
            if job.state == "active" and self.jobs.get(job.id.lower()) is job:
                self.terminate(job, "MaxWallClockTimeExpiry")

    def terminate(self, job: Job, reason: str) -> None:
        """The job terminates: its running tasks are killed, and it completes once they have ended."""
        job.set_state("terminating")
        job.terminate_reason = reason
        runs = [t.run for t in job.tasks.values() if t.run]
        for run in runs:
            run.cancel("terminated")
        self.stop_preparations(job)
        self.maybe_terminated(job)

    def maybe_terminated(self, job: Job) -> None:
        """A terminating job completes when the last of its running tasks has ended and its release tasks have
        run."""
        if job.state == "terminating" and not any(t.run for t in job.tasks.values()) and not self.releasing(job):
            job.end_time = wire.now()
            job.set_state("completed")
            self.end_auto_pool(job)

    def check_all_complete(self, job: Job) -> None:
        """onAllTasksComplete: terminatejob. As on Azure, a job with no tasks counts as having completed them all."""
        if job.state == "active" and job.open_tasks == 0 and job.option("onAllTasksComplete", "") == "terminatejob":
            self.terminate(job, "AllTasksComplete")

    def resume_jobs(self) -> None:
        """After a restart: queues rebuilt from the tasks' states, time limits armed again (from creation)."""
        with self.lock:
            for job in self.jobs.values():
                job.open_tasks = sum(t.state != "completed" for t in job.tasks.values())
                for task in sorted(job.tasks.values(), key=lambda t: t.created):
                    if task.state == "active":
                        self.queue(task)
                limit = fields.duration(job.spec.get("constraints") or {}, "maxWallClockTime")
                if job.state == "active" and limit < wire.INFINITE:
                    self.later((job.created + limit - wire.now()).total_seconds(), self._deadline, job)
                self.check_all_complete(job)


def _check_completion(job: Job, changes: dict) -> None:
    """A job's onAllTasksComplete cannot change back from terminatejob to noaction (None: the default)."""
    if "onAllTasksComplete" not in changes or job.option("onAllTasksComplete", "noaction") != "terminatejob":
        return
    if (changes["onAllTasksComplete"] or "noaction").lower() == "noaction":
        raise invalid("onAllTasksComplete", changes["onAllTasksComplete"], "It cannot change back to noaction.")
