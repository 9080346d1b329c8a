"""The emulator through azure-batch 11.0: msrest, api-version 2021-06-01.14.0, verbatim nextLinks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import azure.batch.models as m
import pytest
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials
from batch_emulator.server import Emulator

API_VERSION = "2021-06-01.14.0"
POOL = "p11"


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
    # 2021-06-01 already names the slots taskSlotsPerNode (maxTasksPerNode went in 2020-09-01).
    client.pool.add(m.PoolAddParameter(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes, task_slots_per_node=2,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=m.ImageReference(publisher="canonical", offer="0001-com-ubuntu-server-focal",
                                             sku="20_04-lts"),
            node_agent_sku_id="batch.node.ubuntu 20.04"),
        start_task=m.StartTask(command_line="/bin/sh -c 'echo ok'", wait_for_success=True)))  # fmt: skip
    wait(lambda: nodes == sum(n.state == m.ComputeNodeState.idle for n in client.compute_node.list(pool_id)))


def test_sends_its_own_api_version(client: BatchServiceClient) -> None:
    assert client.api_version == API_VERSION
    pools = client.pool.list(raw=True)
    assert list(pools) == []
    assert f"api-version={API_VERSION}" in pools.raw.response.request.url


def test_pool_and_nodes(client: BatchServiceClient) -> None:
    pool(client, POOL, 2)
    assert client.pool.exists(POOL) is True
    assert client.pool.exists("missing") is False
    got = client.pool.get(POOL, pool_get_options=m.PoolGetOptions(select="id,state,taskSlotsPerNode"))
    assert (got.id, got.state, got.task_slots_per_node) == (POOL, m.PoolState.active, 2)
    full = client.pool.get(POOL)
    assert full.virtual_machine_configuration.node_agent_sku_id == "batch.node.ubuntu 20.04"
    assert full.current_dedicated_nodes == 2 and full.allocation_state == m.AllocationState.steady
    nodes = list(client.compute_node.list(POOL, m.ComputeNodeListOptions(filter="state eq 'idle'", max_results=1)))
    assert len(nodes) == 2 and len({n.id for n in nodes}) == 2
    node = client.compute_node.get(POOL, nodes[0].id)
    assert node.start_task_info.result == m.TaskExecutionResult.success
    assert node.start_task_info.exit_code == 0
    with pytest.raises(m.BatchErrorException) as e:
        pool(client, POOL.upper(), 0)
    assert e.value.error.code == "PoolExists"


def test_job_single_task_and_files(client: BatchServiceClient) -> None:
    client.job.add(m.JobAddParameter(id="j11a", pool_info=m.PoolInformation(pool_id=POOL)))  # maxParallelTasks -1
    assert client.job.get("j11a").pool_info.pool_id == POOL
    client.task.add("j11a", m.TaskAddParameter(id="one", command_line="/bin/sh -c 'echo hello; echo oops >&2'"))
    task = wait(lambda: (t := client.task.get("j11a", "one")).state == m.TaskState.completed and t)
    assert task.execution_info.exit_code == 0 and task.execution_info.result == m.TaskExecutionResult.success
    assert task.node_info.pool_id == POOL
    names = {f.name: f for f in client.file.list_from_task("j11a", "one")}
    assert {"stdout.txt", "stderr.txt"} <= set(names)
    assert names["stdout.txt"].properties.content_length == len(b"hello\n")
    assert b"".join(client.file.get_from_task("j11a", "one", "stdout.txt")) == b"hello\n"
    assert b"".join(client.file.get_from_task("j11a", "one", "stderr.txt")) == b"oops\n"
    ranged = m.FileGetFromTaskOptions(ocp_range="bytes=0-1")
    assert b"".join(client.file.get_from_task("j11a", "one", "stdout.txt", ranged)) == b"he"
    with pytest.raises(m.BatchErrorException) as e:
        client.task.add("j11a", m.TaskAddParameter(id="ONE", command_line="/bin/true"))
    assert e.value.error.code == "TaskExists"


def test_add_collection_paging_and_counts(client: BatchServiceClient) -> None:
    client.job.add(m.JobAddParameter(id="j11b", pool_info=m.PoolInformation(pool_id=POOL)))
    tasks = [m.TaskAddParameter(id=f"t{i:03}", command_line=f"/bin/sh -c 'echo {i}; exit {i % 2}'") for i in range(120)]
    result = client.task.add_collection("j11b", tasks, threads=2)  # the patched helper splits into chunks of 100
    assert len(result.value) == 120 and {r.status for r in result.value} == {m.TaskAddStatus.success}
    wait(lambda: client.job.get_task_counts("j11b").task_counts.completed == 120)
    result = client.job.get_task_counts("j11b")
    counts, slots = result.task_counts, result.task_slot_counts
    assert (counts.active, counts.running, counts.succeeded, counts.failed) == (0, 0, 60, 60)
    assert (slots.completed, slots.succeeded, slots.failed) == (120, 60, 60)
    # SDK 11 follows odata.nextLink verbatim: it must be absolute and carry every query option.
    options = m.TaskListOptions(filter="executionInfo/result eq 'failure'", select="id,executionInfo", max_results=7)
    failed = list(client.task.list("j11b", task_list_options=options))
    assert sorted(t.id for t in failed) == [f"t{i:03}" for i in range(1, 120, 2)]
    assert all(t.execution_info.exit_code == 1 and t.command_line is None for t in failed)
    everything = list(client.task.list("j11b", m.TaskListOptions(max_results=50)))
    assert len(everything) == 120 and len({t.id for t in everything}) == 120
    assert b"".join(client.file.get_from_task("j11b", "t042", "stdout.txt")) == b"42\n"


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
    assert {i.node_agent_sku_id for i in linux} <= {i.node_agent_sku_id for i in images}


def test_list_pool_node_counts(client: BatchServiceClient) -> None:
    pool(client, "p11b", 1)
    counts = {c.pool_id: c for c in client.account.list_pool_node_counts()}
    assert {POOL, "p11b"} <= set(counts)
    mine = counts[POOL]
    assert (mine.dedicated.total, mine.dedicated.idle + mine.dedicated.running) == (2, 2)
    assert (mine.dedicated.creating, mine.dedicated.start_task_failed) == (0, 0)
    assert mine.low_priority.total == 0
    assert counts["p11b"].dedicated.total == 1
    only = list(client.account.list_pool_node_counts(m.AccountListPoolNodeCountsOptions(filter=f"poolId eq '{POOL}'")))
    assert [c.pool_id for c in only] == [POOL]
    paged = list(client.account.list_pool_node_counts(m.AccountListPoolNodeCountsOptions(max_results=1)))
    assert sorted(c.pool_id for c in paged) == sorted(counts)


def test_errors_terminate_and_delete(client: BatchServiceClient) -> None:
    with pytest.raises(m.BatchErrorException) as e:
        client.task.get("j11a", "nope")
    assert e.value.error.code == "TaskNotFound"
    with pytest.raises(m.BatchErrorException) as e:
        client.job.add(m.JobAddParameter(id="J11A", pool_info=m.PoolInformation(pool_id=POOL)))
    assert e.value.error.code == "JobExists"
    client.task.add("j11a", m.TaskAddParameter(id="sleeper", command_line="/bin/sleep 60"))
    wait(lambda: client.task.get("j11a", "sleeper").state == m.TaskState.running)
    client.job.terminate("j11a")  # an empty body with a JSON content type
    job = wait(lambda: (j := client.job.get("j11a")).state == m.JobState.completed and j)
    assert job.execution_info.terminate_reason == "UserTerminate"
    assert client.task.get("j11a", "sleeper").state == m.TaskState.completed
    for job_id in ("j11a", "j11b"):
        client.job.delete(job_id)
    wait(lambda: not {"j11a", "j11b"} & {j.id for j in client.job.list()})
    for pool_id in (POOL, "p11b"):
        client.pool.delete(pool_id)
    wait(lambda: not client.pool.exists(POOL) and not client.pool.exists("p11b"))
    with pytest.raises(m.BatchErrorException) as e:
        client.pool.get(POOL)
    assert e.value.error.code == "PoolNotFound"


def test_bad_key_is_refused(emu: Emulator) -> None:
    wrong = BatchServiceClient(SharedKeyCredentials(emu.account, "d3Jvbmcta2V5"), batch_url=emu.endpoint)
    with pytest.raises(m.BatchErrorException) as e:
        list(wrong.pool.list())
    assert e.value.error.code == "AuthenticationFailed" and e.value.response.status_code == 403


def test_replace_job_pool_properties_and_token_settings(client: BatchServiceClient) -> None:
    """What SDK 11 sends that Azure answers (issue 23): PUT /jobs/{id}, POST /pools/{id}/updateproperties (with the
    certificateReferences 2021-06-01 requires), task authenticationTokenSettings, add-collection locations."""
    pool(client, "p11r", 1)
    client.job.add(m.JobAddParameter(id="j11r", pool_info=m.PoolInformation(pool_id="p11r"), priority=9))
    job = client.job.get("j11r")
    replacement = m.JobUpdateParameter(pool_info=m.PoolInformation(pool_id="p11r"), priority=3)
    stale = m.JobUpdateOptions(if_unmodified_since=job.creation_time - timedelta(hours=1))
    with pytest.raises(m.BatchErrorException) as e:
        client.job.update("j11r", replacement, job_update_options=stale)
    assert (e.value.response.status_code, e.value.error.code) == (412, "ConditionNotMet")
    client.job.update("j11r", replacement, job_update_options=m.JobUpdateOptions(if_match=job.e_tag))
    assert client.job.get("j11r").priority == 3

    client.pool.update_properties("p11r", m.PoolUpdatePropertiesParameter(
        certificate_references=[], application_package_references=[],
        metadata=[m.MetadataItem(name="b", value="2")]))  # fmt: skip
    got = client.pool.get("p11r")
    assert (got.start_task, got.certificate_references, got.metadata[0].value) == (None, [], "2")

    token = m.AuthenticationTokenSettings(access=[m.AccessScope.job])
    result = client.task.add_collection("j11r", [m.TaskAddParameter(
        id="t1", command_line="/bin/true", authentication_token_settings=token)])  # fmt: skip
    assert result.value[0].location.endswith("/jobs/j11r/tasks/t1")
    task = wait(lambda: (t := client.task.get("j11r", "t1")).state == m.TaskState.completed and t, 120)
    assert task.authentication_token_settings.access == [m.AccessScope.job]
