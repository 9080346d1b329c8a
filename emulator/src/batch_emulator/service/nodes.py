"""Nodes: a folder each, booting (creating, starting, the start task) and leaving their pool (reclaimed).

A node goes `creating` -> `starting` -> `waitingforstarttask` -> `idle`/`running`, or `starttaskfailed`.
One that leaves its pool is out of `pool.nodes` at once; its timers and start task find it gone, and
`reclaim_nodes` stops what still runs on it and removes its folder.
"""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

from batch_emulator import fields, wire
from batch_emulator.errors import BatchError, not_found
from batch_emulator.formula import DEALLOCATION
from batch_emulator.models import Node, Pool, View
from batch_emulator.service.state import ServiceState
from batch_emulator.taskrun import Outcome, TaskRun, environment, failure

NODE_FOLDERS = ("startup", "shared", "workitems", "applications", "fsmounts", "volatile")  # Batch's node layout

# The counters of a BatchNodeCounts, in the service's order; a node state (as on the wire, lower case) counts
# in the one of its name, any other in "unknown".
COUNTER_NAMES = [
    "creating",
    "idle",
    "offline",
    "preempted",
    "rebooting",
    "reimaging",
    "running",
    "starting",
    "startTaskFailed",
    "leavingPool",
    "unknown",
    "unusable",
    "waitingForStartTask",
    "deallocated",
    "deallocating",
    "upgradingOS",
]
COUNTERS = {name.lower(): name for name in COUNTER_NAMES}

# Why a node in this state cannot be rebooted: the service's codes and messages (learn.microsoft.com/rest/api/
# batchservice/batch-status-and-error-codes); any other state gets the generic OperationInvalidForCurrentState.
_NOT_REBOOTABLE = {
    "unusable": ("NodeStateUnusable", "The state of the specified node is unusable."),
    "creating": ("NodeBeingCreated", "The specified node is being created."),
    "starting": ("NodeBeingStarted", "The specified node is being started."),
    "waitingforstarttask": ("NodeBeingStarted", "The specified node is being started."),
    "rebooting": ("NodeBeingRebooted", "The specified node is being rebooted."),
}
_INVALID_STATE = (
    "OperationInvalidForCurrentState",
    "The specified operation is not valid for the current state of the resource.",
)


