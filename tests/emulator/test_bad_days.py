"""Azure's bad days on demand, through the SDK 15 client: account quotas (cores, active jobs, pools), the region's
capacity, throttling, and their command-line flags. Unusable nodes are in test_unusable.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchJobTerminateOptions
from azure.core.exceptions import HttpResponseError
from batch_emulator.capacity import REASON
from batch_emulator.config import from_command_line
from batch_emulator.server import Emulator

from tests.emulator.conftest import admin, make_job, vm_config
from tests.stack import wait_for

WRONG_KEY = "d3Jvbmcga2V5IGZvciB0ZXN0cw=="


@pytest.fixture
def own(tmp_path) -> Iterator[Emulator]:
    """An emulator of the test's own: quotas and throttling are the whole account's."""
    with Emulator(data_dir=tmp_path, boot_seconds=0.05, dedicated_core_quota=4) as emu:
        yield emu


def own_client(emu: Emulator) -> BatchClient:
    return BatchClient(emu.endpoint, emu.credential())


def pool(client: BatchClient, pool_id: str, dedicated: int = 0, spot: int = 0, **extra) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size=extra.pop("vm_size", "standard_d2s_v3"),
            virtual_machine_configuration=vm_config(),
            target_dedicated_nodes=dedicated or None,  # none with autoscale
            target_low_priority_nodes=spot or None,
            **extra,
        )
    )


def new_job(client: BatchClient, job_id: str, pool_id: str) -> None:
    """A job created with no retries: a 429 is raised, not retried."""
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)), retry_total=0)


def steady(client: BatchClient, pool_id: str) -> m.BatchPool:
    """The pool once steady, with its nodes started (a resize error is shown only then)."""

    def done() -> m.BatchPool | None:
        found = client.get_pool(pool_id)
        started = all(n.state == "idle" for n in client.list_nodes(pool_id))
        return found if found.allocation_state == "steady" and started else None

    return wait_for(done, timeout=30, what=f"pool {pool_id} to be steady")


def resize(client: BatchClient, pool_id: str, dedicated: int = 0, spot: int = 0) -> m.BatchPool:
    options = m.BatchPoolResizeOptions(target_dedicated_nodes=dedicated, target_low_priority_nodes=spot)
    client.begin_resize_pool(pool_id, options, polling_interval=0.05).result()
    return steady(client, pool_id)


def test_a_resize_beyond_the_core_quota_gets_the_nodes_that_fit(own: Emulator) -> None:
    client = own_client(own)
    pool(client, "p1", dedicated=3)  # 3 x 2 cores asked, 4 allowed
    found = steady(client, "p1")
    assert (found.current_dedicated_nodes, found.target_dedicated_nodes) == (2, 3)
    [error] = found.resize_errors
    assert (error.code, error.message, error.error_values) == (
        "AccountCoreQuotaReached",
        "The specified account has reached core quota",
        None,
    )
    status, quotas = admin(own, "GET", "/_emulator/quotas")
    assert status == 200 and quotas["dedicatedCores"] == 4 and quotas["usage"]["dedicatedCores"] == 4

    # A second pool gets nothing; raising the quota lets a new resize through, and its errors are gone.
    pool(client, "p2", dedicated=1, vm_size="Standard_D4s_v3")
    assert steady(client, "p2").current_dedicated_nodes == 0
    assert client.get_pool("p2").resize_errors[0].code == "AccountCoreQuotaReached"
    status, quotas = admin(own, "POST", "/_emulator/quotas", {"dedicatedCores": 10, "pools": None})
    assert (status, quotas["dedicatedCores"], quotas["pools"]) == (200, 10, None)
    found = resize(client, "p1", dedicated=3)
    assert (found.current_dedicated_nodes, found.resize_errors) == (3, None)
    assert [n.state for n in client.list_nodes("p1")] == ["idle"] * 3


def test_the_low_priority_core_quota_and_its_spot_code(own: Emulator) -> None:
    client = own_client(own)
    status, quotas = admin(own, "POST", "/_emulator/quotas", {"lowPriorityCores": 2})
    assert (status, quotas["lowPriorityCores"], quotas["dedicatedCores"]) == (200, 2, 4)
    pool(client, "spot", dedicated=1, spot=2)
    found = steady(client, "spot")
    assert (found.current_dedicated_nodes, found.current_low_priority_nodes) == (1, 1)
    [error] = found.resize_errors
    assert (error.code, error.message) == (
        "AccountLowPriorityCoreQuotaReached",
        "The specified account has reached low priority core quota",
    )
    status, _ = admin(own, "POST", "/_emulator/quotas", {"lowPriorityErrorCode": "AccountSpotCoreQuotaReached"})
    assert status == 200
    found = resize(client, "spot", dedicated=1, spot=3)
    assert found.resize_errors[0].code == "AccountSpotCoreQuotaReached"
    assert found.resize_errors[0].message == "The specified account has reached spot core quota"

    status, error = admin(own, "POST", "/_emulator/quotas", {"dedicatedCores": -1})
    assert (status, error["code"]) == (400, "InvalidPropertyValue")
    status, error = admin(own, "POST", "/_emulator/quotas", {"cores": 1})
    assert (status, error["code"]) == (400, "InvalidRequestBody")
    status, error = admin(own, "POST", "/_emulator/quotas", {"reset": True}, key=WRONG_KEY)
    assert (status, error["code"]) == (403, "AuthenticationFailed")
    status, quotas = admin(own, "POST", "/_emulator/quotas", {"reset": True})
    assert status == 200 and {quotas[k] for k in ("dedicatedCores", "lowPriorityCores", "activeJobs", "pools")} == {
        None
    }
    assert quotas["lowPriorityErrorCode"] == "AccountLowPriorityCoreQuotaReached"


def test_autoscale_beyond_the_quota_keeps_a_successful_run_and_shows_the_resize_error(own: Emulator) -> None:
    client = own_client(own)
    pool(
        client,
        "auto",
        enable_auto_scale=True,
        auto_scale_formula="$TargetDedicatedNodes = 3;",
        auto_scale_evaluation_interval=dt.timedelta(minutes=5),
    )
    found = steady(client, "auto")
    assert (found.current_dedicated_nodes, found.target_dedicated_nodes) == (2, 3)
    assert found.resize_errors[0].code == "AccountCoreQuotaReached"
    run = found.auto_scale_run
    assert run.error is None and run.results.startswith("$TargetDedicatedNodes=3;")


def test_active_job_and_pool_quotas_answer_409(tmp_path) -> None:
    with Emulator(data_dir=tmp_path, boot_seconds=0.05, active_job_quota=1, pool_quota=1) as emu:
        client = own_client(emu)
        pool(client, "p1")
        with pytest.raises(HttpResponseError) as e:
            pool(client, "p2")
        assert (e.value.status_code, e.value.error.code) == (409, "PoolQuotaReached")
        assert e.value.error.message.startswith("Pool quota for the account has been reached.")

        make_job(client, "j1", "p1")
        with pytest.raises(HttpResponseError) as e:
            make_job(client, "j2", "p1")
        assert (e.value.status_code, e.value.error.code) == (409, "ActiveJobAndScheduleQuotaReached")
        assert e.value.error.message.startswith("Active job and schedule quota for the account has been reached.")
        status, quotas = admin(emu, "GET", "/_emulator/quotas")
        assert (status, quotas["activeJobs"], quotas["usage"]["activeJobs"], quotas["usage"]["pools"]) == (200, 1, 1, 1)

        done = BatchJobTerminateOptions(termination_reason="done")
        client.begin_terminate_job("j1", done, polling_interval=0.05).result()
        wait_for(lambda: client.get_job("j1").state == "completed", timeout=30, what="job j1 to complete")
        make_job(client, "j2", "p1")  # a completed job no longer counts
        assert admin(emu, "POST", "/_emulator/quotas", {"pools": 2})[0] == 200
        pool(client, "p2")
        client.close()


def test_capacity_caps_a_pools_nodes_with_allocation_failed(client: BatchClient, emulator: Emulator, uid: str) -> None:
    # Set before the pool exists: its creation gets only one of its two dedicated nodes, and no spot node.
    status, answer = admin(emulator, "POST", f"/_emulator/pools/{uid}/capacity", {"dedicated": 1, "lowPriority": 0})
    assert (status, answer) == (200, {"poolId": uid, "dedicated": 1, "lowPriority": 0})
    pool(client, uid, dedicated=2, spot=1)
    found = steady(client, uid)
    assert (found.current_dedicated_nodes, found.current_low_priority_nodes) == (1, 0)
    assert (found.target_dedicated_nodes, found.target_low_priority_nodes) == (2, 1)
    dedicated, spot = found.resize_errors
    assert (dedicated.code, dedicated.message) == (
        "AllocationFailed",
        "Desired number of dedicated nodes could not be allocated",
    )
    assert [(v.name, v.value) for v in dedicated.error_values] == [("Reason", REASON)]
    assert (spot.code, spot.message) == (
        "AllocationFailed",
        "Desired number of low priority nodes could not be allocated",
    )

    status, answer = admin(emulator, "POST", f"/_emulator/pools/{uid}/capacity", {"dedicated": None})
    assert (status, answer) == (200, {"poolId": uid, "dedicated": None, "lowPriority": 0})
    assert admin(emulator, "GET", f"/_emulator/pools/{uid}/capacity")[1]["lowPriority"] == 0
    found = resize(client, uid, dedicated=3)
    assert (found.current_dedicated_nodes, found.resize_errors) == (3, None)
    status, error = admin(emulator, "POST", f"/_emulator/pools/{uid}/capacity", {"dedicated": "2"})
    assert (status, error["code"]) == (400, "InvalidPropertyValue")
    status, error = admin(emulator, "POST", f"/_emulator/pools/{uid}/capacity", {"dedicated": 1}, key="")
    assert (status, error["code"]) == (403, "AuthenticationFailed")


def test_throttling_answers_429_with_retry_after(tmp_path) -> None:
    with Emulator(data_dir=tmp_path, boot_seconds=0.05, throttle_seconds=60, throttle_retry_after=3) as emu:
        client = own_client(emu)
        with pytest.raises(HttpResponseError) as e:
            list(client.list_pools(retry_total=0))  # --throttle from the start
        assert (e.value.status_code, e.value.error.code) == (429, "TooManyRequests")
        assert e.value.response.headers["Retry-After"] == "3"
        assert e.value.error.message.startswith(
            "Request failed as server encountered too many requests. Please try again."
        )
        status, window = admin(emu, "GET", "/_emulator/throttle")  # never throttled itself
        assert status == 200 and window["retryAfter"] == 3 and window["throttled"] == 1 and window["secondsLeft"] > 0

        # Only some operations: the others go through.
        status, window = admin(
            emu, "POST", "/_emulator/throttle", {"seconds": 60, "retryAfter": 0, "operations": ["create_job"]}
        )
        assert (status, window["operations"], window["retryAfter"]) == (200, ["create_job"], 0)
        assert list(client.list_pools(retry_total=0)) == []
        pool(client, "p1")
        with pytest.raises(HttpResponseError) as e:
            new_job(client, "j1", "p1")
        assert (e.value.status_code, e.value.response.headers["Retry-After"]) == (429, "0")

        # A client that retries (the SDK honours Retry-After) gets through once the window ends.
        admin(emu, "POST", "/_emulator/throttle", {"seconds": 1, "retryAfter": 1})
        before = emu.counts["list_pools"]
        assert [p.id for p in client.list_pools()] == ["p1"]
        assert emu.counts["list_pools"] - before >= 2  # one 429 at least, then the answer

        status, window = admin(emu, "POST", "/_emulator/throttle", {"seconds": 0})
        assert (status, window["secondsLeft"]) == (200, 0)
        new_job(client, "j1", "p1")
        status, error = admin(emu, "POST", "/_emulator/throttle", {"seconds": 5, "operations": ["Job_Add"]})
        assert (status, error["code"]) == (400, "InvalidPropertyValue")
        status, error = admin(emu, "POST", "/_emulator/throttle", {"seconds": 5}, key="")
        assert (status, error["code"]) == (403, "AuthenticationFailed")
        client.close()


def test_the_flags(tmp_path) -> None:
    argv = ["--dedicated-core-quota", "2", "--low-priority-core-quota", "0", "--active-job-quota", "3"]
    argv += ["--pool-quota", "5", "--capacity", "1,", "--unusable-rate", "0.5", "--seed", "7", "--throttle", "2:4"]
    config = from_command_line(argv)
    assert (config.dedicated_core_quota, config.low_priority_core_quota) == (2, 0)
    assert (config.active_job_quota, config.pool_quota, config.capacity) == (3, 5, (1, None))
    assert (config.unusable_rate, config.seed, config.throttle_seconds, config.throttle_retry_after) == (0.5, 7, 2, 4)
    for bad in (["--capacity", "1"], ["--capacity", "-1,0"], ["--throttle", "x"], ["--pool-quota", "-1"]):
        with pytest.raises(SystemExit):
            from_command_line(bad)

    with Emulator(from_command_line(["--capacity", "1,0", "--dedicated-core-quota", "8"]), port=0,
                  data_dir=tmp_path, boot_seconds=0.05) as emu:  # fmt: skip
        client = own_client(emu)
        pool(client, "p1", dedicated=2, spot=1)
        found = steady(client, "p1")
        assert (found.current_dedicated_nodes, found.current_low_priority_nodes) == (1, 0)
        assert [e.code for e in found.resize_errors] == ["AllocationFailed", "AllocationFailed"]
        assert admin(emu, "GET", "/_emulator/quotas")[1]["dedicatedCores"] == 8
        client.close()
