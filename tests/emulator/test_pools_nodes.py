"""Pools and nodes through the official SDK 15: operations, states, start tasks, errors."""

from __future__ import annotations

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from batch_emulator.server import Emulator

from tests.emulator.conftest import make_job, make_pool, vm_config
from tests.stack import Azurite, wait_for


def test_create_get_exists_list(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=2, slots=3, metadata=[m.BatchMetadataItem(name="owner", value="tests")])
    pool = client.get_pool(uid)
    assert (pool.id, pool.state, pool.allocation_state) == (uid, "active", "steady")
    assert (pool.current_dedicated_nodes, pool.target_dedicated_nodes, pool.task_slots_per_node) == (2, 2, 3)
    assert pool.virtual_machine_configuration.node_agent_sku_id == "batch.node.ubuntu 24.04"
    assert pool.metadata[0].value == "tests" and pool.etag and pool.last_modified
    assert client.pool_exists(uid) is True
    with pytest.raises(ResourceNotFoundError):  # SDK 15 raises on 404 here (docs/batch-wire.md 0.4)
        client.pool_exists(uid + "-missing")
    assert uid in [p.id for p in client.list_pools()]
    assert [p.id for p in client.list_pools(filter=f"id eq '{uid}'", select=["id", "state"])] == [uid]


def test_pool_errors(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0)
    with pytest.raises(ResourceExistsError) as e:
        make_pool(client, uid.upper(), nodes=0)  # ids are unique without regard to case
    assert e.value.error.code == "PoolExists"
    with pytest.raises(ResourceNotFoundError) as e:
        client.get_pool(uid + "x")
    assert e.value.error.code == "PoolNotFound"
    with pytest.raises(HttpResponseError) as e:
        client.create_pool(m.BatchPoolCreateOptions(id=uid + "b", vm_size="x"))
    assert (e.value.status_code, e.value.error.code) == (400, "MissingRequiredProperty")
    assert e.value.error.details[0].message == "virtualMachineConfiguration"
    for bad in ({"id": "bad id!"}, {"task_slots_per_node": 0}, {"target_dedicated_nodes": -1}):
        options = {"id": uid + "c", "vm_size": "x", "virtual_machine_configuration": vm_config(), **bad}
        with pytest.raises(HttpResponseError) as e:
            client.create_pool(m.BatchPoolCreateOptions(**options))
        assert (e.value.status_code, e.value.error.code) == (400, "InvalidPropertyValue")
    with pytest.raises(HttpResponseError) as e:
        client.create_pool(
            m.BatchPoolCreateOptions(
                id=uid + "d",
                vm_size="x",
                virtual_machine_configuration=vm_config(),
                enable_auto_scale=True,
                auto_scale_formula="$TargetDedicatedNodes=1",
                target_dedicated_nodes=1,  # not with autoscale (test_autoscale.py has the rest)
            )
        )
    assert e.value.error.code == "InvalidAutoScalingSettings"


def test_nodes_and_start_task(client: BatchClient, uid: str) -> None:
    start = m.BatchStartTask(
        command_line="/bin/sh -c 'echo ready > $AZ_BATCH_NODE_SHARED_DIR/ready; echo out'", wait_for_success=True
    )
    make_pool(client, uid, nodes=2, start_task=start)
    nodes = list(client.list_nodes(uid))
    assert len({n.id for n in nodes}) == 2
    for node in nodes:
        assert node.state == "idle" and node.scheduling_state == "enabled" and node.is_dedicated
        info = node.start_task_info
        assert (info.state, info.exit_code, info.result, info.retry_count) == ("completed", 0, "success", 0)
        assert client.get_node(uid, node.id).id == node.id
        assert b"".join(client.download_node_file(uid, node.id, "startup/stdout.txt")) == b"out\n"
        assert b"".join(client.download_node_file(uid, node.id, "shared/ready")) == b"ready\n"
        names = {f.name for f in client.list_node_files(uid, node.id, recursive=True)}
        assert {"startup/stdout.txt", "startup/stderr.txt", "startup/wd", "shared/ready"} <= names
    assert [n.id for n in client.list_nodes(uid, filter="state eq 'idle'")] == [n.id for n in nodes]
    with pytest.raises(ResourceNotFoundError) as e:
        client.get_node(uid, "tvm-nope")
    assert e.value.error.code == "NodeNotFound"