class NodeOps(ServiceState):
    """Uses pools.py (pool), scheduler.py (schedule) and runtime.py."""

    def node(self, pool_id: str, node_id: str) -> Node:
        """A node in the pool's node list. Call under the lock."""
        for node in self.pool(pool_id).nodes:
            if node.id.lower() == node_id.lower():
                return node
        raise not_found("Node", node_id)

    # ---- reads: views made under the lock --------------------------------------------------------

    def list_nodes(self, pool_id: str, base: str) -> list[dict]:
        with self.lock:
            return [node.to_wire(base) for node in self.pool(pool_id).nodes]

    def node_view(self, pool_id: str, node_id: str, base: str) -> View:
        with self.lock:
            return self.node(pool_id, node_id).view(base)

    def node_folder(self, pool_id: str, node_id: str) -> tuple[Path, str]:
        """The node's folder, and its path (`/pools/p/nodes/n`) for its files' URLs."""
        with self.lock:
            node = self.node(pool_id, node_id)
            return node.root, node.path

    def node_counts(self) -> list[dict]:
        """GET /nodecounts: each pool's nodes by state, dedicated and spot apart, from the nodes a node list shows."""
        with self.lock:
            return [_counts(pool) for pool in sorted(self.pools.values(), key=lambda p: p.id.lower())]

    # ---- joining the pool ------------------------------------------------------------------------

    def add_node(self, pool: Pool, dedicated: bool) -> None:
        """A new node in the pool, booting. Call under the lock."""
        pool.node_serial += 1
        stamp = wire.now().strftime("%Y%m%dt%H%M%Sz")
        node_id = f"tvm-{zlib.crc32(pool.id.encode()) % 10**10}_{pool.node_serial}-{stamp}"
        root = self.data_dir / "pools" / pool.id / "nodes" / node_id
        for sub in NODE_FOLDERS:
            (root / sub).mkdir(parents=True, exist_ok=True)
        ip = f"10.0.{pool.node_serial // 250}.{pool.node_serial % 250 + 4}"
        node = Node(node_id, {}, "creating", pool=pool, root=root, dedicated=dedicated, ip=ip)
        pool.nodes.append(node)
        self.later(self.boot_seconds / 2, self._node_starting, node, node.boot_serial)

    def reboot(self, node: Node) -> None:
        """The node starts again and runs the pool's start task again (after a restart of the emulator, a reboot,
        a recovery): what it showed of errors is gone. Call under the lock."""
        node.boot_serial += 1
        node.errors = []
        self.forget_preparations(node)
        node.set_state("starting")
        self.later(self.boot_seconds / 2, self._boot, node, node.boot_serial)

    def interrupt(self, node: Node, state: str, outcome: str = "requeue") -> None:
        """The node stops what it runs and takes `state` (`unusable`, `rebooting`), in which it is given no task:
        its running tasks end as `outcome` says (requeue: back to the queue, `requeueCount` + 1, not a retry;
        terminated), its start task is given up, and its pending boot timers are stale. Call under the lock."""
        node.boot_serial += 1
        node.set_state(state)
        for task in node.running:
            if task.run:
                task.run.cancel(outcome)
        if node.start_run:
            node.start_run.cancel("requeue")
        self.forget_preparations(node)

    def _node_starting(self, node: Node, serial: int) -> None:
        with self.lock:
            if node in node.pool.nodes and node.boot_serial == serial:
                self.reboot(node)

    def _boot(self, node: Node, serial: int) -> None:
        with self.lock:
            if node not in node.pool.nodes or node.boot_serial != serial:
                return
            start = node.pool.spec.get("startTask")  # the pool's as it is now: update_pool may have changed it
            node.start_task = start or {}
            if not start:
                node.set_state("idle")
                self.schedule()
                return
            wait = start.get("waitForSuccess", True)
            node.set_state("waitingforstarttask" if wait else "idle")
            node.start_task_info = {"state": "running", "startTime": wire.rfc3339(wire.now()), "retryCount": 0}
            self.schedule()
        self.background(self._run_start_task, node, start, wait, serial)

    def _run_start_task(self, node: Node, start: dict, wait: bool, serial: int) -> None:
        """Runs in a node thread: the start task's attempts, each outside the lock."""
        task_dir = node.root / "startup"
        settings = {**fields.environment(start, "environmentSettings"), **self.node_env(node)}
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
                # Once closing, a run registered now would escape halt()'s cancelling: it never starts.
                if node not in node.pool.nodes or self.closed or node.boot_serial != serial:
                    return
                node.start_run = run
            outcome = run.run()
            with self.lock:
                if node.start_run is run:
                    node.start_run = None
                if node not in node.pool.nodes or node.boot_serial != serial:
                    return  # it left, or was interrupted (unusable, rebooted): this run no longer counts
                if outcome.kind == "exit" and not outcome.succeeded and (retries == -1 or attempt < retries):
                    attempt += 1
                    node.start_task_info.update(retryCount=attempt, lastRetryTime=wire.rfc3339(wire.now()))
                    continue
                self._start_task_ended(node, outcome, attempt, wait)
                return

    def _start_task_ended(self, node: Node, outcome: Outcome, attempts: int, wait: bool) -> None:
        info = node.start_task_info
        info.update(state="completed", endTime=wire.rfc3339(outcome.end_time), retryCount=attempts)
        info["result"] = "success" if outcome.succeeded else "failure"
        if outcome.exit_code is not None:
            info["exitCode"] = outcome.exit_code
        if not outcome.succeeded:
            info["failureInfo"] = outcome.failure or failure(
                "usererror", "FailureExitCode", "The task process exited with an exit code representing a failure"
            )
        if wait:
            node.set_state("idle" if outcome.succeeded else "starttaskfailed")
        node.touch()
        self.schedule()

    def node_env(self, node: Node) -> dict[str, str]:
        """The AZ_BATCH_* variables of the node, for its start task and its tasks."""
        return {
            "AZ_BATCH_ACCOUNT_NAME": self.account,
            "AZ_BATCH_ACCOUNT_URL": self.account_url,
            "AZ_BATCH_POOL_ID": node.pool.id,
            "AZ_BATCH_NODE_ID": node.id,
            "AZ_BATCH_NODE_IS_DEDICATED": str(node.dedicated).lower(),
        }

    # ---- leaving the pool ------------------------------------------------------------------------

    def remove_node(self, node: Node, stand_in: Node | None = None) -> None:
        """Takes the node out of its pool (`stand_in` keeps its place in the node list, as a pre-empted node's
        does) and reclaims the machine in a node thread. Call under the lock."""
        nodes = node.pool.nodes
        if stand_in is None:
            nodes.remove(node)
        else:
            nodes[nodes.index(node)] = stand_in
        self.background(self.reclaim_nodes, [node])

    def drained(self, node: Node) -> None:
        """A node leaving, or rebooting, once its tasks are done (taskcompletion) does so when the last one ends."""
        if node.running or node not in node.pool.nodes:
            return
        if node.state == "leavingpool":
            self.remove_node(node)
        elif node.state == "rebooting":
            self.later(self.boot_seconds / 2, self._restart, node, node.boot_serial)

    # ---- rebooting -------------------------------------------------------------------------------

    def reboot_node(self, pool_id: str, node_id: str, body: dict) -> None:
        """POST /pools/{poolId}/nodes/{nodeId}/reboot: the node goes `rebooting` (its tasks requeued, terminated,
        or, with taskcompletion / retaineddata, finished first), then boots and runs the start task again.
        The service reboots a node that is idle or running (and, as users do, one whose start task failed);
        an unusable one is refused (409 NodeStateUnusable), as are nodes still joining or leaving."""
        option = fields.choice(body, "nodeRebootOption", set(DEALLOCATION), "requeue")
        with self.lock:
            node = self.node(self.active_pool(pool_id).id, node_id)
            if node.state not in ("idle", "running", "starttaskfailed"):
                code, message = _NOT_REBOOTABLE.get(node.state, _INVALID_STATE)
                raise BatchError(409, code, message, NodeId=node.id)
            if option in ("taskcompletion", "retaineddata") and node.running:
                node.boot_serial += 1
                node.set_state("rebooting")  # no new task; it reboots in drained() when the last one ends
                return
            self.interrupt(node, "rebooting", "terminated" if option == "terminate" else "requeue")
            self.drained(node)  # at once if nothing ran; else when the last killed task has reported back

    def _restart(self, node: Node, serial: int) -> None:
        with self.lock:
            if node in node.pool.nodes and node.boot_serial == serial and node.state == "rebooting":
                self.reboot(node)

    def reclaim_nodes(self, nodes: list[Node]) -> None:
        """Stops what runs on nodes that left their pool (their tasks go back to the queue), waits for it to
        report back, and removes their folders. Blocks: run it in a node thread."""
        with self.lock:
            runs = [t.run for n in nodes for t in n.running if t.run] + [n.start_run for n in nodes if n.start_run]
            runs += self.special_runs(nodes)
            for node in nodes:
                node.set_state("leavingpool")
        for run in runs:
            run.cancel("requeue")
        self.wait_until(lambda: not any(n.running or n.start_run for n in nodes))
        for node in nodes:
            shutil.rmtree(node.root, ignore_errors=True)


def _counts(pool: Pool) -> dict:
    counts = {"dedicated": _zero(), "lowPriority": _zero()}
    for node in pool.nodes:
        bucket = counts["dedicated" if node.dedicated else "lowPriority"]
        bucket[COUNTERS.get(node.state, "unknown")] += 1
        bucket["total"] += 1
    return {"poolId": pool.id, **counts}


def _zero() -> dict[str, int]:
    return {**dict.fromkeys(COUNTERS.values(), 0), "total": 0}
