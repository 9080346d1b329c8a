"""What a pool says while a job's tasks wait: resize and autoscale errors, and nodes gone unusable. Azure's bad
days (a core quota reached, a region out of capacity, nodes that stop working) end a run in minutes, with
the cause and the fix, instead of at the job's time limit.

- A pool that stopped resizing with errors and has no node: the run ends, naming the error and what to
  change. With some nodes (a partial allocation) the run goes on with them, and says so once.
- An autoscale pool whose formula failed and that has no node: the run ends with the formula's error.
- A node that stays `unusable` for `policy.REMOVE_UNUSABLE_AFTER` is removed from a fixed pool, which is then
  resized back to its size: Batch gives a new node (its tasks were requeued by Batch: not their fault;
  Batch refuses to reboot an unusable node, and to remove nodes from an autoscale pool). A pool with no
  usable node for `policy.NO_USABLE_NODE_LIMIT` ends the run, naming the nodes and their errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from azure.batch import BatchClient
from azure.batch import models as m
from prefect import get_run_logger

from topn.tasks import policy
from topn.tasks.settings import BatchSettings

_POOL_FIELDS = [
    "id",
    "vmSize",
    "allocationState",
    "resizeErrors",
    "enableAutoScale",
    "autoScaleRun",
    "currentDedicatedNodes",
    "currentLowPriorityNodes",
    "targetDedicatedNodes",
    "targetLowPriorityNodes",
]
_USABLE = {"idle", "running", "creating", "starting", "waitingforstarttask", "rebooting", "reimaging"}


@dataclass
class PoolWatch:
    """What the watch knows of the pool between looks."""

    checked: float = 0.0
    partial_said: bool = False
    unusable_since: dict[str, float] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    none_usable_since: float | None = None


def check(client: BatchClient, settings: BatchSettings, pool_id: str, seen: PoolWatch, idle: bool) -> str | None:
    """One look at the pool (at most every policy.POOL_CHECK_EVERY seconds while no task runs, six times
    less often while some do): why its job can never run, in one line with the fix, or None."""
    now = time.monotonic()
    if now - seen.checked < policy.POOL_CHECK_EVERY * (1 if idle else 6):
        return None
    seen.checked = now
    pool = client.get_pool(pool_id, select=_POOL_FIELDS)
    nodes = (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0)
    run_error = pool.auto_scale_run.error if pool.enable_auto_scale and pool.auto_scale_run else None
    if run_error is not None and nodes == 0:
        return f"pool {pool_id}'s autoscale formula failed: {_error(run_error)}: fix the formula or the pool's mode"
    errors = pool.resize_errors or []
    if errors and str(pool.allocation_state).lower().endswith("steady"):
        if nodes == 0:
            return f"pool {pool_id} cannot get nodes: {_error(errors[0])}: {fix(errors[0].code, settings)}"
        if not seen.partial_said:
            seen.partial_said = True
            target = (pool.target_dedicated_nodes or 0) + (pool.target_low_priority_nodes or 0)
            get_run_logger().warning(
                "pool %s got %d of %d nodes (%s): going on with them; %s",
                pool_id,
                nodes,
                max(target, nodes),
                _error(errors[0]),
                fix(errors[0].code, settings),
            )
    return _unusable(client, pool, seen, now) if nodes else None


def _unusable(client: BatchClient, pool: m.BatchPool, seen: PoolWatch, now: float) -> str | None:
    """Replaces nodes that stay unusable; the end of the run when none has been usable for too long."""
    nodes = list(client.list_nodes(pool.id, select=["id", "state", "errors"]))
    bad = [n for n in nodes if n.state == "unusable"]
    seen.unusable_since = {n.id: seen.unusable_since.get(n.id, now) for n in bad}
    stale = [
        n for n in bad if n.id not in seen.removed and now - seen.unusable_since[n.id] >= policy.REMOVE_UNUSABLE_AFTER
    ]
    if stale and not pool.enable_auto_scale and str(pool.allocation_state).lower().endswith("steady"):
        _replace(client, pool, stale)
        seen.removed.update(n.id for n in stale)
    if not bad or any(n.state in _USABLE for n in nodes):
        seen.none_usable_since = None
        return None
    seen.none_usable_since = seen.none_usable_since or now
    if now - seen.none_usable_since < policy.NO_USABLE_NODE_LIMIT:
        return None
    named = "; ".join(f"{n.id}: {_node_errors(n)}" for n in bad[:3])
    named += f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
    return (
        f"pool {pool.id} has had no usable node for {policy.NO_USABLE_NODE_LIMIT:.0f} s ({named}): "
        "delete the pool (topn run --delete-pool, or in Batch Explorer) so that the next run gets new nodes, "
        "or try another TOPN_VM_SIZE or image"
    )


def _replace(client: BatchClient, pool: m.BatchPool, nodes: list[m.BatchNode]) -> None:
    """Removes unusable nodes from a fixed pool and asks for as many new ones (removenodes lowers the
    targets); both are sent, and later looks see the new nodes boot."""
    for node in nodes:
        get_run_logger().warning(
            "node %s of pool %s is unusable (%s): replacing it; its tasks run elsewhere",
            node.id,
            pool.id,
            _node_errors(node),
        )
    client.begin_remove_nodes(
        pool.id,
        m.BatchNodeRemoveOptions(node_ids=[n.id for n in nodes], node_deallocation_option="requeue"),
        polling_interval=1,
    ).result()
    client.begin_resize_pool(
        pool.id,
        m.BatchPoolResizeOptions(
            target_dedicated_nodes=pool.target_dedicated_nodes, target_low_priority_nodes=pool.target_low_priority_nodes
        ),
    )


def fix(code: str | None, settings: BatchSettings) -> str:
    """What to change for a resize error, in the settings' own words."""
    size, spot = settings.vm_size, settings.spot_nodes
    if code == "AccountCoreQuotaReached":
        other = "use the spot nodes you allow (TOPN_SPOT_NODES) instead" if spot else "set TOPN_SPOT_NODES"
        return (
            f"request more dedicated cores for {size} in the Batch account's quotas (Azure portal: the Batch "
            f"account, Quotas), or {other}, or a smaller TOPN_DEDICATED_NODES"
        )
    if code in ("AccountLowPriorityCoreQuotaReached", "AccountSpotCoreQuotaReached"):
        return (
            f"request more spot cores for {size} in the Batch account's quotas (Azure portal: the Batch "
            "account, Quotas), or set a smaller TOPN_SPOT_NODES and TOPN_DEDICATED_NODES instead"
        )
    if code in ("AllocationFailed", "AllocationTimedout", "OverconstrainedAllocationRequest"):
        return (
            f"the region has no capacity for {size} now: try another TOPN_VM_SIZE, dedicated instead of spot "
            "nodes (or the reverse), or run again later"
        )
    return "fix what the message says, in the pool's settings (TOPN_VM_SIZE, TOPN_DEDICATED_NODES, TOPN_SPOT_NODES)"


def _error(error: m.ResizeError | m.AutoScaleRunError | m.BatchNodeError) -> str:
    pairs = getattr(error, "error_values", None) or getattr(error, "error_details", None) or []
    values = ", ".join(f"{v.name}={v.value}" for v in pairs if v.name and v.value)
    return f"{error.code}: {(error.message or '').rstrip('.')}" + (f" ({values})" if values else "")


def _node_errors(node: m.BatchNode) -> str:
    return "; ".join(_error(e) for e in node.errors or []) or "no error given"