def test_node_states_while_booting(tmp_path, uid: str) -> None:
    with Emulator(data_dir=tmp_path, boot_seconds=1.0) as emu:
        client = BatchClient(emu.endpoint, emu.credential())
        make_pool(
            client,
            uid,
            nodes=1,
            wait=False,
            start_task=m.BatchStartTask(command_line="/bin/sleep 1", wait_for_success=True),
        )
        seen = set()
        wait_for(
            lambda: seen.add(next(iter(client.list_nodes(uid))).state) or "idle" in seen,
            timeout=20,
            interval=0.02,
            what="node to become idle",
        )
        assert {"creating", "starting", "waitingforstarttask", "idle"} <= seen
        assert client.get_pool(uid).allocation_state == "steady"


def test_start_task_failure_is_retried_then_blocks_scheduling(client: BatchClient, uid: str) -> None:
    start = m.BatchStartTask(
        command_line="/bin/sh -c 'echo attempt >> $AZ_BATCH_NODE_SHARED_DIR/tries; exit 3'",
        max_task_retry_count=2,
        wait_for_success=True,
    )
    make_pool(client, uid, nodes=1, start_task=start)
    node = next(iter(client.list_nodes(uid)))
    info = node.start_task_info
    assert node.state == "starttaskfailed"
    assert (info.state, info.exit_code, info.result, info.retry_count) == ("completed", 3, "failure", 2)
    assert info.failure_info.code == "FailureExitCode" and info.failure_info.category == "usererror"
    assert b"".join(client.download_node_file(uid, node.id, "shared/tries")) == b"attempt\n" * 3
    make_job(client, uid, uid)
    client.create_task(uid, m.BatchTaskCreateOptions(id="never", command_line="/bin/true"))
    assert client.get_task(uid, "never").state == "active"


def test_start_task_without_wait_lets_tasks_run_alongside(client: BatchClient, uid: str) -> None:
    start = m.BatchStartTask(command_line="/bin/sleep 30", wait_for_success=False)
    make_pool(client, uid, nodes=1, start_task=start)
    assert next(iter(client.list_nodes(uid))).start_task_info.state == "running"
    make_job(client, uid, uid)
    client.create_task(uid, m.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    wait_for(lambda: client.get_task(uid, "t").state == "completed", what="task beside a running start task")


def test_start_task_resource_files(client: BatchClient, azurite: Azurite, uid: str) -> None:
    azurite.client().create_container(uid).upload_blob("tool.sh", b"echo from-blob > result\n")
    url = azurite.container_sas_url(uid, "rl")
    start = m.BatchStartTask(
        command_line="/bin/sh tool.sh",
        resource_files=[m.ResourceFile(storage_container_url=url)],
        wait_for_success=True,
    )
    make_pool(client, uid, nodes=1, start_task=start)
    node = next(iter(client.list_nodes(uid)))
    assert node.start_task_info.result == "success"
    assert b"".join(client.download_node_file(uid, node.id, "startup/wd/result")) == b"from-blob\n"


def test_resize_and_delete(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    client.begin_resize_pool(uid, m.BatchPoolResizeOptions(target_dedicated_nodes=3), polling_interval=0.05).result()
    wait_for(lambda: len([n for n in client.list_nodes(uid) if n.state == "idle"]) == 3, what="3 idle nodes")
    client.begin_resize_pool(uid, m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0.05).result()
    wait_for(lambda: len(list(client.list_nodes(uid))) == 1, what="shrink to 1 node")
    assert client.get_pool(uid).current_dedicated_nodes == 1
    poller = client.begin_delete_pool(uid, polling_interval=0.05)
    poller.result()
    assert poller.status() == "Succeeded"
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(uid)
    with pytest.raises(ResourceNotFoundError) as e:
        client.begin_delete_pool(uid, polling_interval=0.05).result()
    assert e.value.error.code == "PoolNotFound"


def test_deleting_a_pool_requeues_its_running_tasks(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid)
    client.create_task(uid, m.BatchTaskCreateOptions(id="long", command_line="/bin/sleep 60"))
    wait_for(lambda: client.get_task(uid, "long").state == "running", what="task to run")
    client.begin_delete_pool(uid, polling_interval=0.05).result()
    task = client.get_task(uid, "long")
    assert task.state == "active" and task.execution_info.requeue_count == 1
