"""What the service holds: one account's pools and jobs (their nodes and tasks hang off them), its counters,
threads and process table, and the one lock that guards them all.

Every part of the service (pools.py, nodes.py, ...) is a subclass of `ServiceState` and holds `lock` while it
reads or changes any of it. Outside the service package only persistence (saving it, loading it back) and
tests touch these fields; handlers ask the parts' public methods.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from batch_emulator import formula
from batch_emulator.errors import being_deleted, exists
from batch_emulator.models import Entity, Job, Pool
from batch_emulator.processes import ProcessTable

MIN_AUTOSCALE_INTERVAL = timedelta(minutes=5)  # the service's; the emulator's option lowers it for tests


class ServiceState:
    """The fields every part of the service shares."""

    def __init__(
        self,
        data_dir: Path,
        account: str,
        account_url: str = "",
        boot_seconds: float = 0.2,
        autoscale_min_interval: timedelta = MIN_AUTOSCALE_INTERVAL,
        autoscale_sample_seconds: float = formula.DEFAULT_SAMPLE_SECONDS,
    ) -> None:
        self.data_dir, self.account, self.account_url = Path(data_dir), account, account_url
        self.boot_seconds = boot_seconds
        self.autoscale_min_interval = autoscale_min_interval
        self.autoscale_sample_seconds = autoscale_sample_seconds
        self.lock = threading.RLock()
        self.pools: dict[str, Pool] = {}  # by lower-cased id: ids are unique without regard to case
        self.jobs: dict[str, Job] = {}
        self.scheduled = 0  # task attempts started, and the scheduler's own CPU time: GET /_emulator/stats
        self.scheduler_seconds = 0.0
        self.processes = ProcessTable()
        # runtime.py's: threads are reused, starting one per task costs more than scheduling it
        self._workers = ThreadPoolExecutor(max_workers=4096, thread_name_prefix="batch-node")
        self._work: set[Future] = set()
        self._closed = False
        # autoscale.py's: each autoscale pool's samples and schedule, and the thread that keeps them
        self._scalers: dict[Pool, formula.Schedule] = {}
        self._autoscaler: threading.Thread | None = None
        # the account's limits that bad-day injections install (quotas.py, capacity.py): asked in order
        self.guards: list[Guard] = []

    def load(self, pools: list[Pool], jobs: list[Job], scheduled: int) -> None:
        """Takes in what `persistence.restore` read from a saved state, into an empty service."""
        with self.lock:
            self.scheduled = scheduled
            self.pools.update((pool.id.lower(), pool) for pool in pools)
            self.jobs.update((job.id.lower(), job) for job in jobs)


class Guard:
    """A limit of the account or of the region that the service asks, under its lock, before it creates a pool or
    a job and before a resize adds nodes. An injection (quotas.py, capacity.py) subclasses it and is installed in
    `BatchService.guards`; by default it lets everything through. `service` is the whole BatchService."""

    def admit_pool(self, service: ServiceState, body: dict) -> None:
        """Raises the service's BatchError if the pool may not be created."""

    def admit_job(self, service: ServiceState, body: dict) -> None:
        """Raises the service's BatchError if the job may not be created."""

    def allocatable(self, service: ServiceState, pool: Pool, dedicated: bool, wanted: int) -> tuple[int, dict | None]:
        """How many of `wanted` new nodes of the kind the pool may get now, and (when fewer) the resize error to
        show: a ResizeError's JSON (`code`, `message`, `values`)."""
        return wanted, None


def ensure_new(table: dict[str, Pool] | dict[str, Job], kind: str, ident: str) -> None:
    """Ids are unique without regard to case; one being deleted cannot be reused yet."""
    existing: Entity | None = table.get(ident.lower())
    if existing is not None:
        raise being_deleted(kind, ident) if existing.state == "deleting" else exists(kind, ident)
