"""Spot (low-priority) node pre-emption, as Azure does it when it takes the capacity back.

A pre-empted node keeps its id and shows state `preempted` in the node list and node counts (and in
`currentLowPriorityNodes`, as the service counts it); what ran on it is stopped and requeued (the task's
`requeueCount` grows, its `retryCount` does not), and the pool keeps its target: after a while
the pre-empted node is replaced by a fresh one that boots and runs the start task.

The machine itself leaves the pool at once: the `Node` that ran the tasks is swapped for a stand-in
with the same id in state `preempted`, so everything the service does for a node that left its pool
(start task and boot timers that find it gone, running tasks cancelled and requeued, its folder
removed) happens through the same paths as a pool shrink.

Only an admin call (`POST /_emulator/pools/{poolId}/preempt`, admin.py) or the random `--preempt-rate`
pre-empts nodes; dedicated nodes never are.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from batch_emulator.errors import BatchError, invalid
from batch_emulator.models import Node, Pool
from batch_emulator.random_events import RandomNodeEvents

if TYPE_CHECKING:
    from batch_emulator.service import BatchService

# Nodes a pre-emption can hit: those holding a VM. One already pre-empted or leaving is not there any more.
PREEMPTIBLE = ("creating", "starting", "waitingforstarttask", "starttaskfailed", "idle", "running")


def preempt(service: BatchService, pool_id: str, body: dict, recover_seconds: float | None = None) -> list[str]:
    """Pre-empts spot nodes of a pool now: `body` may name `nodeIds`, or a count `nodes`; by default all
    of them. Answers the ids of the nodes pre-empted. A replacement for each comes after `recover_seconds`
    (default: the body's `recoverAfterSeconds`, else the service's boot time)."""
    return preempt_pool(service, pool_id, body, recover_seconds)["preemptedNodeIds"]


def preempt_pool(service: BatchService, pool_id: str, body: dict, recover_seconds: float | None = None) -> dict:
    """`preempt`, answered as the admin endpoint does: the pool's id (as created) and the nodes pre-empted."""
    node_ids, count, recover = _read(body, recover_seconds)
    with service.lock:
        pool = service.active_pool(pool_id)
        chosen = _named(service, pool, node_ids) if node_ids is not None else _spot(pool, count)
        delay = service.boot_seconds if recover is None else float(recover)
        for node in chosen:
            _preempt_node(service, node, delay)
        return {"poolId": pool.id, "preemptedNodeIds": [n.id for n in chosen]}


def _read(body: dict, recover_seconds: float | None) -> tuple[list[str] | None, int | None, float | None]:
    """The request's node ids, count and recovery delay, refused (400) unless well-formed."""
    node_ids, count = body.get("nodeIds"), body.get("nodes")
    if node_ids is not None and count is not None:
        raise BatchError(400, "InvalidRequestBody", "Give either nodeIds or nodes, not both.")
    if node_ids is not None and (not isinstance(node_ids, list) or not all(isinstance(i, str) for i in node_ids)):
        raise invalid("nodeIds", node_ids, "It must be a list of node ids.")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise invalid("nodes", count, "It must be a whole number of nodes, 0 or more.")
    recover = body.get("recoverAfterSeconds", recover_seconds)
    if recover is not None and (isinstance(recover, bool) or not isinstance(recover, (int, float)) or recover < 0):
        raise invalid("recoverAfterSeconds", recover, "It must be a number of seconds, 0 or more.")
    return node_ids, count, recover


def _named(service: BatchService, pool: Pool, node_ids: list[str]) -> list[Node]:
    """The nodes named, each once; a dedicated one, or one holding no VM, is refused (409)."""
    chosen: list[Node] = []
    for node_id in node_ids:
        node = service.node(pool.id, node_id)
        if node.dedicated:
            reason = "is a dedicated node: only spot (low-priority) nodes can be pre-empted"
            raise BatchError(409, "NodeNotPreemptible", f"Node {node.id} {reason}.", PoolId=pool.id, NodeId=node.id)
        if node.state not in PREEMPTIBLE:
            reason = f"is {node.state}: it holds no VM that could be pre-empted"
            raise BatchError(409, "NodeNotPreemptible", f"Node {node.id} {reason}.", PoolId=pool.id, NodeId=node.id)
        if node not in chosen:
            chosen.append(node)
    return chosen


def _spot(pool: Pool, count: int | None) -> list[Node]:
    """`count` of the pool's spot nodes (all by default), busy ones first: a pre-emption is what a test wants
    to see its tasks survive."""
    spot = [n for n in pool.nodes if not n.dedicated and n.state in PREEMPTIBLE]
    spot.sort(key=lambda n: -len(n.running))
    return spot if count is None else spot[:count]


def _preempt_node(service: BatchService, node: Node, recover_seconds: float) -> None:
    """Call under the service's lock."""
    stand_in = dataclasses.replace(node, running={}, start_run=None)
    stand_in.set_state("preempted")
    # The machine is gone: its tasks are cancelled and requeued, its folder removed, as on a shrink.
    service.remove_node(node, stand_in)
    node.pool.touch()
    service.later(recover_seconds, _recover, service, stand_in)


def _recover(service: BatchService, stand_in: Node) -> None:
    """Spot capacity is back: the pre-empted node makes way for a new one, if the pool still wants it."""
    with service.lock:
        pool = stand_in.pool
        if service.closed or stand_in not in pool.nodes or pool.state != "active":
            return  # a shrink or a deletion took it already
        pool.nodes.remove(stand_in)
        pool.touch()
        if sum(not n.dedicated for n in pool.nodes) < (pool.spec.get("targetLowPriorityNodes") or 0):
            service.add_node(pool, dedicated=False)


class RandomPreempter(RandomNodeEvents):
    """Pre-empts each running spot node at random, `rate` times per node-minute on average."""

    name = "batch-preempter"

    def __init__(self, service: BatchService, rate: float, tick: float = 0.5, seed: int | None = None) -> None:
        super().__init__(service, rate, per=60, tick=tick, seed=seed)

    def eligible(self, pool: Pool) -> list[Node]:
        return [n for n in pool.nodes if not n.dedicated and n.state in ("idle", "running")]

    def hit(self, node: Node) -> None:
        _preempt_node(self.service, node, self.service.boot_seconds)
