"""A job's manager, preparation and release tasks, with the service's semantics.

- The job manager task is a task of the job, added when the job is created at the head of its queue (it starts
  before the others); `runExclusive` gives it a whole node, `allowLowPriorityNode: false` a dedicated one, and once
  it completes with `killJobOnCompletion` the job terminates (reason `JMComplete`).
- The preparation task runs once on a node before the first of the job's tasks there, in its own folder
  (`workitems/<job>/job-1/<id>`), retried up to its `maxTaskRetryCount`. With `waitForSuccess` (the default) the
  job's tasks on that node are `preparing` until it succeeds; if it fails, they go back to the queue and that node
  runs none of the job's tasks any more. A reboot makes it run again before the next task, unless it succeeded and
  `rerunOnNodeRebootAfterSuccess` is false.
- The release task runs when the job ends (terminated, completed, deleted) on every node where the preparation
  ran; the job stays `terminating` (or `deleting`) until they are done.
"""

from __future__ import annotations

from batch_emulator import fields, wire
from batch_emulator.errors import BatchError
from batch_emulator.models import Job, Node, NodeJobTasks, Task
from batch_emulator.service.state import ServiceState
from batch_emulator.taskrun import Outcome, TaskRun, environment, failure

PREPARATION, RELEASE = "jobPreparationTask", "jobReleaseTask"
RELEASE_WAIT_SECONDS = 16 * 60.0  # a deletion waits this long at most for the release tasks (their limit: 15 min)


