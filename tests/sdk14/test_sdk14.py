"""The emulator through azure-batch 14.x: msrest, api-version 2024-02-01.19.0, verbatim nextLinks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import azure.batch.models as m
import pytest
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials
from batch_emulator.server import Emulator


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with Emulator(data_dir=tmp_path_factory.mktemp("b"), boot_seconds=0.05) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def client(emu: Emulator) -> BatchServiceClient:
    return BatchServiceClient(SharedKeyCredentials(emu.account, emu.key), batch_url=emu.endpoint)


def wait(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def pool(client: BatchServiceClient, pool_id: str, nodes: int) -> None:
    client.pool.add(m.PoolAddParameter(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes, task_slots_per_node=2,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=m.ImageReference(publisher="canonical", offer="ubuntu-24_04-lts", sku="server"),
            node_agent_sku_id="batch.node.ubuntu 24.04"),
        start_task=m.StartTask(command_line="/bin/sh -c 'echo ok'", wait_for_success=True)))  # fmt: skip
    wait(lambda: nodes == sum(n.state == m.ComputeNodeState.idle for n in client.compute_node.list(pool_id)))


def test_pool_lifecycle(client: BatchServiceClient) -> None:
    pool(client, "p14", 1)
    assert client.pool.exists("p14") is True
    assert client.pool.exists("missing") is False  # SDK 14 maps 404 to False
    got = client.pool.get("p14", pool_get_options=m.PoolGetOptions(select="id,state"))
    assert (got.id, got.state) == ("p14", m.PoolState.active)
    node = next(iter(client.compute_node.list("p14")))
    assert node.start_task_info.result == m.TaskExecutionResult.success
    with pytest.raises(m.BatchErrorException) as e:
        pool(client, "P14", 0)
    assert e.value.error.code == "PoolExists"


def test_list_supported_images(client: BatchServiceClient) -> None:
    images = list(client.account.list_supported_images())
    assert images, "no supported images"
    for image in images:
        assert image.node_agent_sku_id and image.image_reference.publisher and image.image_reference.offer
        assert image.os_type in (m.OSType.linux, m.OSType.windows)
        assert image.verification_type in (m.VerificationType.verified, m.VerificationType.unverified)
    key = [(i.node_agent_sku_id, i.image_reference.offer, i.image_reference.sku) for i in images]
    paged = list(client.account.list_supported_images(m.AccountListSupportedImagesOptions(max_results=1)))
    assert [(i.node_agent_sku_id, i.image_reference.offer, i.image_reference.sku) for i in paged] == key
    linux = list(client.account.list_supported_images(m.AccountListSupportedImagesOptions(filter="osType eq 'linux'")))
    assert linux and all(i.os_type == m.OSType.linux for i in linux)


def test_list_pool_node_counts(client: BatchServiceClient) -> None:
    counts = {c.pool_id: c for c in client.account.list_pool_node_counts()}
    assert "p14" in counts  # created by test_pool_lifecycle with one node
    mine = counts["p14"]
    assert (mine.dedicated.total, mine.dedicated.idle + mine.dedicated.running) == (1, 1)
    assert (mine.dedicated.creating, mine.dedicated.start_task_failed, mine.low_priority.total) == (0, 0, 0)
    only = list(client.account.list_pool_node_counts(m.AccountListPoolNodeCountsOptions(filter="poolId eq 'p14'")))
    assert [c.pool_id for c in only] == ["p14"]


def test_jobs_tasks_paging_and_files(client: BatchServiceClient) -> None:
    client.job.add(m.JobAddParameter(id="j14", pool_info=m.PoolInformation(pool_id="p14")))
    tasks = [m.TaskAddParameter(id=f"t{i:03}", command_line=f"/bin/sh -c 'echo {i}; exit {i % 2}'") for i in range(150)]
    result = client.task.add_collection("j14", tasks)  # the patched helper splits into chunks of 100
    assert len(result.value) == 150 and {r.status for r in result.value} == {m.TaskAddStatus.success}
    wait(lambda: client.job.get_task_counts("j14").task_counts.completed == 150)
    counts = client.job.get_task_counts("j14").task_counts
    assert (counts.succeeded, counts.failed) == (75, 75)
    # SDK 14 follows odata.nextLink verbatim: it must be absolute and carry every query option.
    options = m.TaskListOptions(filter="executionInfo/result eq 'failure'", select="id,executionInfo", max_results=7)
    failed = list(client.task.list("j14", task_list_options=options))
    assert sorted(t.id for t in failed) == [f"t{i:03}" for i in range(1, 150, 2)]
    assert all(t.execution_info.exit_code == 1 for t in failed)
    assert b"".join(client.file.get_from_task("j14", "t042", "stdout.txt")) == b"42\n"
    assert "stdout.txt" in [f.name for f in client.file.list_from_task("j14", "t042")]


def test_errors_and_terminate_with_empty_body(client: BatchServiceClient) -> None:
    client.job.add(m.JobAddParameter(id="j14b", pool_info=m.PoolInformation(pool_id="p14")))
    with pytest.raises(m.BatchErrorException) as e:
        client.task.get("j14b", "nope")
    assert e.value.error.code == "TaskNotFound"
    with pytest.raises(m.BatchErrorException) as e:
        client.job.add(m.JobAddParameter(id="j14b", pool_info=m.PoolInformation(pool_id="p14")))
    assert e.value.error.code == "JobExists"
    client.job.terminate("j14b")  # an empty body with a JSON content type
    job = wait(lambda: (j := client.job.get("j14b")).state == m.JobState.completed and j)
    assert job.execution_info.terminate_reason == "UserTerminate"
    client.job.delete("j14b")
    wait(lambda: "j14b" not in [j.id for j in client.job.list()])


def test_bad_key_is_refused(emu: Emulator) -> None:
    wrong = BatchServiceClient(SharedKeyCredentials(emu.account, "d3Jvbmcta2V5"), batch_url=emu.endpoint)
    with pytest.raises(m.BatchErrorException) as e:
        list(wrong.pool.list())
    assert e.value.error.code == "AuthenticationFailed" and e.value.response.status_code == 403


def test_replace_job_pool_properties_and_token_settings(client: BatchServiceClient) -> None:
    """What SDK 14 sends that Azure answers (issue 23): PUT /jobs/{id}, POST /pools/{id}/updateproperties, task
    authenticationTokenSettings, add-collection locations."""
    pool(client, "p14r", 1)
    client.job.add(m.JobAddParameter(id="j14r", pool_info=m.PoolInformation(pool_id="p14r"), priority=9,
                                     metadata=[m.MetadataItem(name="a", value="1")]))  # fmt: skip
    job = client.job.get("j14r")
    replacement = m.JobUpdateParameter(pool_info=m.PoolInformation(pool_id="p14r"), priority=3)
    stale = m.JobUpdateOptions(if_unmodified_since=job.creation_time - timedelta(hours=1))
    with pytest.raises(m.BatchErrorException) as e:
        client.job.update("j14r", replacement, job_update_options=stale)
    assert (e.value.response.status_code, e.value.error.code) == (412, "ConditionNotMet")
    headers = client.job.update("j14r", replacement, raw=True).headers
    job = client.job.get("j14r")
    assert (job.priority, job.metadata, headers["ETag"]) == (3, None, job.e_tag)
    assert headers["DataServiceId"].endswith("/jobs/j14r")

    client.pool.update_properties("p14r", m.PoolUpdatePropertiesParameter(
        certificate_references=[], application_package_references=[],
        metadata=[m.MetadataItem(name="b", value="2")], target_node_communication_mode="simplified",
        start_task=m.StartTask(command_line="/bin/sh -c 'echo new'")))  # fmt: skip
    got = client.pool.get("p14r")
    assert (got.start_task.command_line, got.certificate_references) == ("/bin/sh -c 'echo new'", [])
    assert ([(i.name, i.value) for i in got.metadata], got.target_node_communication_mode) == (
        [("b", "2")],
        "simplified",
    )

    token = m.AuthenticationTokenSettings(access=[m.AccessScope.job])
    result = client.task.add_collection("j14r", [m.TaskAddParameter(
        id="t1", command_line="/bin/sh -c 'test -n \"$AZ_BATCH_AUTHENTICATION_TOKEN\"'",
        authentication_token_settings=token)])  # fmt: skip
    assert result.value[0].location.endswith("/jobs/j14r/tasks/t1")
    task = wait(lambda: (t := client.task.get("j14r", "t1")).state == m.TaskState.completed and t, 120)
    assert (task.execution_info.exit_code, task.authentication_token_settings.access) == (0, [m.AccessScope.job])
    node = client.compute_node.get("p14r", task.node_info.node_id)
    assert [(r.task_id, r.task_state) for r in node.recent_tasks] == [("t1", m.TaskState.completed)]


def test_job_manager_preparation_and_release(client: BatchServiceClient) -> None:
    """What Airflow's operator sends through SDK 14: a job with its manager, preparation and release tasks."""
    pool(client, "p14j", 1)
    client.job.add(m.JobAddParameter(
        id="j14j", pool_info=m.PoolInformation(pool_id="p14j"),
        job_manager_task=m.JobManagerTask(id="jm", command_line="/bin/sh -c 'echo managing'"),
        job_preparation_task=m.JobPreparationTask(command_line="/bin/sh -c 'echo prep'"),
        job_release_task=m.JobReleaseTask(command_line="/bin/sh -c 'echo release'")))  # fmt: skip
    job = wait(lambda: (j := client.job.get("j14j")).state == m.JobState.completed and j, 120)
    assert job.execution_info.terminate_reason == "JMComplete"
    (status,) = client.job.list_preparation_and_release_task_status("j14j")
    prep, release = status.job_preparation_task_execution_info, status.job_release_task_execution_info
    assert (prep.result, release.result) == (m.TaskExecutionResult.success, m.TaskExecutionResult.success)
    out = b"".join(
        client.file.get_from_compute_node("p14j", status.node_id, f"{release.task_root_directory}/stdout.txt")
    )
    assert out == b"release\n"
