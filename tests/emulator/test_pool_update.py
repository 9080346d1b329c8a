"""Updating a pool (PATCH /pools/{id}) through SDK 15: only what is given is replaced; a new start task runs on
the nodes that join later, not again on those already in the pool; a restart keeps the update."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from batch_emulator import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME
from batch_emulator.errors import BatchError
from batch_emulator.service import BatchService

from tests.emulator.conftest import make_pool
from tests.emulator.test_durable import start
from tests.stack import Azurite, free_port, stop, wait_for

OLD = m.BatchStartTask(command_line="/bin/sh -c 'echo old'", wait_for_success=True)


def startup_stdout(client: BatchClient, pool_id: str, node_id: str) -> str:
    return b"".join(client.download_node_file(pool_id, node_id, "startup/stdout.txt")).decode()


def update(client: BatchClient, pool_id: str, options: m.BatchPoolUpdateOptions) -> dict:
    """The response headers of update_pool."""
    return client.update_pool(pool_id, options, cls=lambda _response, _body, headers: headers)


def error_of(e: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int, str, dict[str, str]]:
    return e.value.status_code, e.value.error.code, {d.key: d.value for d in e.value.model.error_values or []}


def test_new_start_task_runs_on_nodes_that_join_later(client: BatchClient, azurite: Azurite, uid: str) -> None:
    make_pool(client, uid, nodes=1, start_task=OLD, metadata=[m.BatchMetadataItem(name="stage", value="1")])
    before = client.get_pool(uid)
    first = next(iter(client.list_nodes(uid)))
    azurite.client().create_container(uid).upload_blob("marker.txt", b"from-blob\n")
    url = azurite.container_sas_url(uid, "rl")
    new = m.BatchStartTask(
        command_line="/bin/sh -c 'cat marker.txt; echo new'",
        resource_files=[m.ResourceFile(storage_container_url=url)],
        wait_for_success=True,
    )
    metadata = [m.BatchMetadataItem(name="stage", value="2"), m.BatchMetadataItem(name="owner", value="me")]
    headers = update(client, uid, m.BatchPoolUpdateOptions(start_task=new, metadata=metadata))

    pool = client.get_pool(uid)
    assert pool.start_task.command_line == new.command_line
    assert [f.storage_container_url for f in pool.start_task.resource_files] == [url]
    assert [(i.name, i.value) for i in pool.metadata] == [("stage", "2"), ("owner", "me")]
    assert pool.etag != before.etag and pool.last_modified >= before.last_modified
    assert headers["ETag"] == pool.etag and headers["Last-Modified"] == pool.last_modified.replace(microsecond=0)
    assert headers["DataServiceId"].endswith(f"/pools/{uid}")
    assert (pool.vm_size, pool.target_dedicated_nodes, pool.state) == (before.vm_size, 1, "active")

    client.begin_resize_pool(uid, m.BatchPoolResizeOptions(target_dedicated_nodes=2), polling_interval=0.05).result()
    wait_for(lambda: len([n for n in client.list_nodes(uid) if n.state == "idle"]) == 2, what="2 idle nodes")
    nodes = {n.id: n for n in client.list_nodes(uid)}
    joined = next(n for node_id, n in nodes.items() if node_id != first.id)
    assert startup_stdout(client, uid, joined.id) == "from-blob\nnew\n"
    assert joined.start_task.command_line == new.command_line and joined.start_task_info.result == "success"
    assert startup_stdout(client, uid, first.id) == "old\n"  # not run again
    assert nodes[first.id].start_task_info.start_time == first.start_task_info.start_time
    assert nodes[first.id].start_task.command_line == OLD.command_line  # the one it ran


def test_only_what_is_given_is_replaced(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0, start_task=OLD, metadata=[m.BatchMetadataItem(name="a", value="1")])
    update(client, uid, m.BatchPoolUpdateOptions(metadata=[m.BatchMetadataItem(name="b", value="2")]))
    pool = client.get_pool(uid)
    assert [(i.name, i.value) for i in pool.metadata] == [("b", "2")]
    assert pool.start_task.command_line == OLD.command_line  # not given: kept
    update(client, uid, m.BatchPoolUpdateOptions(metadata=[]))  # an empty list removes all metadata
    assert not client.get_pool(uid).metadata
    update(client, uid, m.BatchPoolUpdateOptions(application_package_references=[]))  # nothing to clear
    assert client.get_pool(uid).start_task.command_line == OLD.command_line


def test_bad_updates_are_refused_as_create_refuses_them(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0, start_task=OLD)
    etag = wait_for(lambda: (p := client.get_pool(uid)).allocation_state == "steady" and p.etag, what="steady")
    for bad in (
        m.BatchStartTask(command_line="/bin/true", resource_files=[m.ResourceFile(http_url="http://x/y")]),
        m.BatchStartTask(command_line="/bin/true", max_task_retry_count=1000),
        m.BatchStartTask({}),  # no commandLine: a start task is replaced whole, never merged
    ):
        with pytest.raises(HttpResponseError) as created:
            make_pool(client, f"{uid}-new", nodes=0, start_task=bad)
        with pytest.raises(HttpResponseError) as updated:
            update(client, uid, m.BatchPoolUpdateOptions(start_task=bad))
        assert error_of(updated) == error_of(created) and error_of(updated)[0] == 400
    with pytest.raises(HttpResponseError) as e:
        update(client, uid, m.BatchPoolUpdateOptions(start_task=OLD, metadata=[m.BatchMetadataItem({"value": "v"})]))
    assert error_of(e) == (400, "MissingRequiredProperty", {"PropertyName": "metadata[0].name"})
    for options, prop in (
        (m.BatchPoolUpdateOptions(vm_size="standard_a1"), "vmSize"),  # only an empty pool's, not modelled
        (m.BatchPoolUpdateOptions({"targetDedicatedNodes": 3}), "targetDedicatedNodes"),  # resize does that
    ):
        with pytest.raises(HttpResponseError) as e:
            update(client, uid, options)
        assert error_of(e) == (400, "UnsupportedProperty", {"PropertyName": prop})
    pool = client.get_pool(uid)
    assert pool.etag == etag and pool.start_task.command_line == OLD.command_line  # nothing half-applied


def test_unknown_pool(client: BatchClient, uid: str) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        update(client, uid, m.BatchPoolUpdateOptions(metadata=[]))
    assert error_of(e)[:2] == (404, "PoolNotFound")


def test_a_pool_being_deleted_refuses_it(tmp_path: Path) -> None:
    service = BatchService(tmp_path, "a", boot_seconds=0.01)
    pool = {"id": "p", "vmSize": "x", "targetDedicatedNodes": 1,
            "virtualMachineConfiguration": {"imageReference": {"offer": "u"}, "nodeAgentSKUId": "n"}}  # fmt: skip
    try:
        service.create_pool(pool)
        with service.lock:  # holding the lock keeps the background reclaim from finishing
            service.delete_pool("p")
            with pytest.raises(BatchError) as e:
                service.update_pool("p", {"metadata": []})
            assert (e.value.status, e.value.code) == (409, "PoolBeingDeleted")
    finally:
        service.close()


def test_a_restart_keeps_the_update(tmp_path: Path) -> None:
    port = free_port()
    emulator = start(port, tmp_path)
    client = BatchClient(f"http://127.0.0.1:{port}", AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY))
    make_pool(client, "p", nodes=1, start_task=OLD)
    new = m.BatchStartTask(command_line="/bin/sh -c 'echo new'", wait_for_success=True)
    update(client, "p", m.BatchPoolUpdateOptions(start_task=new, metadata=[m.BatchMetadataItem(name="k", value="v")]))
    state = tmp_path / "state.json"
    wait_for(lambda: state.exists() and b"echo new" in state.read_bytes(), what="the update to be saved")
    stop(emulator, signal.SIGKILL)

    emulator = start(port, tmp_path)
    try:
        pool = client.get_pool("p")
        assert pool.start_task.command_line == new.command_line
        assert [(i.name, i.value) for i in pool.metadata] == [("k", "v")]
        node = next(iter(client.list_nodes("p")))  # rebooted by the restart: it runs the pool's start task now
        wait_for(lambda: startup_stdout(client, "p", node.id) == "old\nnew\n", what="the new start task after reboot")
    finally:
        stop(emulator)
