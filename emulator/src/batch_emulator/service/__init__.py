"""The Batch service in plain Python: one account's pools, nodes, jobs and tasks, their state machines and
the scheduler. No HTTP here: handlers (responses.py) call the service's public methods.

One backend, `BatchService`, composed of a part per resource, as moto composes its EC2 backend:

    state.py      the shared state and its one lock (pools, jobs, counters), persistence's hook
    pools.py      pools: create, update, resize, delete; allocation
    nodes.py      nodes: boot and start task, leaving the pool (reclaim), node counts
    autoscale.py  the autoscale loop: samples, periodic evaluation (formula/), resizes
    jobs.py       jobs: create, update, terminate, delete, time limits
    jobtasks.py   a job's manager, preparation and release tasks
    autopools.py  the pool a job brings (autoPoolSpecification): created and deleted with it
    tasks.py      tasks: add, dependencies, delete, terminate, reactivate, counts
    scheduler.py  ready tasks onto free node slots, outcomes, exit conditions
    runtime.py    node threads and timers; halt, close, wait

The parts call each other's public methods through `self`. Everything that reads or changes state holds
`lock`; what a handler renders comes back as a `View` or plain JSON made under it. Slow work (downloads,
processes, uploads) runs in a node thread, outside the lock, and reports back under it.
"""

from __future__ import annotations

from batch_emulator.service.autopools import AutoPoolOps
from batch_emulator.service.autoscale import AutoscaleOps
from batch_emulator.service.jobs import JobOps
from batch_emulator.service.jobtasks import JobTaskOps
from batch_emulator.service.nodes import NodeOps
from batch_emulator.service.pools import PoolOps
from batch_emulator.service.runtime import Runtime
from batch_emulator.service.scheduler import Scheduler
from batch_emulator.service.tasks import TaskOps

__all__ = ["BatchService"]


class BatchService(PoolOps, NodeOps, AutoscaleOps, JobOps, AutoPoolOps, JobTaskOps, TaskOps, Scheduler, Runtime):
    """One Batch account's pools, nodes, jobs and tasks, with nodes as folders under `data_dir`."""

    def resume(self) -> None:
        """After `persistence.restore`: queues rebuilt from the tasks' states, time limits armed again,
        and every node booting again (its start task runs again), as after a reboot on Azure."""
        with self.lock:
            self.resume_jobs()
            self.resume_pools()