class JobTaskOps(ServiceState):
    """Uses scheduler.py (schedule, node_env), jobs.py (terminate, maybe_terminated) and runtime.py."""

    def add_job_manager(self, job: Job) -> None:
        """The job's manager task, first in its queue. Call under the lock, when the job is created."""
        spec = job.special("jobManagerTask")
        if spec:
            task = Task(spec["id"], spec, "active", job=job)
            job.tasks[task.id.lower()] = task
            job.open_tasks += 1
            job.ready.appendleft(task)

    def slots_for(self, task: Task, node_slots: int) -> int:
        """The slots the task takes on a node of `node_slots`: all of them for an exclusive job manager."""
        if task.job.is_manager(task) and task.spec.get("runExclusive", True):
            return node_slots
        return task.slots

    def may_run_on(self, task: Task, node: Node) -> bool:
        """Whether the node may run the task: not where the job's preparation failed, nor a manager task that
        does not allow spot nodes on one."""
        job = task.job
        record = job.node_tasks.get(node)
        if record and record.prepared == "failure" and job.special(PREPARATION).get("waitForSuccess", True):
            return False
        return node.dedicated or not job.is_manager(task) or task.spec.get("allowLowPriorityNode", True)

    def manager_completed(self, task: Task) -> None:
        """A completed job manager task with killJobOnCompletion ends its job. Call under the lock."""
        job = task.job
        if job.is_manager(task) and task.spec.get("killJobOnCompletion", True) and job.state == "active":
            self.terminate(job, "JMComplete")

    # ---- preparation -----------------------------------------------------------------------------

    def preparation_for(self, task: Task, node: Node) -> NodeJobTasks | None:
        """The preparation the task must wait for on the node (starting it the first time), or None if it may run
        now. Call under the lock, as the task is placed."""
        job = task.job
        spec = job.special(PREPARATION)
        if not spec:
            return None
        record = job.node_tasks.get(node)
        if record is None:
            record = job.node_tasks[node] = NodeJobTasks(node, f"workitems/{job.id}/job-1/{spec['id']}")
            record.prep = {"state": "running", "startTime": wire.rfc3339(wire.now()), "retryCount": 0}
            self.background(self._prepare, job, node, record, dict(spec))
        return record if spec.get("waitForSuccess", True) and record.prepared != "success" else None

    def await_preparation(self, record: NodeJobTasks, run: TaskRun) -> bool:
        """Waits (in the task's node thread, outside the lock) until the preparation ended or the task is
        cancelled; True if the task may run."""
        while not record.done.wait(0.05):
            if run.cancelled:
                return False
        return record.prepared == "success" and not run.cancelled

    def _prepare(self, job: Job, node: Node, record: NodeJobTasks, spec: dict) -> None:
        """In a node thread: the preparation task's attempts, each outside the lock."""
        retries, attempt = (spec.get("constraints") or {}).get("maxTaskRetryCount") or 0, 0
        while True:
            run = self._special_run(job, node, spec, record.directory)
            with self.lock:
                if self.closed or job.node_tasks.get(node) is not record or node not in node.pool.nodes:
                    return self._preparation_ended(job, node, record, None)
                record.prep_run = run
            outcome = run.run()
            with self.lock:
                record.prep_run = None
                if outcome.kind == "exit" and not outcome.succeeded and (retries == -1 or attempt < retries):
                    attempt += 1
                    record.prep.update(retryCount=attempt, lastRetryTime=wire.rfc3339(wire.now()))
                    continue
                return self._preparation_ended(job, node, record, outcome)

    def _preparation_ended(self, job: Job, node: Node, record: NodeJobTasks, outcome: Outcome | None) -> None:
        """Call under the lock. A preparation cut off (its node rebooted or left, its job ended) leaves no record:
        it runs again before the job's next task there."""
        cut_off = outcome is None or outcome.kind not in ("exit", "timeout", "preprocessing")
        if cut_off and job.state == "active":
            if job.node_tasks.get(node) is record:
                del job.node_tasks[node]
        else:  # ended, or cut off by its job's end: the release still runs on this node
            record.prep.update(_ended(outcome or Outcome("terminated", wire.now(), wire.now())))
        record.done.set()
        job.touch()
        self.schedule()

    def forget_preparations(self, node: Node) -> None:
        """A node reboots: its preparations run again before the next task, except those that succeeded with
        rerunOnNodeRebootAfterSuccess false; failed ones keep the node out of their job. Call under the lock."""
        for job in self.all_jobs():
            record = job.node_tasks.get(node)
            if record is None:
                continue
            if record.prep_run:
                record.prep_run.cancel("requeue")
            rerun = job.special(PREPARATION).get("rerunOnNodeRebootAfterSuccess", True)
            if record.prepared == "success" and rerun:
                del job.node_tasks[node]

    def special_runs(self, nodes: list[Node]) -> list[TaskRun]:
        """The preparation and release attempts running on these nodes (leaving their pool). Call under the lock."""
        return [
            run
            for job in self.all_jobs()
            for node in nodes
            if (record := job.node_tasks.get(node))
            for run in (record.prep_run, record.release_run)
            if run
        ]

    def stop_preparations(self, job: Job) -> None:
        """The job ends: preparations still running are cancelled. Call under the lock."""
        for record in job.node_tasks.values():
            if record.prep_run:
                record.prep_run.cancel("terminated")

    # ---- release ---------------------------------------------------------------------------------

    def releasing(self, job: Job) -> bool:
        """Whether the job's release tasks still run, starting them on every node where the preparation ran
        (still in its pool) the first time. Call under the lock, once the job's tasks have all ended."""
        spec = job.special(RELEASE)
        if not spec or self.closed:
            return False
        if any(r.prep_run for r in job.node_tasks.values()):
            return True  # a preparation being cancelled: the release follows it
        for node, record in job.node_tasks.items():
            if record.release is None and node in node.pool.nodes:
                record.release_directory = f"workitems/{job.id}/job-1/{spec['id']}"
                record.release = {"state": "running", "startTime": wire.rfc3339(wire.now())}
                record.release_run = self._special_run(job, node, spec, record.release_directory)
                self.background(self._release, job, record, record.release_run)
        return any(r.release and r.release["state"] == "running" for r in job.node_tasks.values())

    def wait_for_release(self, job: Job) -> None:
        """Blocks (in a node thread) until the job's release tasks have run: before a deleted job goes."""
        self.wait_until(lambda: not self.releasing(job), timeout=RELEASE_WAIT_SECONDS)

    def _release(self, job: Job, record: NodeJobTasks, run: TaskRun) -> None:
        outcome = run.run()
        with self.lock:
            record.release_run = None
            record.release.update(_ended(outcome))
            job.touch()
            self.maybe_terminated(job)

    def _special_run(self, job: Job, node: Node, spec: dict, directory: str) -> TaskRun:
        task_dir = node.root / directory
        settings = {
            **self.node_env(node),
            "AZ_BATCH_JOB_ID": job.id,
            "AZ_BATCH_TASK_ID": spec["id"],
            **fields.environment(job.spec, "commonEnvironmentSettings"),
            **fields.environment(spec, "environmentSettings"),
        }
        limit = (spec.get("constraints") or {}).get("maxWallClockTime") or spec.get("maxWallClockTime")
        return TaskRun(
            spec["commandLine"],
            task_dir,
            environment(node.root, task_dir, settings),
            spec.get("resourceFiles") or [],
            [],
            self.processes,
            wire.parse_duration(limit) if limit else wire.INFINITE,
        )

    # ---- reads -----------------------------------------------------------------------------------

    def preparation_and_release_status(self, job_id: str, base: str) -> list[dict]:
        """GET /jobs/{jobId}/jobpreparationandreleasetaskstatus: one item per node (still in its pool) where the
        preparation ran; 409 JobPreparationTaskOrReleaseTaskNotSpecified for a job without them."""
        with self.lock:
            job = self.job(job_id)
            if not job.special(PREPARATION) and not job.special(RELEASE):
                raise BatchError(
                    409,
                    "JobPreparationTaskOrReleaseTaskNotSpecified",
                    "The specified job has neither a job preparation task nor a job release task.",
                    JobId=job.id,
                )
            return [r.to_wire(base) for node, r in job.node_tasks.items() if node in node.pool.nodes]


def _ended(outcome: Outcome) -> dict:
    """A preparation's or release's execution info once it completed."""
    info: dict = {"state": "completed", "endTime": wire.rfc3339(outcome.end_time)}
    info["result"] = "success" if outcome.succeeded else "failure"
    if outcome.exit_code is not None:
        info["exitCode"] = outcome.exit_code
    if outcome.kind not in ("exit", "timeout", "preprocessing"):
        info["failureInfo"] = failure("usererror", "TaskEnded", "The task was ended because its job ended.")
    elif not outcome.succeeded:
        info["failureInfo"] = outcome.failure or failure(
            "usererror", "FailureExitCode", "The task process exited with an exit code representing a failure"
        )
    return info
