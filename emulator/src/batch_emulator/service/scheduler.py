"""The scheduler: ready tasks placed on free node slots, each attempt run in a node thread, its outcome
applied (requeue, retry, complete), and what a completed task's exit conditions say for its job and its
dependents."""

from __future__ import annotations

import time

from batch_emulator import fields, wire
from batch_emulator.models import Node, NodeJobTasks, Task
from batch_emulator.service.state import ServiceState
from batch_emulator.taskrun import Outcome, TaskRun, environment, failure


class Scheduler(ServiceState):
    """Uses nodes.py (node_env, drained), jobs.py (terminate, maybe_terminated, check_all_complete), jobtasks.py
    (slots_for, may_run_on, preparation_for, await_preparation, manager_completed), runtime.py."""

    def schedule(self) -> None:
        """Places ready tasks on free node slots, higher job priority first. Call under the lock."""
        if self.closed:
            return
        began = time.thread_time()  # CPU of this thread only: waiting for the GIL is not scheduling
        jobs = sorted(
            (j for j in self.jobs.values() if j.state == "active" and j.ready),
            key=lambda j: (-j.priority, j.created),
        )
        for job in jobs:
            pool = self.pools.get(job.pool_id.lower())
            if pool is None or pool.state != "active":
                continue
            limit = job.spec.get("maxParallelTasks", -1) or -1
            running = job.running_count() if limit > 0 else 0
            while job.ready and (limit < 0 or running < limit):
                task = job.ready[0]
                if task.state != "active" or task.pending:
                    job.ready.popleft()
                    continue
                slots = self.slots_for(task, pool.slots_per_node)
                node = pool.pick_node(slots, lambda n, t=task: self.may_run_on(t, n))
                if node is None:
                    break
                job.ready.popleft()
                self._start(task, node, slots)
                running += 1
        self.scheduler_seconds += time.thread_time() - began

    def scheduler_stats(self) -> dict:
        """What GET /_emulator/stats shows of the scheduler: attempts started, and its own CPU time."""
        with self.lock:
            return {"tasksScheduled": self.scheduled, "seconds": round(self.scheduler_seconds, 6)}

    def _start(self, task: Task, node: Node, slots: int) -> None:
        self.scheduled += 1
        task.node = task.last_node = node
        task.start_time, task.end_time, task.exit_code, task.failure_info = wire.now(), None, None, None
        preparation = self.preparation_for(task, node)
        task.set_state("preparing" if preparation else "running")
        node.running[task] = slots
        node.ran(task)
        node.occupancy_changed()
        task_dir = task.directory()
        task.run = TaskRun(
            task.spec["commandLine"],
            task_dir,
            environment(node.root, task_dir, self._task_settings(task, node)),
            task.spec.get("resourceFiles") or [],
            task.spec.get("outputFiles") or [],
            self.processes,
            task.wall_clock,
        )
        self.background(self._execute, task, node, task.run, preparation)

    def _task_settings(self, task: Task, node: Node) -> dict[str, str]:
        """The task's AZ_BATCH_* variables, its job's common environment and its own. A task with
        authenticationTokenSettings gets AZ_BATCH_AUTHENTICATION_TOKEN (opaque: see the README)."""
        job = task.job
        settings = {**self.node_env(node), "AZ_BATCH_JOB_ID": job.id, "AZ_BATCH_TASK_ID": task.id}
        if prep := job.special("jobPreparationTask"):
            prep_dir = node.root / "workitems" / job.id / "job-1" / prep["id"]
            settings.update(AZ_BATCH_JOB_PREP_DIR=str(prep_dir), AZ_BATCH_JOB_PREP_WORKING_DIR=str(prep_dir / "wd"))
        if task.spec.get("authenticationTokenSettings"):
            settings["AZ_BATCH_AUTHENTICATION_TOKEN"] = f"emulator-task-token.{job.id}.{task.id}"
        return {
            **settings,
            **fields.environment(job.spec, "commonEnvironmentSettings"),
            **fields.environment(task.spec, "environmentSettings"),
        }

    def _execute(self, task: Task, node: Node, run: TaskRun, preparation: NodeJobTasks | None) -> None:
        """In a node thread, outside the lock: the attempt, once the job's preparation on the node succeeded."""
        if preparation is not None and not self.await_preparation(preparation, run):
            outcome = Outcome(run.cancelled or "unprepared", wire.now(), wire.now())
        else:
            with self.lock:
                if task.run is run and task.state == "preparing":
                    task.set_state("running")
            outcome = run.run()
        with self.lock:
            self._finish(task, node, run, outcome)

    def _finish(self, task: Task, node: Node, run: TaskRun, outcome: Outcome) -> None:
        node.running.pop(task, None)
        node.tasks_run += outcome.kind != "unprepared"
        node.tasks_succeeded += outcome.succeeded
        node.occupancy_changed()
        if task.run is run:
            task.run, task.node = None, None
            self._apply(task, outcome)
        self.drained(node)
        self.maybe_terminated(task.job)
        self.schedule()

    def _apply(self, task: Task, outcome: Outcome) -> None:
        """An attempt's outcome: back to the queue (first, for a requeue), a retry (last), or completed."""
        job = task.job
        if outcome.kind == "unprepared":  # the job's preparation failed on that node: another one runs it
            task.start_time = None
            task.set_state("active")
            job.ready.appendleft(task)
        elif outcome.kind == "requeue":
            task.requeue_count, task.last_requeue_time = task.requeue_count + 1, wire.now()
            task.set_state("active")
            job.ready.appendleft(task)
        elif (
            outcome.kind == "exit"
            and not outcome.succeeded
            and outcome.exit_code is not None
            and (task.max_retries == -1 or task.retry_count < task.max_retries)
        ):
            task.retry_count += 1
            task.last_retry_time = wire.now()
            task.set_state("active")
            job.ready.append(task)
        elif outcome.kind != "deleted":
            self.complete(task, outcome)

    def complete(self, task: Task, outcome: Outcome) -> None:
        """The task is completed: its dependents released, or its job ended as its exit conditions say."""
        job = task.job
        task.exit_code, task.end_time = outcome.exit_code, outcome.end_time
        task.failure_info = _failure_info(outcome)
        task.set_state("completed")
        job.open_tasks -= 1
        if self.satisfied(task):
            for dependent in job.waiting.pop(task.id.lower(), []):
                dependent.pending.discard(task.id.lower())
                if not dependent.pending and dependent.state == "active":
                    job.ready.append(dependent)
        elif self._ends_job(task) and job.state == "active":
            self.terminate(job, "TaskFailed")
        self.manager_completed(task)
        self.check_all_complete(job)

    def satisfied(self, task: Task) -> bool:
        """Whether the task's dependents may run: it succeeded, or its exit options say `satisfy`."""
        if task.state != "completed":
            return False
        return task.result == "success" or exit_options(task).get("dependencyAction", "block") == "satisfy"

    @staticmethod
    def _ends_job(task: Task) -> bool:
        """onTaskFailure performexitoptionsjobaction, and the failed task's jobAction terminate."""
        return (
            task.job.option("onTaskFailure", "noaction") == "performexitoptionsjobaction"
            and exit_options(task).get("jobAction", "terminate").lower() == "terminate"
        )


