"""The region's capacity: how many VMs of a pool's size Azure can give it now. By default there is no end to it;
`POST /_emulator/pools/{poolId}/capacity` (admin.py) or `--capacity DEDICATED,LOWPRIORITY` (EmulatorConfig, every
pool) caps the nodes of each kind a pool can hold.

A resize (fixed, or computed by autoscale) beyond gets the nodes that fit and goes steady with the resize error
the service shows when Azure Compute has no VMs left: code `AllocationFailed`, message "Desired number of dedicated
nodes could not be allocated" (or "... low priority nodes ..."), and a `values` entry `Reason` carrying Azure
Compute's own message. The code, the message and the `Reason` entry are those of the service's troubleshooting
page (learn.microsoft.com/troubleshoot/azure/general/azure-batch-pool-resizing-failure, source
github.com/MicrosoftDocs/SupportArticles-docs, support/azure/general/azure-batch-pool-resizing-failure.md); the
Reason text is Azure Compute's capacity error as VM deployments get it ("Allocation failed. We do not have
sufficient capacity for the requested VM size in this region...", e.g. github.com/vmware-tanzu/community-edition/
issues/3963). The spot wording of the message is inferred from the dedicated one.
The targets stay as asked; the pool does not try again by itself (a new resize does), as on Azure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batch_emulator.errors import BatchError, invalid
from batch_emulator.models import Pool
from batch_emulator.service.state import Guard

if TYPE_CHECKING:
    from batch_emulator.service import BatchService

KINDS = ("dedicated", "lowPriority")
REASON = (
    "Allocation failed. We do not have sufficient capacity for the requested VM size in this region. "
    "Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance"
)
Limits = tuple[int | None, int | None]  # (dedicated, low priority); None: no end


def allocation_failed(dedicated: bool) -> dict:
    """The ResizeError of a pool Azure found no VMs for."""
    kind = "dedicated" if dedicated else "low priority"
    message = f"Desired number of {kind} nodes could not be allocated"
    return {"code": "AllocationFailed", "message": message, "values": [{"name": "Reason", "value": REASON}]}


class RegionCapacity(Guard):
    """How many nodes of each kind each pool can hold (by pool id, any case), else `default` for every pool."""

    def __init__(self, default: Limits | None = None) -> None:
        self.default: Limits = default or (None, None)
        self.pools: dict[str, Limits] = {}

    def limits(self, pool_id: str) -> Limits:
        return self.pools.get(pool_id.lower(), self.default)

    def allocatable(self, service: BatchService, pool: Pool, dedicated: bool, wanted: int) -> tuple[int, dict | None]:
        limit = self.limits(pool.id)[0 if dedicated else 1]
        if limit is None:
            return wanted, None
        held = sum(1 for n in pool.nodes if n.dedicated == dedicated and n.state != "preempted")
        fits = max(0, limit - held)
        return (wanted, None) if fits >= wanted else (fits, allocation_failed(dedicated))

    def update(self, service: BatchService, pool_id: str, body: dict) -> dict:
        """POST /_emulator/pools/{poolId}/capacity: `dedicated` / `lowPriority` a number of nodes, 0 or more
        (null: no end; absent: unchanged). The pool need not exist yet: a capacity set first applies to its
        creation. Answers the pool's capacity now; it applies from the pool's next resize."""
        unknown = set(body) - set(KINDS)
        if unknown:
            name = sorted(unknown)[0]
            raise BatchError(400, "InvalidRequestBody", f"Unknown property {name}: give dedicated and/or lowPriority.")
        for kind in KINDS:
            value = body.get(kind)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise invalid(kind, value, "It must be a whole number of nodes, 0 or more, or null.")
        with service.lock:
            current = self.limits(pool_id)
            new = tuple(body[kind] if kind in body else current[i] for i, kind in enumerate(KINDS))
            self.pools[pool_id.lower()] = (new[0], new[1])
            return {"poolId": pool_id, "dedicated": new[0], "lowPriority": new[1]}


def parse(text: str) -> Limits:
    """`--capacity DEDICATED,LOWPRIORITY`: two numbers, either may be empty (no end): "2,0", "4,", ",0"."""
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError("give DEDICATED,LOWPRIORITY, e.g. 2,0 (an empty number: no end)")
    values = [int(p) if p.strip() else None for p in parts]
    if any(v is not None and v < 0 for v in values):
        raise ValueError("capacities must be 0 or more")
    return values[0], values[1]
