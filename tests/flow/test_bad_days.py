"""Azure's bad days through the flow, on the real local stack with the emulator playing them: a core quota
reached, a region out of capacity, a partial allocation, an autoscale pool that cannot grow, nodes gone
unusable mid-run, the account's job quota, a two-minute 429 storm. Each run completes exact, or ends by its
own decision (long before the job's time limit) with one line naming the cause and the fix."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.core.exceptions import ResourceNotFoundError
from batch_emulator.server import Emulator
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from tests.emulator.conftest import admin
from tests.stack import Azurite, wait_for
from tests.taskapp.oracle import spec_top
from topn.cli import main
from topn.flows.batch_map import batch_map
from topn.flows.topn import TopnFailed, topn
from topn.tasks import policy
from topn.tasks.quotas import QuotaReached

TIME_LIMIT = "PT30M"  # the job's time limit: every run here ends long before it, by its own decision


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(6):
        # Words of this test's own: no output of another test's run is reused, so each run has a job.
        (folder / f"t{i}.txt").write_text(f"alpha beta {'gamma ' * i} delta alpha {uuid.uuid4().hex}")
    return folder


@pytest.fixture
def pool(settings_env: pytest.MonkeyPatch, emulator: Emulator) -> Iterator[str]:
    """A pool of this test's own, deleted afterwards, with the emulator's injections undone."""
    pool_id = f"bad-{uuid.uuid4().hex[:8]}"
    settings_env.setenv("TOPN_POOL_ID", pool_id)
    settings_env.setenv("TOPN_JOB_TIMEOUT", TIME_LIMIT)
    try:
        yield pool_id
    finally:
        admin(emulator, "POST", "/_emulator/quotas", {"reset": True})
        admin(emulator, "POST", "/_emulator/throttle", {"seconds": 0})
        client = BatchClient(emulator.endpoint, emulator.credential())
        with contextlib.suppress(ResourceNotFoundError):
            client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def _used(emulator: Emulator, what: str) -> int:
    return admin(emulator, "GET", "/_emulator/quotas")[1]["usage"][what]


def _logs(state) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    return "\n".join(log.message for log in found)


def _logged(state, *texts: str) -> bool:
    """Whether the run's logs say each of these, once they reached the Prefect server (sent in the background)."""
    wait_for(lambda: all(text in _logs(state) for text in texts), timeout=120, interval=0.5, what=f"logs {texts}")
    return True


def _exact(result, folder: Path) -> None:
    assert result.top == [tuple(p) for p in spec_top(folder, 2)] and result.files_counted == 6


def test_a_core_quota_ends_the_run_at_once_in_one_line_with_the_fix(
    pool: str, emulator: Emulator, texts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin(emulator, "POST", "/_emulator/quotas", {"dedicatedCores": _used(emulator, "dedicatedCores")})
    assert main(["run", str(texts), "--top", "2"]) == 1
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("topn:")]
    assert len(said) == 1, said
    assert f"pool {pool} cannot get nodes: AccountCoreQuotaReached" in said[0]
    assert "request more dedicated cores for standard_d2s_v3" in said[0] and "TOPN_SPOT_NODES" in said[0]


def test_no_capacity_in_the_region_says_so(pool: str, emulator: Emulator, texts: Path) -> None:
    admin(emulator, "POST", f"/_emulator/pools/{pool}/capacity", {"dedicated": 0})
    with pytest.raises(TopnFailed) as e:
        topn(paths=[str(texts)], top=2)
    first = str(e.value).splitlines()[0]
    assert f"pool {pool} cannot get nodes: AllocationFailed" in first and "sufficient capacity" in first
    assert "no capacity for standard_d2s_v3 now" in first and "did not finish" not in str(e.value)