def _failure_info(outcome: Outcome) -> dict | None:
    if outcome.kind == "terminated":
        return failure(
            "usererror", "TaskEnded", "The task was ended by user request, or because its job was terminated."
        )
    if outcome.failure is None and outcome.exit_code not in (0, None):
        return failure(
            "usererror",
            "FailureExitCode",
            "The task process exited with an exit code representing a failure",
            Message=f"The task process exited with exit code {outcome.exit_code}",
        )
    return outcome.failure


def exit_options(task: Task) -> dict:
    """The exitOptions that apply to a completed task (docs/batch-wire.md 7.7)."""
    conditions = task.spec.get("exitConditions") or {}
    code = task.exit_code
    for entry in conditions.get("exitCodes") or []:
        if entry.get("code") == code:
            return entry.get("exitOptions") or {}
    for entry in conditions.get("exitCodeRanges") or []:
        if code is not None and entry.get("start", 0) <= code <= entry.get("end", -1):
            return entry.get("exitOptions") or {}
    category = (task.failure_info or {}).get("code", "")
    if task.result == "failure" and code is None and "preProcessingError" in conditions:
        return conditions["preProcessingError"] or {}
    if category.startswith("FileUpload") and "fileUploadError" in conditions:
        return conditions["fileUploadError"] or {}
    if task.result == "success":
        return {"jobAction": "none", "dependencyAction": "satisfy"}
    return conditions.get("default") or {}
