"""The bad days a running emulator can play, built from its settings: the account's quotas (quotas.py), the
region's capacity (capacity.py), throttling (throttle.py), spot pre-emption (preemption.py) and unusable nodes
(unusable.py) at random. The admin endpoints (admin.py) change them while it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batch_emulator import capacity, preemption, quotas, throttle, unusable

if TYPE_CHECKING:
    from batch_emulator.config import EmulatorConfig
    from batch_emulator.service import BatchService


class Injections:
    """What one emulator injects; the quotas and the capacity are the service's guards, asked in that order."""

    def __init__(self, service: BatchService, config: EmulatorConfig) -> None:
        self.config = config
        self.quotas = quotas.AccountQuotas(
            config.dedicated_core_quota, config.low_priority_core_quota, config.active_job_quota, config.pool_quota
        )
        self.capacity = capacity.RegionCapacity(config.capacity)
        service.guards.extend([self.quotas, self.capacity])
        self.throttle = throttle.Throttle()
        self.preempter = preemption.RandomPreempter(service, config.preempt_rate, seed=config.seed)  # per node-minute
        self.unusable = unusable.RandomUnusable(
            service, config.unusable_rate, seed=config.seed, recover_seconds=config.unusable_recover_seconds
        )  # per node-hour

    def start(self) -> None:
        if self.config.throttle_seconds > 0:
            self.throttle.start(self.config.throttle_seconds, self.config.throttle_retry_after)
        self.preempter.start()
        self.unusable.start()

    def stop(self) -> None:
        self.preempter.stop()
        self.unusable.stop()
