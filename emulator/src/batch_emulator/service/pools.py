"""Pools: create, update, resize (nodes added or removed towards the targets), delete, and their views."""

from __future__ import annotations

import shutil

from batch_emulator import fields, formula, validation, wire
from batch_emulator.conditions import ANY, Conditions
from batch_emulator.errors import BatchError, being_deleted, invalid, missing, not_found
from batch_emulator.models import Node, Pool, View
from batch_emulator.service.state import ServiceState, ensure_new

MAX_NODES_REMOVED = 100  # per removenodes request, as the service documents
STOPPING_SECONDS = 1.0  # at most, from stopping to steady
RESIZE_STOPPED = {
    "code": "ResizeStopped",
    "message": "Desired number of dedicated nodes could not be allocated as the resize operation was stopped by user",
}


class PoolOps(ServiceState):
    """Uses nodes.py (add_node, remove_node, reclaim_nodes, reboot), autoscale.py and runtime.py."""

    def create_pool(self, body: dict) -> View:
        validation.pool(body)
        if body.get("enableAutoScale"):
            self.check_autoscale_settings(body)
        with self.lock:
            ensure_new(self.pools, "Pool", body["id"])
            for guard in self.guards:
                guard.admit_pool(self, body)
            pool = Pool(body["id"], body, "active")
            self.pools[pool.id.lower()] = pool
            if body.get("enableAutoScale"):
                self.start_autoscale(pool)
            self.resize(pool)
            return pool.view()

    def pool(self, pool_id: str) -> Pool:
        """The pool, whatever its state. Call under the lock."""
        pool = self.pools.get(pool_id.lower())
        if pool is None:
            raise not_found("Pool", pool_id)
        return pool

    def active_pool(self, pool_id: str) -> Pool:
        """The pool, refused (409 PoolBeingDeleted) while it is being deleted. Call under the lock."""
        pool = self.pool(pool_id)
        if pool.state == "deleting":
            raise being_deleted("Pool", pool.id)
        return pool

    def active_pools(self) -> list[Pool]:
        """The pools not being deleted. Call under the lock."""
        return [pool for pool in self.pools.values() if pool.state == "active"]

    def all_pools(self) -> list[Pool]:
        """Every pool, also those being deleted (they still count against the account's pool quota). Call under
        the lock."""
        return list(self.pools.values())

    def delete_pool(self, pool_id: str, when: Conditions = ANY) -> None:
        with self.lock:
            pool = self.active_pool(pool_id)
            when.check(pool.etag, pool.modified)
            pool.set_state("deleting")
            pool.spec = {**pool.spec, "targetDedicatedNodes": 0, "targetLowPriorityNodes": 0}
            nodes, pool.nodes = pool.nodes, []
        self.background(self._reclaim_pool, pool, nodes)

    def resize_pool(self, pool_id: str, body: dict, when: Conditions = ANY) -> View:
        spec = {
            "targetDedicatedNodes": body.get("targetDedicatedNodes", 0),
            "targetLowPriorityNodes": body.get("targetLowPriorityNodes", 0),
        }
        fields.integer(spec, "targetDedicatedNodes", 0, 100, 0)
        fields.integer(spec, "targetLowPriorityNodes", 0, 100, 0)
        fields.duration(body, "resizeTimeout")
        deallocation = fields.choice(body, "nodeDeallocationOption", set(formula.DEALLOCATION), "requeue")
        with self.lock:
            pool = self.active_pool(pool_id)
            when.check(pool.etag, pool.modified)
            self._check_resizable(pool)
            pool.spec = {**pool.spec, **spec}
            self.resize(pool, deallocation)
            return pool.view()

    def update_pool(self, pool_id: str, body: dict, when: Conditions = ANY) -> View:
        """PATCH: replaces only the properties given. A new start task runs on the nodes that join from now on
        (and on every node after a restart, a reboot); the nodes in the pool keep the one they ran, as on Azure.
        The view is the pool as updated, not as autoscale may change it next."""
        return self._change_pool(pool_id, validation.pool_update(body), when)

    def replace_pool_properties(self, pool_id: str, body: dict, when: Conditions = ANY) -> View:
        """POST /pools/{id}/updateproperties: replaces all the updatable properties; those not given are removed
        (the start task) or reset (targetNodeCommunicationMode `default`), as on Azure. Nodes as `update_pool`."""
        return self._change_pool(pool_id, validation.pool_replace(body), when)

    def _change_pool(self, pool_id: str, changes: dict, when: Conditions) -> View:
        with self.lock:
            pool = self.active_pool(pool_id)
            when.check(pool.etag, pool.modified)
            spec = {**pool.spec, **changes}  # a new dict: a booting node reads either the old or the new
            pool.spec = {k: v for k, v in spec.items() if v is not None}
            pool.touch()
            return pool.view()

    def remove_nodes(self, pool_id: str, body: dict, when: Conditions = ANY) -> View:
        """POST /pools/{poolId}/removenodes: the nodes named leave (their tasks as `nodeDeallocationOption` says,
        whatever their state: an unusable or pre-empted node too) and the pool's targets drop by as many, as the
        service does. Only on a steady pool without autoscale; at most 100 nodes per request."""
        node_ids = body.get("nodeList")
        if node_ids is None:
            raise missing("nodeList")
        if not isinstance(node_ids, list) or not node_ids or not all(isinstance(i, str) for i in node_ids):
            raise invalid("nodeList", node_ids, "It must be a list of node ids.")
        if len(node_ids) > MAX_NODES_REMOVED:
            raise invalid("nodeList", len(node_ids), f"At most {MAX_NODES_REMOVED} nodes may be removed per request.")
        fields.duration(body, "resizeTimeout")
        deallocation = fields.choice(body, "nodeDeallocationOption", set(formula.DEALLOCATION), "requeue")
        with self.lock:
            pool = self.active_pool(pool_id)
            when.check(pool.etag, pool.modified)
            self._check_resizable(pool)
            nodes = list(dict.fromkeys(self.node(pool.id, node_id) for node_id in node_ids))
            dedicated = sum(n.dedicated for n in nodes)
            spot = len(nodes) - dedicated
            spec = {
                "targetDedicatedNodes": max(0, (pool.spec.get("targetDedicatedNodes") or 0) - dedicated),
                "targetLowPriorityNodes": max(0, (pool.spec.get("targetLowPriorityNodes") or 0) - spot),
            }
            pool.spec = {**pool.spec, **spec}
            self.set_allocation(pool, "resizing")
            pool.resize_errors = []
            for node in nodes:
                if node.state != "leavingpool":
                    self._shrink(node, deallocation)
            self.later(self.boot_seconds / 2, self._allocated, pool)
            return pool.view()

    def _check_resizable(self, pool: Pool) -> None:
        if pool.spec.get("enableAutoScale"):
            message = "The pool has automatic scaling enabled: disable it before resizing."
            raise BatchError(409, "OperationInvalidForCurrentState", message, PoolId=pool.id)
        if pool.allocation_state != "steady":
            raise BatchError(409, "PoolBeingResized", "The pool is already being resized.", PoolId=pool.id)

    def stop_resize(self, pool_id: str, when: Conditions = ANY) -> View:
        """Stops a resize where it is: the nodes not allocated yet (still `creating`) are not added, the pool goes
        `stopping`, then `steady` with the resize error ResizeStopped; its targets stay as they were asked."""
        with self.lock:
            pool = self.active_pool(pool_id)
            when.check(pool.etag, pool.modified)
            if pool.allocation_state != "resizing":
                self.set_allocation(pool, "steady")
                return pool.view()
            unallocated = [n for n in pool.nodes if n.state == "creating"]
            for node in unallocated:
                self.remove_node(node)
            if unallocated:
                pool.resize_errors.append(dict(RESIZE_STOPPED))
            self.set_allocation(pool, "stopping")
            self.later(min(self.boot_seconds / 2, STOPPING_SECONDS), self._allocated, pool)
            return pool.view()

    # ---- reads: views made under the lock --------------------------------------------------------

    def list_pools(self, base: str) -> list[dict]:
        """Every pool's JSON, with URLs under the client's `base` URL."""
        with self.lock:
            return [pool.to_wire(base) for pool in self.pools.values()]

    def pool_view(self, pool_id: str, base: str, when: Conditions = ANY) -> View:
        with self.lock:
            pool = self.pool(pool_id)
            when.check(pool.etag, pool.modified, read=True)
            return pool.view(base)

    def find_pool(self, pool_id: str, when: Conditions = ANY) -> View | None:
        """The pool's view without its JSON, None if there is none (a HEAD answers 404 without a body)."""
        with self.lock:
            pool = self.pools.get(pool_id.lower())
            if pool:
                when.check(pool.etag, pool.modified, read=True)
            return pool.view() if pool else None

    # ---- allocation ------------------------------------------------------------------------------

    def set_allocation(self, pool: Pool, state: str) -> None:
        if pool.allocation_state != state:
            pool.allocation_state, pool.allocation_time = state, wire.now()
            pool.touch()

    def resize(self, pool: Pool, deallocation: str = "requeue") -> None:
        """Adds or removes nodes towards the pool's targets; idle nodes go first. Nodes are added as far as the
        account's quotas and the region's capacity allow (`guards`); what they refuse is the pool's resizeErrors
        once it is steady, its targets unchanged, as on Azure. Call under the lock."""
        self.set_allocation(pool, "resizing")
        pool.resize_errors = []
        for dedicated, target in ((True, "targetDedicatedNodes"), (False, "targetLowPriorityNodes")):
            have = [n for n in pool.nodes if n.dedicated == dedicated and n.state != "leavingpool"]
            wanted = pool.spec.get(target) or 0
            for _ in range(self._allocatable(pool, dedicated, wanted - len(have))):
                self.add_node(pool, dedicated)
            for node in sorted(have, key=lambda n: len(n.running))[: max(0, len(have) - wanted)]:
                self._shrink(node, deallocation)
        self.later(self.boot_seconds / 2, self._allocated, pool)

    def _allocatable(self, pool: Pool, dedicated: bool, wanted: int) -> int:
        """How many of `wanted` new nodes the guards let the pool have; the first that refuses names the error."""
        for guard in self.guards if wanted > 0 else ():
            fits, error = guard.allocatable(self, pool, dedicated, wanted)
            if fits < wanted:
                wanted = max(0, fits)
                if error:
                    pool.resize_errors.append(error)
        return max(0, wanted)

    def _shrink(self, node: Node, deallocation: str) -> None:
        """A node removed: its running tasks are requeued, or terminated, or (taskcompletion, retaineddata)
        it takes no new task and leaves once they are done."""
        if node.running and deallocation in ("taskcompletion", "retaineddata"):
            node.set_state("leavingpool")  # no free slots: it leaves in drained()
            return
        if deallocation == "terminate":
            for task in node.running:
                if task.run:
                    task.run.cancel("terminated")
        self.remove_node(node)

    def _allocated(self, pool: Pool) -> None:
        with self.lock:
            if pool.state == "active":
                self.set_allocation(pool, "steady")

    def _reclaim_pool(self, pool: Pool, nodes: list[Node]) -> None:
        self.reclaim_nodes(nodes)
        with self.lock:
            if self.pools.get(pool.id.lower()) is pool:
                del self.pools[pool.id.lower()]
        shutil.rmtree(self.data_dir / "pools" / pool.id, ignore_errors=True)

    def resume_pools(self) -> None:
        """After a restart: every node boots again (its start task runs again), as after a reboot on Azure."""
        with self.lock:
            for pool in self.pools.values():
                for node in pool.nodes:
                    self.reboot(node)
                self.set_allocation(pool, "resizing")
                self.later(self.boot_seconds / 2, self._allocated, pool)
                if pool.spec.get("enableAutoScale"):
                    self.start_autoscale(pool)
