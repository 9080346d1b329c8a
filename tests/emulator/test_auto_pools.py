"""Auto pools through SDK 15 (issue 23): a job's autoPoolSpecification makes its pool when the job is created and
deletes it when the job completes or is deleted, unless keepAlive."""

from __future__ import annotations

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.emulator.conftest import vm_config, wait_task
from tests.stack import wait_for


def auto_job(client: BatchClient, job_id: str, keep_alive: bool = False, **extra) -> str:
    """A job with its own pool of one node; the auto pool's id."""
    spec = m.BatchPoolSpecification(
        vm_size="standard_d2s_v3",
        virtual_machine_configuration=vm_config(),
        target_dedicated_nodes=1,
        task_slots_per_node=2,
        start_task=m.BatchStartTask(command_line="/bin/sh -c 'echo booted'"),
    )
    auto = m.BatchAutoPoolSpecification(
        auto_pool_id_prefix="ap", pool_lifetime_option="job", keep_alive=keep_alive, pool=spec
    )
    client.create_job(
        m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(auto_pool_specification=auto), **extra)
    )
    return client.get_job(job_id).execution_info.pool_id


def gone(client: BatchClient, pool_id: str) -> bool:
    try:
        client.get_pool(pool_id)
    except ResourceNotFoundError:
        return True
    return False


def test_the_auto_pool_lives_as_long_as_its_job(client: BatchClient, uid: str) -> None:
    pool_id = auto_job(client, uid)
    assert pool_id.startswith("ap_") and len(pool_id) == 3 + 36
    job = client.get_job(uid)
    assert job.pool_info.pool_id is None and job.pool_info.auto_pool_specification.auto_pool_id_prefix == "ap"
    pool = client.get_pool(pool_id)
    assert (pool.vm_size, pool.target_dedicated_nodes, pool.task_slots_per_node) == ("standard_d2s_v3", 1, 2)
    assert pool_id in [p.id for p in client.list_pools()]
    client.create_task(uid, m.BatchTaskCreateOptions(id="t1", command_line="/bin/sh -c 'echo hi'"))
    task = wait_task(client, uid, "t1", timeout=120)
    assert task.execution_info.exit_code == 0 and task.node_info.pool_id == pool_id
    assert client.get_pool(pool_id).state == "active"  # the job is still active
    client.update_job(uid, m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    wait_for(lambda: client.get_job(uid).state == "completed", what="the job to complete")
    wait_for(lambda: gone(client, pool_id), what="the auto pool to be deleted")
    client.begin_delete_job(uid, polling_interval=0.05).result()


def test_a_deleted_jobs_auto_pool_goes_unless_kept_alive(client: BatchClient, uid: str) -> None:
    dropped = auto_job(client, uid)
    kept = auto_job(client, f"{uid}-keep", keep_alive=True)
    try:
        client.begin_delete_job(uid, polling_interval=0.05).result()
        client.begin_delete_job(f"{uid}-keep", polling_interval=0.05).result()
        wait_for(lambda: gone(client, dropped), what="the auto pool to be deleted")
        assert client.get_pool(kept).state == "active"  # keepAlive: the user deletes it
    finally:
        client.begin_delete_pool(kept, polling_interval=0.05).result()


def test_keep_alive_is_the_one_thing_an_update_changes(client: BatchClient, uid: str) -> None:
    pool_id = auto_job(client, uid)
    try:
        job = client.get_job(uid)
        auto = job.pool_info.auto_pool_specification
        auto.keep_alive = True
        client.update_job(uid, m.BatchJobUpdateOptions(pool_info=m.BatchPoolInfo(auto_pool_specification=auto)))
        assert client.get_job(uid).pool_info.auto_pool_specification.keep_alive is True
        with pytest.raises(HttpResponseError) as e:
            client.update_job(uid, m.BatchJobUpdateOptions(pool_info=m.BatchPoolInfo(pool_id="other")))
        assert (e.value.status_code, e.value.error.code) == (409, "JobNotDisabled")
        client.begin_delete_job(uid, polling_interval=0.05).result()
        assert client.get_pool(pool_id).state == "active"
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.05).result()


@pytest.mark.parametrize(
    ("change", "prop"),
    [
        ({"poolLifetimeOption": "jobschedule"}, "poolInfo.autoPoolSpecification.poolLifetimeOption"),
        ({"autoPoolIdPrefix": "p" * 21}, "poolInfo.autoPoolSpecification.autoPoolIdPrefix"),
        ({"pool": {"vmSize": "standard_d2s_v3"}}, "virtualMachineConfiguration"),
    ],
)
def test_what_an_auto_pool_specification_may_not_be(client: BatchClient, uid: str, change: dict, prop: str) -> None:
    auto = {
        "poolLifetimeOption": "job",
        "pool": {"vmSize": "standard_d2s_v3", "virtualMachineConfiguration": vm_config().as_dict()},
    }
    job = m.BatchJobCreateOptions(id=uid, pool_info=m.BatchPoolInfo(auto_pool_specification={**auto, **change}))
    with pytest.raises(HttpResponseError) as e:
        client.create_job(job)
    assert e.value.status_code == 400
    assert {d.key: d.value for d in e.value.model.error_values}["PropertyName"] == prop
