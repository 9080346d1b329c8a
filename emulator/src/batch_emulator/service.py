"""The Batch service's behaviour in plain Python: operations, state machines and the scheduler.

Everything that changes state holds one lock. Slow work (downloads, processes, uploads) runs in a
thread per attempt, outside the lock, and reports back through `_finish`.
"""

from __future__ import annotations

import shutil
import threading
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import timedelta
from pathlib import Path

from batch_emulator import formula, validation, wire
from batch_emulator.errors import BatchError, being_deleted, exists, invalid, not_found
from batch_emulator.models import Job, Node, Pool, Task
from batch_emulator.processes import ProcessTable
from batch_emulator.taskrun import Outcome, TaskRun, environment, failure

MAX_TASKS_PER_COLLECTION = 100


def _ensure_new(table: dict, kind: str, ident: str) -> None:
    """Ids are unique without regard to case; one being deleted cannot be reused yet."""
    existing = table.get(ident.lower())
    if existing is not None:
        raise being_deleted(kind, ident) if existing.state == "deleting" else exists(kind, ident)


class BatchService:
    """One Batch account's pools, nodes, jobs and tasks, with nodes as folders under `data_dir`."""

    def __init__(self, data_dir: Path, account: str, account_url: str = "", boot_seconds: float = 0.2) -> None:
        self.data_dir, self.account, self.account_url = Path(data_dir), account, account_url
        self.boot_seconds = boot_seconds
        self.lock = threading.RLock()
        self.pools: dict[str, Pool] = {}
        self.jobs: dict[str, Job] = {}
        self.scheduled = 0
        self.scheduler_seconds = 0.0
        # Threads are reused: starting one per task costs more than scheduling it.
        self._workers = ThreadPoolExecutor(max_workers=4096, thread_name_prefix="batch-node")
        self._work: set[Future] = set()
        self._closed = False
        self.processes = ProcessTable()
        self._scalers: dict[Pool, formula.Schedule] = {}  # autoscale pools' samples and schedule
        self._autoscaler: threading.Thread | None = None

    # ---- pools and nodes -------------------------------------------------------------------------

    def create_pool(self, body: dict) -> Pool:
        validation.pool(body)
        if body.get("enableAutoScale"):
            self._autoscale_settings(body)
        with self.lock:
            _ensure_new(self.pools, "Pool", body["id"])
            pool = Pool(body["id"], body, "active")
            self.pools[pool.id.lower()] = pool
            if body.get("enableAutoScale"):
                self._autoscale_enable(pool)
            self._resize(pool)
            return pool

    def pool(self, pool_id: str) -> Pool:
        pool = self.pools.get(pool_id.lower())
        if pool is None:
            raise not_found("Pool", pool_id)
        return pool

    def delete_pool(self, pool_id: str) -> None:
        with self.lock:
            pool = self._active_pool(pool_id)
            pool.set_state("deleting")
            pool.spec = {**pool.spec, "targetDedicatedNodes": 0, "targetLowPriorityNodes": 0}
            nodes, pool.nodes = pool.nodes, []
        self._background(self._reclaim_pool, pool, nodes)

    def resize_pool(self, pool_id: str, body: dict) -> None:
        spec = {
            "targetDedicatedNodes": body.get("targetDedicatedNodes", 0),
            "targetLowPriorityNodes": body.get("targetLowPriorityNodes", 0),
        }
        validation.integer(spec, "targetDedicatedNodes", 0, 100, 0)
        validation.integer(spec, "targetLowPriorityNodes", 0, 100, 0)
        validation.duration(body, "resizeTimeout")
        deallocation = validation.choice(body, "nodeDeallocationOption", set(formula.DEALLOCATION), "requeue")
        with self.lock:
            pool = self._active_pool(pool_id)
            if pool.spec.get("enableAutoScale"):
                message = "The pool has automatic scaling enabled: disable it before resizing."
                raise BatchError(409, "OperationInvalidForCurrentState", message, PoolId=pool.id)
            if pool.allocation_state != "steady":
                raise BatchError(409, "PoolBeingResized", "The pool is already being resized.", PoolId=pool.id)
            pool.spec = {**pool.spec, **spec}
            self._resize(pool, deallocation)

    def update_pool(self, pool_id: str, body: dict) -> Pool:
        """PATCH: replaces only the properties given. A new start task runs on the nodes that join from now on
        (and on every node after a restart, a reboot); the nodes in the pool keep the one they ran, as on Azure."""
        changes = validation.pool_update(body)
        with self.lock:
            pool = self._active_pool(pool_id)
            pool.spec = {**pool.spec, **changes}  # a new dict: a booting node reads either the old or the new
            pool.touch()
            return pool

    def stop_resize(self, pool_id: str) -> None:
        with self.lock:
            pool = self._active_pool(pool_id)
            self._set_allocation(pool, "steady")

    # ---- autoscale: formula.py evaluates, this samples, schedules and applies ----------------------

    autoscale_min_interval = timedelta(minutes=5)  # the service's minimum; the emulator's option lowers it
    autoscale_sample_seconds = formula.DEFAULT_SAMPLE_SECONDS

    def enable_autoscale(self, pool_id: str, body: dict) -> Pool:
        with self.lock:
            pool = self._active_pool(pool_id)
            spec = {**pool.spec, "enableAutoScale": True}
            if not pool.spec.get("enableAutoScale"):
                validation.require(body, "autoScaleFormula")
                if pool.allocation_state != "steady":
                    raise BatchError(409, "PoolBeingResized", "The pool is being resized.", PoolId=pool.id)
                spec.pop("autoScaleEvaluationInterval", None)
            for prop in ("autoScaleFormula", "autoScaleEvaluationInterval"):
                if body.get(prop) is not None:
                    spec[prop] = body[prop]
            self._autoscale_settings(spec)
            pool.spec = spec
            pool.touch()
            self._autoscale_enable(pool)
            return pool

    def disable_autoscale(self, pool_id: str) -> Pool:
        with self.lock:
            pool = self._active_pool(pool_id)
            dropped = ("autoScaleFormula", "autoScaleEvaluationInterval")
            pool.spec = {k: v for k, v in pool.spec.items() if k not in dropped}
            pool.spec["enableAutoScale"] = False
            self._scalers.pop(pool, None)
            pool.touch()
            return pool

    def evaluate_autoscale(self, pool_id: str, body: dict) -> dict:
        """An AutoScaleRun of the formula on the pool as it is now, not applied; a bad formula is the run's error."""
        text = validation.require(body, "autoScaleFormula")
        with self.lock:
            pool = self._active_pool(pool_id)
            if not pool.spec.get("enableAutoScale"):
                raise BatchError(409, "OperationInvalidForCurrentState",
                                 "The pool does not have automatic scaling enabled.", PoolId=pool.id)  # fmt: skip
            return formula.evaluate(str(text), self._autoscale_state(pool)).to_wire()

    def _autoscale_settings(self, spec: dict) -> None:
        """Refuses a formula with a syntax error (400) and an interval out of range; stores the interval used."""
        try:
            formula.check(spec.get("autoScaleFormula"))
        except formula.FormulaError as e:
            raise BatchError(400, e.code, e.message, **e.values()) from None
        validation.autoscale_interval(spec, self.autoscale_min_interval)

    def _autoscale_enable(self, pool: Pool) -> None:
        """Evaluates now, then every autoScaleEvaluationInterval; samples every autoscale_sample_seconds."""
        period = timedelta(seconds=self.autoscale_sample_seconds)
        scaler = self._scalers.setdefault(pool, formula.Schedule(formula.History(period)))
        now = time.monotonic()
        scaler.interval = validation.duration(pool.spec, "autoScaleEvaluationInterval").total_seconds()
        scaler.next_eval = now + scaler.interval
        if not scaler.history.samples:
            scaler.history.add(wire.now(), self._pool_metrics(pool))
            scaler.next_sample = now + self.autoscale_sample_seconds
        self._autoscale_run(pool)
        if self._autoscaler is None and not self._closed:
            self._autoscaler = threading.Thread(target=self._autoscale_loop, name="batch-autoscale", daemon=True)
            self._autoscaler.start()

    def _autoscale_run(self, pool: Pool) -> None:
        run = formula.evaluate(pool.spec["autoScaleFormula"], self._autoscale_state(pool))
        pool.autoscale_run = run.to_wire()
        pool.touch()
        targets = (pool.spec.get("targetDedicatedNodes") or 0, pool.spec.get("targetLowPriorityNodes") or 0)
        if run.error is None and (run.target_dedicated, run.target_low_priority) != targets:
            pool.spec = {**pool.spec, "targetDedicatedNodes": run.target_dedicated,
                         "targetLowPriorityNodes": run.target_low_priority}  # fmt: skip
            self._resize(pool, run.deallocation)

    def _autoscale_loop(self) -> None:
        while not self._closed:
            time.sleep(min(0.1, self.autoscale_sample_seconds / 4))
            with self.lock:
                now = time.monotonic()
                for pool, scaler in list(self._scalers.items()):
                    try:
                        if self.pools.get(pool.id.lower()) is not pool or pool.state != "active":
                            del self._scalers[pool]
                            continue
                        if now >= scaler.next_sample:
                            scaler.history.add(wire.now(), self._pool_metrics(pool))
                            scaler.next_sample = now + self.autoscale_sample_seconds
                        if now >= scaler.next_eval:
                            scaler.next_eval = now + scaler.interval
                            self._autoscale_run(pool)
                    except Exception:  # one pool's fault must not stop the others' autoscale
                        traceback.print_exc()

    def _pool_metrics(self, pool: Pool) -> dict[str, float]:
        counts: Counter[str] = Counter()
        for job in self.jobs.values():
            if job.state == "active" and job.pool_id.lower() == pool.id.lower():
                for task in job.tasks.values():
                    counts["running" if task.state in ("running", "preparing") else task.result or task.state] += 1
        usable = sum(n.state in ("idle", "running") for n in pool.nodes)
        return formula.metrics(counts["active"], counts["running"], counts["success"], counts["failure"], usable)

    def _autoscale_state(self, pool: Pool) -> formula.PoolState:
        scaler = self._scalers.get(pool)
        period = timedelta(seconds=self.autoscale_sample_seconds)
        return formula.PoolState(
            now=wire.now(),
            current_dedicated=sum(n.dedicated for n in pool.nodes),
            current_low_priority=sum(not n.dedicated for n in pool.nodes),
            target_dedicated=pool.spec.get("targetDedicatedNodes") or 0,
            target_low_priority=pool.spec.get("targetLowPriorityNodes") or 0,
            task_slots_per_node=pool.slots_per_node,
            live=self._pool_metrics(pool),
            history=scaler.history if scaler else formula.History(period),
        )

    def node(self, pool_id: str, node_id: str) -> Node:
        for node in self.pool(pool_id).nodes:
            if node.id.lower() == node_id.lower():
                return node
        raise not_found("Node", node_id)

    def _active_pool(self, pool_id: str) -> Pool:
        pool = self.pool(pool_id)
        if pool.state == "deleting":
            raise being_deleted("Pool", pool.id)
        return pool

    def _set_allocation(self, pool: Pool, state: str) -> None:
        if pool.allocation_state != state:
            pool.allocation_state, pool.allocation_time = state, wire.now()
            pool.touch()

    def _resize(self, pool: Pool, deallocation: str = "requeue") -> None:
        """Adds or removes nodes towards the pool's targets; idle nodes go first. The running tasks of a node
        removed are requeued, or terminated, or (taskcompletion, retaineddata) the node takes no new task and
        leaves once they are done."""
        self._set_allocation(pool, "resizing")
        for dedicated, target in ((True, "targetDedicatedNodes"), (False, "targetLowPriorityNodes")):
            have = [n for n in pool.nodes if n.dedicated == dedicated and n.state != "leavingpool"]
            for _ in range(len(have), pool.spec.get(target) or 0):
                self._add_node(pool, dedicated)
            surplus = sorted(have, key=lambda n: len(n.running))[: max(0, len(have) - (pool.spec.get(target) or 0))]
            for node in surplus:
                if node.running and deallocation in ("taskcompletion", "retaineddata"):
                    node.set_state("leavingpool")  # no free slots: it leaves in _drained
                    continue
                if deallocation == "terminate":
                    for task in node.running:
                        if task.run:
                            task.run.cancel("terminated")
                pool.nodes.remove(node)
                self._background(self._reclaim_nodes, [node])
        self._later(self.boot_seconds / 2, self._allocated, pool)

    def _drained(self, node: Node) -> None:
        """A node leaving once its tasks are done (taskcompletion) leaves when the last one ends."""
        if node.state == "leavingpool" and not node.running and node in node.pool.nodes:
            node.pool.nodes.remove(node)
            self._background(self._reclaim_nodes, [node])

    def _allocated(self, pool: Pool) -> None:
        with self.lock:
            if pool.state == "active":
                self._set_allocation(pool, "steady")

    def _add_node(self, pool: Pool, dedicated: bool) -> None:
        pool.node_serial += 1
        stamp = wire.now().strftime("%Y%m%dt%H%M%Sz")
        node_id = f"tvm-{zlib.crc32(pool.id.encode()) % 10**10}_{pool.node_serial}-{stamp}"
        root = self.data_dir / "pools" / pool.id / "nodes" / node_id
        for sub in ("startup", "shared", "workitems", "applications", "fsmounts", "volatile"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        node = Node(
            node_id,
            {},
            "creating",
            pool=pool,
            root=root,
            dedicated=dedicated,
            ip=f"10.0.{pool.node_serial // 250}.{pool.node_serial % 250 + 4}",
        )
        pool.nodes.append(node)
        self._later(self.boot_seconds / 2, self._node_starting, node)

    def _node_starting(self, node: Node) -> None:
        with self.lock:
            if node in node.pool.nodes:
                node.set_state("starting")
                self._later(self.boot_seconds / 2, self._boot, node)

    def _boot(self, node: Node) -> None:
        with self.lock:
            if node not in node.pool.nodes:
                return
            start = node.pool.spec.get("startTask")  # the pool's as it is now: update_pool may have changed it
            node.start_task = start or {}
            if not start:
                node.set_state("idle")
                self._schedule()
                return
            wait = start.get("waitForSuccess", True)
            node.set_state("waitingforstarttask" if wait else "idle")
            node.start_task_info = {
                "state": "running",
                "startTime": wire.rfc3339(wire.now()),
                "retryCount": 0,
            }
            self._schedule()
        self._background(self._run_start_task, node, start, wait)

    def _run_start_task(self, node: Node, start: dict, wait: bool) -> None:
        task_dir = node.root / "startup"
        settings = {**validation.environment(start, "environmentSettings"), **self._node_env(node)}
        retries, attempt = start.get("maxTaskRetryCount") or 0, 0
        while True:
            run = TaskRun(
                start["commandLine"],
                task_dir,
                environment(node.root, task_dir, settings),
                start.get("resourceFiles") or [],
                [],
                self.processes,
            )
            with self.lock:
                # Once closing, a run registered now would escape close()'s cancelling: it never starts.
                if node not in node.pool.nodes or self._closed:
                    return
                node.start_run = run
            outcome = run.run()
            with self.lock:
                node.start_run = None
                if node not in node.pool.nodes:
                    return
                info = node.start_task_info
                if outcome.kind == "exit" and not outcome.succeeded and (retries == -1 or attempt < retries):
                    attempt += 1
                    info.update(retryCount=attempt, lastRetryTime=wire.rfc3339(wire.now()))
                    continue
                info.update(state="completed", endTime=wire.rfc3339(outcome.end_time), retryCount=attempt)
                info["result"] = "success" if outcome.succeeded else "failure"
                if outcome.exit_code is not None:
                    info["exitCode"] = outcome.exit_code
                if not outcome.succeeded:
                    info["failureInfo"] = outcome.failure or failure(
                        "usererror",
                        "FailureExitCode",
                        "The task process exited with an exit code representing a failure",
                    )
                if wait:
                    node.set_state("idle" if outcome.succeeded else "starttaskfailed")
                node.touch()
                self._schedule()
                return

    def _node_env(self, node: Node) -> dict[str, str]:
        return {
            "AZ_BATCH_ACCOUNT_NAME": self.account,
            "AZ_BATCH_ACCOUNT_URL": self.account_url,
            "AZ_BATCH_POOL_ID": node.pool.id,
            "AZ_BATCH_NODE_ID": node.id,
            "AZ_BATCH_NODE_IS_DEDICATED": str(node.dedicated).lower(),
        }

    def _reclaim_pool(self, pool: Pool, nodes: list[Node]) -> None:
        self._reclaim_nodes(nodes)
        with self.lock:
            if self.pools.get(pool.id.lower()) is pool:
                del self.pools[pool.id.lower()]
        shutil.rmtree(self.data_dir / "pools" / pool.id, ignore_errors=True)

    def _reclaim_nodes(self, nodes: list[Node]) -> None:
        """Stops what runs on nodes leaving their pool; their tasks go back to the queue."""
        with self.lock:
            runs = [t.run for n in nodes for t in n.running if t.run] + [n.start_run for n in nodes if n.start_run]
            for node in nodes:
                node.set_state("leavingpool")
        for run in runs:
            run.cancel("requeue")
        self._wait_until(lambda: not any(n.running or n.start_run for n in nodes))
        for node in nodes:
            shutil.rmtree(node.root, ignore_errors=True)

    def _wait_until(self, done: Callable[[], bool], timeout: float = 30) -> None:
        """Waits (outside the lock, checking under it) until killed processes have reported back."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if done():
                    return
            time.sleep(0.02)

    # ---- jobs ------------------------------------------------------------------------------------

    def create_job(self, body: dict) -> Job:
        validation.job(body)
        with self.lock:
            _ensure_new(self.jobs, "Job", body["id"])
            job = Job(body["id"], body, "active", pool_id=body["poolInfo"]["poolId"])
            self.jobs[job.id.lower()] = job
            limit = validation.duration(body.get("constraints") or {}, "maxWallClockTime")
            if limit < wire.INFINITE:
                self._later(limit.total_seconds(), self._job_deadline, job)
            self._check_all_complete(job)
            return job

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id.lower())
        if job is None:
            raise not_found("Job", job_id)
        return job

    def update_job(self, job_id: str, body: dict) -> Job:
        """PATCH: replaces only the properties given."""
        validation.job_update(body)
        refused = set(body) - {
            "priority",
            "maxParallelTasks",
            "constraints",
            "onAllTasksComplete",
            "poolInfo",
            "metadata",
            "allowTaskPreemption",
            "onTaskFailure",
        }
        if refused:
            raise validation.unsupported(sorted(refused)[0])
        with self.lock:
            job = self._active_job(job_id)
            if body.get("poolInfo", {}).get("poolId") not in (None, job.pool_id):
                raise BatchError(409, "JobNotDisabled", "A job's pool can only change while the job is disabled.")
            if (
                job.option("onAllTasksComplete", "noaction") == "terminatejob"
                and body.get("onAllTasksComplete", "terminatejob").lower() == "noaction"
            ):
                raise invalid("onAllTasksComplete", body["onAllTasksComplete"], "It cannot change back to noaction.")
            job.spec = {**job.spec, **body}
            job.touch()
            self._check_all_complete(job)
            self._schedule()
            return job

    def terminate_job(self, job_id: str, reason: str | None) -> None:
        with self.lock:
            self._terminate(self._active_job(job_id), reason or "UserTerminate")

    def delete_job(self, job_id: str) -> None:
        with self.lock:
            job = self.job(job_id)
            if job.state == "deleting":
                raise being_deleted("Job", job.id)
            job.set_state("deleting")
            runs = [t.run for t in job.tasks.values() if t.run]
        for run in runs:
            run.cancel("deleted")
        self._background(self._reclaim_job, job)

    def _reclaim_job(self, job: Job) -> None:
        self._wait_until(lambda: not any(t.run for t in job.tasks.values()))
        with self.lock:
            nodes = {t.last_node for t in job.tasks.values() if t.last_node}
            if self.jobs.get(job.id.lower()) is job:
                del self.jobs[job.id.lower()]
        for node in nodes:
            shutil.rmtree(node.root / "workitems" / job.id, ignore_errors=True)

    def _active_job(self, job_id: str) -> Job:
        job = self.job(job_id)
        codes = {
            "completed": "JobCompleted",
            "terminating": "JobBeingTerminated",
            "deleting": "JobBeingDeleted",
        }
        if job.state in codes:
            raise BatchError(409, codes[job.state], f"The specified job is {job.state}.", JobId=job.id)
        return job

    def _job_deadline(self, job: Job) -> None:
        with self.lock:
            if job.state == "active" and self.jobs.get(job.id.lower()) is job:
                self._terminate(job, "MaxWallClockTimeExpiry")

    def _terminate(self, job: Job, reason: str) -> None:
        job.set_state("terminating")
        job.terminate_reason = reason
        runs = [t.run for t in job.tasks.values() if t.run]
        for run in runs:
            run.cancel("terminated")
        self._maybe_terminated(job)

    def _maybe_terminated(self, job: Job) -> None:
        if job.state == "terminating" and not any(t.run for t in job.tasks.values()):
            job.end_time = wire.now()
            job.set_state("completed")

    def _check_all_complete(self, job: Job) -> None:
        # As on Azure, a job with no tasks counts as having completed them all.
        if job.state == "active" and job.open_tasks == 0 and job.option("onAllTasksComplete", "") == "terminatejob":
            self._terminate(job, "AllTasksComplete")

    # ---- tasks -----------------------------------------------------------------------------------

    def add_task(self, job_id: str, body: dict) -> Task:
        with self.lock:
            job = self._active_job(job_id)
            task = self._add(job, body)
            self._schedule()
            return task

    def add_tasks(self, job_id: str, bodies: list) -> list[dict]:
        """Add task collection: one result per task, success or clienterror (contract 3.5)."""
        if not isinstance(bodies, list) or not bodies:
            raise validation.missing("value")
        if len(bodies) > MAX_TASKS_PER_COLLECTION:
            raise invalid("value", len(bodies), f"A collection holds at most {MAX_TASKS_PER_COLLECTION} tasks.")
        results = []
        with self.lock:
            job = self._active_job(job_id)
            for body in bodies:
                task_id = body.get("id") if isinstance(body, dict) else None
                try:
                    if not isinstance(body, dict):
                        raise invalid("value", body)
                    task = self._add(job, body)
                except BatchError as e:
                    results.append({"status": "clienterror", "taskId": task_id or "", "error": e.as_task_result()})
                    continue
                results.append(
                    {
                        "status": "success",
                        "taskId": task.id,
                        "eTag": task.etag,
                        "lastModified": wire.rfc3339(task.modified),
                    }
                )
            self._schedule()
        return results

    def _add(self, job: Job, body: dict) -> Task:
        validation.task(body, bool(job.spec.get("usesTaskDependencies")))
        key = body["id"].lower()
        if key in job.tasks:
            raise exists("Task", body["id"])
        task = Task(body["id"], body, "active", job=job)
        job.tasks[key] = task
        job.open_tasks += 1
        self._queue(task)
        return task

    def _queue(self, task: Task) -> None:
        """Puts an active task in its job's ready queue, or has it wait for the dependencies not yet met."""
        job, depends = task.job, task.spec.get("dependsOn") or {}
        ids = {d.lower() for d in depends.get("taskIds") or []}
        for r in depends.get("taskIdRanges") or []:
            ids.update(str(i) for i in range(r["start"], r["end"] + 1))
        for dep in ids:
            other = job.tasks.get(dep)
            if other is None or not self._satisfied(other):
                task.pending.add(dep)
                job.waiting.setdefault(dep, []).append(task)
        if not task.pending:
            job.ready.append(task)

    def resume(self) -> None:
        """After `persistence.restore`: queues rebuilt from the tasks' states, time limits armed again,
        and every node booting again (its start task runs again), as after a reboot on Azure."""
        with self.lock:
            for job in self.jobs.values():
                job.open_tasks = sum(t.state != "completed" for t in job.tasks.values())
                for task in sorted(job.tasks.values(), key=lambda t: t.created):
                    if task.state == "active":
                        self._queue(task)
                limit = validation.duration(job.spec.get("constraints") or {}, "maxWallClockTime")
                if job.state == "active" and limit < wire.INFINITE:
                    self._later((job.created + limit - wire.now()).total_seconds(), self._job_deadline, job)
                self._check_all_complete(job)
            for pool in self.pools.values():
                for node in pool.nodes:
                    node.set_state("starting")
                    self._later(self.boot_seconds / 2, self._boot, node)
                self._set_allocation(pool, "resizing")
                self._later(self.boot_seconds / 2, self._allocated, pool)
                if pool.spec.get("enableAutoScale"):
                    self._autoscale_enable(pool)

    def task(self, job_id: str, task_id: str) -> Task:
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
            self._check_all_complete(job)

    def terminate_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self.task(job_id, task_id)
            if task.state == "completed":
                raise BatchError(409, "TaskCompleted", "The specified task is already completed.", TaskId=task.id)
            if task.run:
                task.run.cancel("terminated")
            else:
                self._complete(task, Outcome("terminated", wire.now(), wire.now()))
                self._schedule()

    def reactivate_task(self, job_id: str, task_id: str) -> Task:
        """A failed task runs again: active, its retry count 0, its exit code and failure forgotten."""
        with self.lock:
            task = self.task(job_id, task_id)
            job = self._active_job(task.job.id)  # completed, terminating or deleting jobs refuse it
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
            self._schedule()
            return task

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
        names = ("active", "running", "completed", "succeeded", "failed")
        return {"taskCounts": {k: counts[k] for k in names}, "taskSlotCounts": {k: slots[k] for k in names}}

    # ---- scheduling and running ------------------------------------------------------------------

    def _schedule(self) -> None:
        """Places ready tasks on free node slots, higher job priority first."""
        if self._closed:
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
                node = pool.pick_node(task.slots)
                if node is None:
                    break
                job.ready.popleft()
                self._start(task, node)
                running += 1
        self.scheduler_seconds += time.thread_time() - began

    def _start(self, task: Task, node: Node) -> None:
        self.scheduled += 1
        task.node = task.last_node = node
        task.start_time, task.end_time, task.exit_code, task.failure_info = wire.now(), None, None, None
        task.set_state("running")
        node.running[task] = task.slots
        node.occupancy_changed()
        task_dir = task.directory()
        job = task.job
        settings = {
            **self._node_env(node),
            "AZ_BATCH_JOB_ID": job.id,
            "AZ_BATCH_TASK_ID": task.id,
            **validation.environment(job.spec, "commonEnvironmentSettings"),
            **validation.environment(task.spec, "environmentSettings"),
        }
        task.run = TaskRun(
            task.spec["commandLine"],
            task_dir,
            environment(node.root, task_dir, settings),
            task.spec.get("resourceFiles") or [],
            task.spec.get("outputFiles") or [],
            self.processes,
            task.wall_clock,
        )
        self._background(self._execute, task, node, task.run)

    def _execute(self, task: Task, node: Node, run: TaskRun) -> None:
        outcome = run.run()
        with self.lock:
            self._finish(task, node, run, outcome)

    def _finish(self, task: Task, node: Node, run: TaskRun, outcome: Outcome) -> None:
        node.running.pop(task, None)
        node.tasks_run += 1
        node.tasks_succeeded += outcome.succeeded
        node.occupancy_changed()
        job = task.job
        if task.run is run:
            task.run, task.node = None, None
            if outcome.kind == "requeue":
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
                self._complete(task, outcome)
        self._drained(node)
        self._maybe_terminated(job)
        self._schedule()

    def _complete(self, task: Task, outcome: Outcome) -> None:
        job = task.job
        task.exit_code, task.end_time = outcome.exit_code, outcome.end_time
        task.failure_info = outcome.failure
        if outcome.kind == "terminated":
            task.failure_info = failure(
                "usererror",
                "TaskEnded",
                "The task was ended by user request, or because its job was terminated.",
            )
        elif task.failure_info is None and outcome.exit_code not in (0, None):
            task.failure_info = failure(
                "usererror",
                "FailureExitCode",
                "The task process exited with an exit code representing a failure",
                Message=f"The task process exited with exit code {outcome.exit_code}",
            )
        task.set_state("completed")
        job.open_tasks -= 1
        if self._satisfied(task):
            for dependent in job.waiting.pop(task.id.lower(), []):
                dependent.pending.discard(task.id.lower())
                if not dependent.pending and dependent.state == "active":
                    job.ready.append(dependent)
        elif (job.option("onTaskFailure", "noaction") == "performexitoptionsjobaction"
              and self._exit_options(task).get("jobAction", "terminate").lower() == "terminate"
              and job.state == "active"):  # fmt: skip
            self._terminate(job, "TaskFailed")
        self._check_all_complete(job)

    def _satisfied(self, task: Task) -> bool:
        if task.state != "completed":
            return False
        return task.result == "success" or self._exit_options(task).get("dependencyAction", "block") == "satisfy"

    @staticmethod
    def _exit_options(task: Task) -> dict:
        """The exitOptions that apply to a completed task (contract 7.7)."""
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

    # ---- threads ---------------------------------------------------------------------------------

    def _background(self, target: Callable, *args: object) -> None:
        with self.lock:
            if self._closed:
                return
            future = self._workers.submit(self._guarded, target, *args)
            self._work.add(future)
        future.add_done_callback(self._work.discard)

    @staticmethod
    def _guarded(target: Callable, *args: object) -> None:
        try:
            target(*args)
        except Exception:  # a bug in one node's work must not go unseen, nor stop the others
            traceback.print_exc()

    def _later(self, seconds: float, target: Callable, *args: object) -> None:
        if self._closed:
            return
        timer = threading.Timer(max(0.0, seconds), target, args)
        timer.daemon = True
        timer.start()

    def halt(self) -> None:
        """Stops every task and start task now; nothing starts any more. Their tasks go back to the queue.

        Each attempt is told first (so that it ends as requeued, not as failed by the kill), which kills
        its process; then the process table closes and kills whatever started in between, so none escapes.
        """
        with self.lock:
            self._closed = True
            runs = [t.run for j in self.jobs.values() for t in j.tasks.values() if t.run]
            runs += [n.start_run for p in self.pools.values() for n in p.nodes if n.start_run]
        for run in runs:
            run.cancel("requeue")
        self.processes.close()
        self._workers.shutdown(wait=False, cancel_futures=True)

    def close(self, timeout: float = 10) -> bool:
        """`halt`, then `wait`."""
        self.halt()
        return self.wait(timeout)

    def wait(self, timeout: float = 10) -> bool:
        """Waits up to `timeout` s for the node threads after `halt`; True if all ended in time."""
        with self.lock:
            work = list(self._work)
        return not wait_futures(work, timeout=timeout).not_done
