"""Pools that cost nothing idle: autoscale from zero and back, and spot nodes pre-empted mid-run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from azure.batch import BatchClient
from batch_emulator import preemption
from batch_emulator.server import Emulator

from flows.topn import topn
from tests.flow.test_processes import corpus
from tests.stack import wait_for
from tests.taskapp.oracle import spec_top


def test_an_autoscale_pool_grows_from_zero_and_shrinks_back(
    settings_env: pytest.MonkeyPatch, emulator: Emulator, tmp_path: Path
) -> None:
    for name, value in {
        "POOL_ID": "autoscaled",
        "POOL_MODE": "autoscale",
        "AUTOSCALE_INTERVAL": "PT1S",
        "AUTOSCALE_IDLE": "PT2S",
        "DEDICATED_NODES": "2",
        "TASK_SLOTS_PER_NODE": "2",
    }.items():
        settings_env.setenv(f"TOPN_{name}", value)  # fmt: skip
    folder = corpus(tmp_path / "texts", 12, tag="autoscale-")
    client = BatchClient(emulator.endpoint, emulator.credential())
    result = topn(paths=[str(folder)], top=3, files_per_task=2, run_id="autoscale-run")
    assert result.top == [tuple(p) for p in spec_top(folder, 3)] and result.files_counted == 12
    pool = client.get_pool("autoscaled")
    assert pool.enable_auto_scale and "$PendingTasks" in pool.auto_scale_formula
    assert pool.auto_scale_run is not None and pool.auto_scale_run.error is None, pool.auto_scale_run
    wait_for(lambda: client.get_pool("autoscaled").current_dedicated_nodes == 0, timeout=120,
             what="the pool to shrink back to zero nodes")  # fmt: skip
    assert not list(client.list_nodes("autoscaled"))


def test_a_run_survives_its_spot_nodes_being_pre_empted(
    settings_env: pytest.MonkeyPatch, emulator: Emulator, tmp_path: Path
) -> None:
    for name, value in {
        "POOL_ID": "spot-only",
        "DEDICATED_NODES": "0",
        "SPOT_NODES": "2",
        "TASK_SLOTS_PER_NODE": "1",
    }.items():
        settings_env.setenv(f"TOPN_{name}", value)  # fmt: skip
    folder = corpus(tmp_path / "texts", 30, tag="spot-")
    client = BatchClient(emulator.endpoint, emulator.credential())
    pre_empted: list[str] = []

    def pre_empt_mid_run() -> None:
        def running() -> str | None:
            jobs = [j for j in client.list_jobs() if j.pool_info.pool_id == "spot-only" and j.state == "active"]
            counts = client.get_job_task_counts(jobs[0].id).task_counts if jobs else None
            return jobs[0].id if counts and counts.completed >= 3 and counts.running else None

        wait_for(running, timeout=240, interval=0.05, what="the job to be half-way")
        pre_empted.extend(preemption.preempt(emulator.service, "spot-only", {}))

    thread = threading.Thread(target=pre_empt_mid_run, daemon=True)
    thread.start()
    result = topn(paths=[str(folder)], top=3, files_per_task=1, run_id="spot-run", delete_job=False)
    thread.join(timeout=60)
    assert pre_empted, "no node was pre-empted: the test proves nothing"
    assert result.top == [tuple(p) for p in spec_top(folder, 3)] and result.files_counted == 30
    requeued = [t.id for t in client.list_tasks("spot-run") if t.execution_info and t.execution_info.requeue_count]
    assert requeued, "no task was running on a pre-empted node"
    client.begin_delete_job("spot-run", polling_interval=0.1).result()