def test_a_partial_allocation_goes_on_with_the_nodes_it_got(
    pool: str, emulator: Emulator, texts: Path, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("TOPN_DEDICATED_NODES", "2")
    admin(emulator, "POST", f"/_emulator/pools/{pool}/capacity", {"dedicated": 1})
    state = topn(paths=[str(texts)], top=2, files_per_task=1, return_state=True)
    _exact(state.result(), texts)
    assert _logged(state, f"pool {pool} got 1 of 2 nodes (AllocationFailed")


def test_an_autoscale_pool_that_cannot_grow_ends_the_run(
    pool: str, emulator: Emulator, texts: Path, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("TOPN_AUTOSCALE_INTERVAL", "PT1S")  # the emulator's tests allow evaluations this often
    admin(emulator, "POST", "/_emulator/quotas", {"dedicatedCores": _used(emulator, "dedicatedCores")})
    with pytest.raises(TopnFailed) as e:
        topn(paths=[str(texts)], top=2, pool_mode="autoscale")
    assert f"pool {pool} cannot get nodes: AccountCoreQuotaReached" in str(e.value).splitlines()[0]


def test_a_node_gone_unusable_mid_run_is_replaced_and_its_tasks_run_elsewhere(
    pool: str, emulator: Emulator, azurite: Azurite, settings_env: pytest.MonkeyPatch
) -> None:
    """batch-map with a command of a second per input: the node is turned unusable while one runs."""
    settings_env.setenv("TOPN_DEDICATED_NODES", "2")
    settings_env.setenv("TOPN_TASK_SLOTS_PER_NODE", "1")
    settings_env.setattr(policy, "REMOVE_UNUSABLE_AFTER", 0.5)
    settings_env.setattr(policy, "POOL_CHECK_EVERY", 0.1)
    prefix, out = f"in-{pool}/", f"out-{pool}/"
    inputs = azurite.client().get_container_client("topn-input")
    if not inputs.exists():
        inputs.create_container()
    for i in range(12):
        inputs.upload_blob(f"{prefix}f{i:02}.txt", f"text {i}".encode())
    client = BatchClient(emulator.endpoint, emulator.credential())
    turned: list[str] = []

    def turn_one_mid_run() -> None:
        def busy() -> bool:
            try:
                return any(n.state == "running" for n in client.list_nodes(pool))
            except ResourceNotFoundError:  # the pool is not made yet
                return False

        wait_for(busy, timeout=240, interval=0.05, what="a node running a task")
        turned.extend(admin(emulator, "POST", f"/_emulator/pools/{pool}/unusable", {"nodes": 1})[1]["unusableNodeIds"])

    thread = threading.Thread(target=turn_one_mid_run, daemon=True)
    thread.start()
    state = batch_map(
        blob_prefix=prefix,
        command="sleep 1; cp {input} {output}",
        output_prefix=out,
        files_per_task=1,
        return_state=True,
    )
    thread.join(timeout=60)
    assert turned, "no node was turned unusable: the test proves nothing"
    assert state.result().stats.ran == 12
    outputs = azurite.client().get_container_client("topn-output")
    assert all(outputs.download_blob(f"{out}f{i:02}.txt").readall() == f"text {i}".encode() for i in range(12))
    assert _logged(state, f"node {turned[0]} of pool {pool} is unusable (DiskFull")
    wait_for(lambda: turned[0] not in {n.id for n in client.list_nodes(pool)}, timeout=120, what="the node removed")


def test_a_pool_with_no_usable_node_ends_the_run_naming_them(
    pool: str, emulator: Emulator, texts: Path, settings_env: pytest.MonkeyPatch
) -> None:
    _exact(topn(paths=[str(texts)], top=2), texts)  # the pool, with its node
    admin(emulator, "POST", f"/_emulator/pools/{pool}/unusable", {"all": True})
    settings_env.setattr(policy, "REMOVE_UNUSABLE_AFTER", 3600.0)  # as if replacing them did not help
    settings_env.setattr(policy, "NO_USABLE_NODE_LIMIT", 2.0)
    settings_env.setattr(policy, "POOL_CHECK_EVERY", 0.2)
    with pytest.raises(TopnFailed) as e:
        topn(paths=[str(texts)], top=2, run_id=f"nodes-{pool}")
    first = str(e.value).splitlines()[0]
    assert f"pool {pool} has had no usable node for 2 s" in first and "DiskFull" in first
    assert "delete the pool" in first


def test_the_job_quota_is_waited_for_then_named_with_the_leftover_jobs(
    pool: str, emulator: Emulator, texts: Path, settings_env: pytest.MonkeyPatch
) -> None:
    admin(emulator, "POST", "/_emulator/quotas", {"activeJobs": _used(emulator, "activeJobs")})
    settings_env.setattr(policy, "JOB_QUOTA_WAIT", 2.0)
    settings_env.setattr(policy, "QUOTA_POLL", 0.2)
    with pytest.raises(QuotaReached, match=r"active job quota is reached .*delete the jobs no longer needed"):
        topn(paths=[str(texts)], top=2)
    # A quota that frees up while the run waits: the run goes on.
    settings_env.setattr(policy, "JOB_QUOTA_WAIT", 600.0)
    admin(emulator, "POST", "/_emulator/quotas", {"activeJobs": _used(emulator, "activeJobs")})
    refused = threading.Thread(target=_free_the_quota_once_refused, args=(emulator,), daemon=True)
    refused.start()
    state = topn(paths=[str(texts)], top=2, run_id=f"quota-{pool}", return_state=True)
    refused.join(timeout=60)
    _exact(state.result(), texts)
    assert _logged(state, "active job quota is reached", "waiting up to 10 min")


def _free_the_quota_once_refused(emulator: Emulator) -> None:
    """Lifts the quotas once the emulator has answered a create_job (refused: the quota is reached)."""

    def job_adds() -> int:
        return admin(emulator, "GET", "/_emulator/stats")[1]["requests"].get("create_job", 0)

    before = job_adds()
    wait_for(lambda: job_adds() > before, timeout=240, interval=0.05, what="a create_job refused")
    admin(emulator, "POST", "/_emulator/quotas", {"reset": True})


def test_a_two_minute_429_storm_is_waited_out_and_said(pool: str, emulator: Emulator, texts: Path) -> None:
    _exact(topn(paths=[str(texts)], top=2), texts)  # the pool exists: the storm meets a run under way
    admin(emulator, "POST", "/_emulator/throttle", {"seconds": 120, "retryAfter": 1})
    state = topn(paths=[str(texts)], top=2, run_id=f"storm-{pool}", return_state=True)
    _exact(state.result(), texts)
    assert admin(emulator, "GET", "/_emulator/throttle")[1]["throttled"] > 0, "no request was throttled"
    assert _logged(state, "Azure Batch is throttling (429")


def test_tasks_that_could_never_run_on_the_pool_are_refused_before_anything_is_made(
    settings_env: pytest.MonkeyPatch, emulator: Emulator, texts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool_id = f"never-{uuid.uuid4().hex[:8]}"
    settings_env.setenv("TOPN_POOL_ID", pool_id)
    settings_env.setenv("TOPN_TASK_SLOTS_PER_NODE", "9")  # standard_d2s_v3 has 2 cores: Batch allows 8 slots
    assert main(["run", str(texts)]) == 2
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("topn:")]
    assert len(said) == 1 and "TOPN_TASK_SLOTS_PER_NODE: 9 slots on standard_d2s_v3, which has 2 cores" in said[0]
    assert "at most 8" in said[0] and "TOPN_VM_SIZE" in said[0]
    with pytest.raises(ResourceNotFoundError):
        BatchClient(emulator.endpoint, emulator.credential()).get_pool(pool_id)
