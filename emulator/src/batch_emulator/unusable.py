"""Unusable nodes, as Azure shows a node it can no longer run tasks on (its disk full, its VM unreachable, ...).

A node turned unusable shows state `unusable` (also in the node counts) and, by default, one entry in its
`errors`: code `DiskFull`, the case Batch's own documentation describes ("If the temporary disk runs out of
space ... the node will move to Unusable state and a node error will be reported saying that the disk is full",
learn.microsoft.com/azure/batch/batch-pool-node-error-checking; the code as Microsoft's CromwellOnAzure reads it
from the service). Its running tasks are stopped and requeued: back to `active`, `requeueCount` + 1, `retryCount`
unchanged, and they run again on another node ("Batch will retry Tasks when a recovery operation is triggered on
a Node ... Retries due to recovery operations are independent of and are not counted against the
maxTaskRetryCount", the BatchTask model of the Batch REST API 2025-06-01). It takes no new task, and it still
counts as a node of the pool (and against the core quota), as on Azure, until it is removed
(`POST /pools/{id}/removenodes`) or recovers: after `recoverAfterSeconds`, or with `"usable": true`, it reboots
(runs its start task again) and is idle again, as Batch does when it recovers a node. A user's reboot of an
unusable node is refused (409 NodeStateUnusable), as on Azure (service/nodes.py).

Only an admin call (`POST /_emulator/pools/{poolId}/unusable`, admin.py) or the random `--unusable-rate` turns
nodes unusable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batch_emulator.errors import BatchError, invalid
from batch_emulator.models import Node, Pool
from batch_emulator.random_events import RandomNodeEvents

if TYPE_CHECKING:
    from batch_emulator.service import BatchService

# Nodes that can turn unusable: those holding a VM and not leaving. One pre-empted, rebooting or leaving cannot.
ELIGIBLE = ("creating", "starting", "waitingforstarttask", "starttaskfailed", "idle", "running")
DISK_FULL = {
    "code": "DiskFull",
    "message": "There is not enough disk space on the node",
    "errorDetails": [{"name": "Path", "value": "/mnt/batch/tasks"}],
}


def update(service: BatchService, pool_id: str, body: dict) -> dict:
    """POST /_emulator/pools/{poolId}/unusable: `nodeIds`, a count `nodes` (busy ones first) or `all: true`;
    `usable: true` turns them back. Answers the pool's id and the nodes changed."""
    node_ids, count, recover, error = _read(body)
    usable = body.get("usable", False)
    if not isinstance(usable, bool):
        raise invalid("usable", usable, "It must be true or false.")
    with service.lock:
        pool = service.active_pool(pool_id)
        if usable:
            chosen = _pick(service, pool, node_ids, count, ("unusable",))
            for node in chosen:
                service.reboot(node)  # Batch's recovery: it boots again and runs its start task
            return {"poolId": pool.id, "usableNodeIds": [n.id for n in chosen]}
        chosen = _pick(service, pool, node_ids, count, ELIGIBLE)
        for node in chosen:
            turn_unusable(service, node, error, recover)
        return {"poolId": pool.id, "unusableNodeIds": [n.id for n in chosen]}


def _read(body: dict) -> tuple[list[str] | None, int | None, float | None, dict | None]:
    """The nodes asked for (ids, or a count; both None: all), the recovery delay and the node error; 400 unless
    well-formed."""
    node_ids, count, every = body.get("nodeIds"), body.get("nodes"), body.get("all", False)
    if every not in (True, False):
        raise invalid("all", every, "It must be true or false.")
    if sum(x is not None and x is not False for x in (node_ids, count, every)) != 1:
        raise BatchError(400, "InvalidRequestBody", "Give one of nodeIds, nodes or all.")
    if node_ids is not None and (not isinstance(node_ids, list) or not all(isinstance(i, str) for i in node_ids)):
        raise invalid("nodeIds", node_ids, "It must be a list of node ids.")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise invalid("nodes", count, "It must be a whole number of nodes, 0 or more.")
    recover = body.get("recoverAfterSeconds")
    if recover is not None and (isinstance(recover, bool) or not isinstance(recover, (int, float)) or recover < 0):
        raise invalid("recoverAfterSeconds", recover, "It must be a number of seconds, 0 or more.")
    error = body.get("error", DISK_FULL)
    if error is not None and not (
        isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message", ""), str)
    ):
        raise invalid("error", error, "It must be a node error {code, message, errorDetails}, or null for none.")
    return node_ids, count, None if recover is None else float(recover), error


def _pick(service: BatchService, pool: Pool, node_ids: list[str] | None, count: int | None, states) -> list[Node]:
    """The nodes named (each once; one in another state refused, 409), or `count` of those in `states` (busy
    ones first: a test wants to see its tasks survive), or all of them."""
    if node_ids is not None:
        chosen: list[Node] = []
        for node_id in node_ids:
            node = service.node(pool.id, node_id)
            if node.state not in states:
                message = f"Node {node.id} is {node.state}: it must be {' or '.join(states)}."
                raise BatchError(409, "NodeStateInvalid", message, PoolId=pool.id, NodeId=node.id)
            if node not in chosen:
                chosen.append(node)
        return chosen
    found = sorted((n for n in pool.nodes if n.state in states), key=lambda n: -len(n.running))
    return found if count is None else found[:count]


def turn_unusable(service: BatchService, node: Node, error: dict | None = DISK_FULL, recover: float | None = None):
    """The node is unusable now: its tasks requeued, `errors` showing `error`; it recovers after `recover` seconds
    (None: not by itself). Call under the service's lock."""
    service.interrupt(node, "unusable")
    node.errors = [dict(error)] if error else []
    if recover is not None:
        service.later(recover, _recover, service, node, node.boot_serial)


def _recover(service: BatchService, node: Node, serial: int) -> None:
    with service.lock:
        if node in node.pool.nodes and node.state == "unusable" and node.boot_serial == serial:
            service.reboot(node)


class RandomUnusable(RandomNodeEvents):
    """Turns each idle or running node unusable at random, `rate` times per node-hour on average; each recovers
    after `recover_seconds` (None: never, it waits to be removed)."""

    name = "batch-unusable"

    def __init__(
        self,
        service: BatchService,
        rate: float,
        tick: float = 0.5,
        seed: int | None = None,
        recover_seconds: float | None = None,
    ) -> None:
        super().__init__(service, rate, per=3600, tick=tick, seed=seed)
        self.recover_seconds = recover_seconds

    def eligible(self, pool: Pool) -> list[Node]:
        return [n for n in pool.nodes if n.state in ("idle", "running")]

    def hit(self, node: Node) -> None:
        turn_unusable(self.service, node, DISK_FULL, self.recover_seconds)
