"""Pools that cost nothing idle: autoscale from zero and back, and spot nodes pre-empted mid-run."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from batch_emulator import preemption
from batch_emulator.server import Emulator
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from tests.conftest import SAMPLE
from tests.flow.test_processes import corpus
from tests.stack import wait_for
from tests.taskapp.oracle import spec_top
from topn.flows.topn import topn
from topn.tasks.clients import blob_service
from topn.tasks.sas import SasIssuer
from topn.tasks.settings import TopnSettings, load_settings


def set_topn(env: pytest.MonkeyPatch, **values: str) -> None:
    """TOPN_<NAME>=value for each name given, for this test only."""
    for name, value in values.items():
        env.setenv(f"TOPN_{name.upper()}", value)


def sas_expiry(url: str) -> datetime:
    return datetime.fromisoformat(parse_qs(urlsplit(url).query)["se"][0].replace("Z", "+00:00"))


def sign_start_task_until(client: BatchClient, settings: TopnSettings, pool_id: str, when: datetime) -> None:
    """Gives the pool's start task SAS that end at `when`, as an older pool's would (update_pool)."""
    signer = SasIssuer(settings, blob_service(settings), when)
    start = client.get_pool(pool_id).start_task
    for file in start.resource_files:
        container, blob = urlsplit(file.http_url).path.split("/", 3)[2:]
        file.http_url = signer.blob_read(container, unquote(blob))
    client.update_pool(pool_id, m.BatchPoolUpdateOptions(start_task=start))


def test_an_autoscale_pool_grows_from_zero_and_shrinks_back(
    settings_env: pytest.MonkeyPatch, emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_topn(settings_env, pool_id="autoscaled", pool_mode="autoscale", autoscale_interval="PT1S",
             autoscale_idle="PT2S", dedicated_nodes="2", task_slots_per_node="2")  # fmt: skip
    folder = corpus(tmp_path / "texts", 12, tag="autoscale-")
    client = BatchClient(emulator.endpoint, emulator.credential())
    state = topn(paths=[str(folder)], top=3, files_per_task=2, run_id="autoscale-run", return_state=True)
    result = state.result()
    assert result.top == [tuple(p) for p in spec_top(folder, 3)] and result.files_counted == 12
    assert "tasks are waiting: pool autoscaled has no node yet: scaling up" in caplog.text
    with get_client(sync_client=True) as prefect:  # the wait is over: the progress no longer says it waits
        artifacts = prefect.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    progress = next(a for a in artifacts if a.type == "progress")
    assert progress.data == 100 and progress.description == (
        "Batch job autoscale-run: 7 of 7 tasks completed, 0 running, 0 failed")  # fmt: skip
    pool = client.get_pool("autoscaled")
    assert pool.enable_auto_scale and "$PendingTasks" in pool.auto_scale_formula
    assert pool.auto_scale_run is not None and pool.auto_scale_run.error is None, pool.auto_scale_run
    wait_for(lambda: client.get_pool("autoscaled").current_dedicated_nodes == 0, timeout=120,
             what="the pool to shrink back to zero nodes")  # fmt: skip
    assert not list(client.list_nodes("autoscaled"))


def test_a_run_survives_its_spot_nodes_being_pre_empted(
    settings_env: pytest.MonkeyPatch, emulator: Emulator, tmp_path: Path
) -> None:
    set_topn(settings_env, pool_id="spot-only", dedicated_nodes="0", spot_nodes="2", task_slots_per_node="1")
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


def test_a_kept_pool_gets_new_start_task_access_in_place_or_is_replaced_when_nodes_failed_for_want_of_it(
    settings_env: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    """Shared Key: a pool's start task SAS last 30 days. Expiring ones are renewed in the pool (update_pool);
    but a node that already failed its start task because they had expired stays failed, so then the pool
    is replaced (it is idle between runs)."""
    set_topn(settings_env, pool_id="expiring", dedicated_nodes="1")
    client = BatchClient(emulator.endpoint, emulator.credential())
    topn(paths=[str(SAMPLE)], top=1, run_id="expiring-1")
    first = client.get_pool("expiring")

    def start_task_until(when: datetime) -> None:
        sign_start_task_until(client, load_settings(), "expiring", when)

    def expiries() -> list[timedelta]:
        files = client.get_pool("expiring").start_task.resource_files
        return [sas_expiry(f.http_url) - datetime.now(UTC) for f in files]

    start_task_until(datetime.now(UTC) + timedelta(minutes=30))  # ends before the next run would
    assert topn(paths=[str(SAMPLE)], top=2, run_id="expiring-2").top == [("the", 12495), ("and", 6396)]
    assert client.get_pool("expiring").creation_time == first.creation_time  # the same pool ...
    assert all(timedelta(days=29) < left <= timedelta(days=30) for left in expiries())  # ... renewed

    start_task_until(datetime.now(UTC) - timedelta(minutes=1))  # expired: a node joining now fails
    wait_for(lambda: client.get_pool("expiring").allocation_state == "steady", timeout=120, what="a steady pool")
    client.begin_resize_pool("expiring", m.BatchPoolResizeOptions(target_dedicated_nodes=2))
    wait_for(lambda: any(n.state == "starttaskfailed" for n in client.list_nodes("expiring")), timeout=120,
             what="the new node to fail its start task")  # fmt: skip
    assert topn(paths=[str(SAMPLE)], top=2, run_id="expiring-3").top == [("the", 12495), ("and", 6396)]
    replaced = client.get_pool("expiring")
    assert replaced.creation_time > first.creation_time
    assert all(n.state != "starttaskfailed" for n in client.list_nodes("expiring"))
    assert all(timedelta(days=29) < left <= timedelta(days=30) for left in expiries())


def test_a_reused_pool_is_switched_between_autoscale_and_keep(settings_env: pytest.MonkeyPatch, emulator: Emulator):
    # PT1S: the emulator's minimum here, so nodes come at once
    set_topn(settings_env, pool_id="switching", dedicated_nodes="1", autoscale_interval="PT1S")
    client = BatchClient(emulator.endpoint, emulator.credential())
    topn(paths=[str(SAMPLE)], top=1, pool_mode="autoscale", run_id="switch-1")
    assert client.get_pool("switching").enable_auto_scale
    result = topn(paths=[str(SAMPLE)], top=1, pool_mode="keep", run_id="switch-2")
    assert result.top == [("the", 12495)]
    pool = client.get_pool("switching")
    assert not pool.enable_auto_scale and pool.target_dedicated_nodes == 1


def test_each_mode_has_a_pool_of_its_own_unless_one_is_named(settings_env: pytest.MonkeyPatch, emulator: Emulator):
    """`topn run` (keep) and the deployment (autoscale) back to back: neither switches the other's pool."""
    set_topn(settings_env, autoscale_interval="PT1S", autoscale_idle="PT2S")
    client = BatchClient(emulator.endpoint, emulator.credential())
    kept = topn(paths=[str(SAMPLE)], top=1, run_id="mode-keep")
    assert kept.stats.pool_id == "topn"
    before = client.get_pool("topn")
    scaled = topn(paths=[str(SAMPLE)], top=1, pool_mode="autoscale", run_id="mode-autoscale")
    assert scaled.stats.pool_id == "topn-autoscale" and client.get_pool("topn-autoscale").enable_auto_scale
    after = client.get_pool("topn")
    assert (after.etag, after.enable_auto_scale, after.target_dedicated_nodes) == (
        before.etag, False, before.target_dedicated_nodes)  # fmt: skip
    topn(paths=[str(SAMPLE)], top=1, run_id="mode-keep-again")
    assert client.get_pool("topn-autoscale").enable_auto_scale and client.get_pool("topn").etag == before.etag
    settings_env.setenv("TOPN_POOL_ID", "topn")  # a pool named: that one, in the mode asked for
    assert load_settings().with_pool_mode("autoscale").pool_id == "topn"
    client.begin_delete_pool("topn-autoscale", polling_interval=0.1).result()


