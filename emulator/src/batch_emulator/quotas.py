"""The Batch account's quotas, as the service enforces them: dedicated cores, low-priority (Spot) cores, active jobs
and pools (learn.microsoft.com/azure/batch/batch-quota-limit). By default there are none; `--dedicated-core-quota`,
`--low-priority-core-quota`, `--active-job-quota`, `--pool-quota` (EmulatorConfig) or `POST /_emulator/quotas`
(admin.py) set them.

- Cores are counted from each node's VM size (vmsizes.py) over every pool's nodes that hold a VM (a pre-empted
  spot node holds none). A resize, fixed or computed by autoscale, that asks for more gets the nodes that fit and
  goes steady with a resize error, its target unchanged: `AccountCoreQuotaReached` "The specified account has
  reached core quota" for dedicated nodes, `AccountLowPriorityCoreQuotaReached` "The specified account has reached
  low priority core quota" for spot ones (or `AccountSpotCoreQuotaReached` "The specified account has reached
  spot core quota", if asked). Codes and messages: the PoolResizeErrorCodes of Microsoft.Azure.Batch (the .NET
  SDK), the messages as users quote the service (github.com/MicrosoftDocs/azure-docs/issues/53298); no `values`,
  as in that quote. An autoscale pool's `autoScaleRun` stays a success: the formula ran, the resize failed.
- A job created while `activeJobs` jobs are not completed (nor being deleted) gets 409
  `ActiveJobAndScheduleQuotaReached` "Active job and schedule quota for the account has been reached."; a pool
  created while the account has `pools` pools (those being deleted included) gets 409 `PoolQuotaReached` "Pool
  quota for the account has been reached." (learn.microsoft.com/rest/api/batchservice/batch-status-and-error-codes;
  what counts as active: github.com/Azure/BatchExplorer/pull/2043, "all jobs not completed").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batch_emulator import vmsizes
from batch_emulator.errors import BatchError, invalid
from batch_emulator.models import Pool
from batch_emulator.service.state import Guard

if TYPE_CHECKING:
    from batch_emulator.service import BatchService

LIMITS = ("dedicatedCores", "lowPriorityCores", "activeJobs", "pools")
LOW_PRIORITY_CODES = {
    "AccountLowPriorityCoreQuotaReached": "The specified account has reached low priority core quota",
    "AccountSpotCoreQuotaReached": "The specified account has reached spot core quota",
}
DEDICATED_ERROR = {"code": "AccountCoreQuotaReached", "message": "The specified account has reached core quota"}
_NOT_ACTIVE = ("completed", "deleting")  # jobs that no longer count against the quota


class AccountQuotas(Guard):
    """The quotas of the account (None: no limit), asked by the service under its lock."""

    def __init__(
        self,
        dedicated_cores: int | None = None,
        low_priority_cores: int | None = None,
        active_jobs: int | None = None,
        pools: int | None = None,
    ) -> None:
        values = (dedicated_cores, low_priority_cores, active_jobs, pools)
        self.limits: dict[str, int | None] = dict(zip(LIMITS, values, strict=True))
        self.low_priority_code = "AccountLowPriorityCoreQuotaReached"

    # ---- the service's questions (under its lock) -------------------------------------------------

    def admit_pool(self, service: BatchService, body: dict) -> None:
        limit = self.limits["pools"]
        if limit is not None and len(service.all_pools()) >= limit:
            raise BatchError(409, "PoolQuotaReached", "Pool quota for the account has been reached.")

    def admit_job(self, service: BatchService, body: dict) -> None:
        limit = self.limits["activeJobs"]
        if limit is not None and _active_jobs(service) >= limit:
            message = "Active job and schedule quota for the account has been reached."
            raise BatchError(409, "ActiveJobAndScheduleQuotaReached", message)

    def allocatable(self, service: BatchService, pool: Pool, dedicated: bool, wanted: int) -> tuple[int, dict | None]:
        limit = self.limits["dedicatedCores" if dedicated else "lowPriorityCores"]
        if limit is None:
            return wanted, None
        fits = max(0, limit - cores_in_use(service, dedicated)) // vmsizes.cores(pool.spec.get("vmSize"))
        if fits >= wanted:
            return wanted, None
        if dedicated:
            return fits, dict(DEDICATED_ERROR)
        return fits, {"code": self.low_priority_code, "message": LOW_PRIORITY_CODES[self.low_priority_code]}

    # ---- the admin endpoint ----------------------------------------------------------------------

    def update(self, service: BatchService, body: dict) -> dict:
        """POST /_emulator/quotas: sets the limits given (a number, 0 or more; null or absent: unchanged);
        `{"reset": true}` removes them all first. Answers the quotas now, with what the account uses."""
        unknown = set(body) - {*LIMITS, "reset", "lowPriorityErrorCode"}
        if unknown:
            name = sorted(unknown)[0]
            raise BatchError(400, "InvalidRequestBody", f"Unknown quota {name}: give any of {', '.join(LIMITS)}.")
        reset = body.get("reset", False)
        if not isinstance(reset, bool):
            raise invalid("reset", reset, "It must be true or false.")
        changes = {name: body[name] for name in LIMITS if body.get(name) is not None}
        for name, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise invalid(name, value, "It must be a whole number, 0 or more, or null.")
        code = body.get("lowPriorityErrorCode")
        if code is not None and code not in LOW_PRIORITY_CODES:
            raise invalid("lowPriorityErrorCode", code, f"It must be one of {', '.join(LOW_PRIORITY_CODES)}.")
        with service.lock:
            if reset:
                self.limits = dict.fromkeys(LIMITS)
                self.low_priority_code = "AccountLowPriorityCoreQuotaReached"
            self.limits.update(changes)
            if code is not None:
                self.low_priority_code = code
            return self._view(service)

    def view(self, service: BatchService) -> dict:
        """GET /_emulator/quotas: the limits (null: none) and what the account uses of each."""
        with service.lock:
            return self._view(service)

    def _view(self, service: BatchService) -> dict:
        usage = {
            "dedicatedCores": cores_in_use(service, True),
            "lowPriorityCores": cores_in_use(service, False),
            "activeJobs": _active_jobs(service),
            "pools": len(service.all_pools()),
        }
        return {**self.limits, "lowPriorityErrorCode": self.low_priority_code, "usage": usage}


def cores_in_use(service: BatchService, dedicated: bool) -> int:
    """The cores of the account's nodes of the kind that hold a VM. Call under the service's lock."""
    return sum(
        vmsizes.cores(pool.spec.get("vmSize"))
        for pool in service.active_pools()
        for node in pool.nodes
        if node.dedicated == dedicated and node.state != "preempted"
    )


def _active_jobs(service: BatchService) -> int:
    return sum(job.state not in _NOT_ACTIVE for job in service.all_jobs())