def _job_pools(client: BatchClient, prefix: str) -> list[str]:
    return [p.id for p in client.list_pools() if p.id.startswith(prefix)]


def test_a_per_job_pool_is_the_runs_own_and_goes_with_its_job(
    settings_env: pytest.MonkeyPatch, emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_topn(settings_env, pool_mode="per-job", pool_id="per-job-test", task_slots_per_node="2")
    folder = corpus(tmp_path / "texts", 6, tag="per-job-")
    client = BatchClient(emulator.endpoint, emulator.credential())
    assert not _job_pools(client, "per-job-test")
    result = topn(paths=[str(folder)], top=3, files_per_task=2)
    assert result.top == [tuple(p) for p in spec_top(folder, 3)] and result.files_counted == 6
    assert result.stats.pool_id.startswith("per-job-test") and "runs on its own pool" in caplog.text
    wait_for(lambda: not _job_pools(client, "per-job-test"), timeout=120, what="the job's pool to go with it")
    # A kept job is ended, so its pool goes too; the sample corpus, exact.
    kept = topn(paths=[str(SAMPLE)], top=7, files_per_task=3, delete_job=False)  # packs no other test makes
    assert kept.top == [tuple(p) for p in spec_top(SAMPLE, 7)] and kept.stats.counted == 11
    assert client.get_job(kept.stats.job_id).state == "completed"
    assert client.get_job(kept.stats.job_id).pool_info.auto_pool_specification.pool_lifetime_option == "job"
    wait_for(lambda: not _job_pools(client, "per-job-test"), timeout=120, what="the kept job's pool to go")
    client.begin_delete_job(kept.stats.job_id, polling_interval=1).result()
