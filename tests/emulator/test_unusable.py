"""Unusable nodes (SDK 15): the admin endpoint, running tasks requeued and completed elsewhere, node errors and
counts, removing (removenodes) and rebooting nodes, back to usable, random unusable nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchNodeRebootOptions
from azure.core.exceptions import HttpResponseError
from batch_emulator.server import Emulator

from tests.emulator.conftest import admin, make_job, make_pool
from tests.stack import wait_for

REQUEUE = BatchNodeRebootOptions(node_reboot_kind="requeue")  # SDK 15 sends no body without options, and fails
START = m.BatchStartTask(command_line="/bin/sh -c 'echo ready >> $AZ_BATCH_NODE_SHARED_DIR/boots'")


def unusable(emu: Emulator, pool_id: str, body: dict, key: str | None = None) -> tuple[int, dict]:
    return admin(emu, "POST", f"/_emulator/pools/{pool_id}/unusable", body, key)


def states(client: BatchClient, pool_id: str) -> dict[str, str]:
    return {n.id: n.state for n in client.list_nodes(pool_id)}


def test_an_unusable_node_requeues_its_task_which_completes_elsewhere(
    client: BatchClient, emulator: Emulator, uid: str
) -> None:
    make_pool(client, uid, nodes=2, start_task=START)
    make_job(client, uid, uid, constraints=m.BatchJobConstraints(max_task_retry_count=0))
    client.create_task(uid, m.BatchTaskCreateOptions(id="long", command_line="/bin/sleep 2"))
    task = wait_for(lambda: (t := client.get_task(uid, "long")).state == "running" and t, what="task to run")
    hit = task.node_info.node_id
    other = next(n for n in states(client, uid) if n != hit)

    status, answer = unusable(emulator, uid, {"nodeIds": [hit]})
    assert (status, answer) == (200, {"poolId": uid, "unusableNodeIds": [hit]})
    node = client.get_node(uid, hit)
    assert node.state == "unusable"
    [error] = node.errors
    assert (error.code, error.message) == ("DiskFull", "There is not enough disk space on the node")
    assert [(d.name, d.value) for d in error.error_details] == [("Path", "/mnt/batch/tasks")]
    [counts] = client.list_pool_node_counts(filter=f"poolId eq '{uid}'")
    assert (counts.dedicated.unusable, counts.dedicated.total) == (1, 2)
    pool = client.get_pool(uid)
    assert (pool.current_dedicated_nodes, pool.target_dedicated_nodes) == (2, 2)

    # Requeued, not retried (maxTaskRetryCount 0 would have failed it), and completed on the other node.
    done = wait_for(
        lambda: (t := client.get_task(uid, "long")).state == "completed" and t, timeout=30, what="task to complete"
    )
    info = done.execution_info
    assert (info.result, info.exit_code, info.retry_count, info.requeue_count) == ("success", 0, 0, 1)
    assert done.node_info.node_id == other and info.last_requeue_time is not None

    # It takes no new task.
    for i in range(3):
        client.create_task(uid, m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true"))
    for i in range(3):
        t = wait_for(lambda i=i: (t := client.get_task(uid, f"t{i}")).state == "completed" and t, what=f"t{i}")
        assert t.node_info.node_id == other
    assert client.get_node(uid, hit).state == "unusable"

    # A user cannot reboot it (as on Azure); back to usable, it boots again and runs its start task.
    with pytest.raises(HttpResponseError) as e:
        client.begin_reboot_node(uid, hit, REQUEUE, polling_interval=0.05).result()
    assert (e.value.status_code, e.value.error.code) == (409, "NodeStateUnusable")
    status, answer = unusable(emulator, uid, {"nodeIds": [hit], "usable": True})
    assert (status, answer) == (200, {"poolId": uid, "usableNodeIds": [hit]})
    back = wait_for(lambda: (n := client.get_node(uid, hit)).state == "idle" and n, timeout=30, what="node to recover")
    assert back.errors is None and back.start_task_info.result == "success"


def test_removing_and_rebooting_nodes(client: BatchClient, emulator: Emulator, uid: str) -> None:
    make_pool(client, uid, nodes=3, start_task=START)
    _, answer = unusable(emulator, uid, {"nodes": 1})
    [hit] = answer["unusableNodeIds"]
    assert states(client, uid)[hit] == "unusable"

    # removenodes takes an unusable node out; the pool's target drops by one.
    options = m.BatchNodeRemoveOptions(node_ids=[hit], node_deallocation_option="requeue")
    client.begin_remove_nodes(uid, options, polling_interval=0.05).result()
    pool = client.get_pool(uid)
    assert (pool.allocation_state, pool.target_dedicated_nodes) == ("steady", 2)
    wait_for(lambda: hit not in states(client, uid), timeout=30, what="the node to leave")
    assert pool.resize_errors is None and len(states(client, uid)) == 2

    # Rebooting an idle node: rebooting, then it boots again and runs its start task once more.
    node_id = next(iter(states(client, uid)))
    first = client.get_node(uid, node_id).start_task_info.start_time
    client.begin_reboot_node(uid, node_id, REQUEUE, polling_interval=0.05).result()
    rebooted = wait_for(
        lambda: (n := client.get_node(uid, node_id)).state == "idle" and n.start_task_info.start_time != first and n,
        timeout=30,
        what="the node to reboot",
    )
    assert rebooted.start_task_info.result == "success"

    # A running task is requeued by a reboot and completes, on that node or another.
    make_job(client, uid, uid)
    client.create_task(uid, m.BatchTaskCreateOptions(id="long", command_line="/bin/sleep 2"))
    task = wait_for(lambda: (t := client.get_task(uid, "long")).state == "running" and t, what="task to run")
    client.begin_reboot_node(uid, task.node_info.node_id, REQUEUE, polling_interval=0.05).result()
    done = wait_for(
        lambda: (t := client.get_task(uid, "long")).state == "completed" and t, timeout=30, what="task to complete"
    )
    assert (done.execution_info.result, done.execution_info.requeue_count) == ("success", 1)

    with pytest.raises(HttpResponseError) as e:
        client.begin_remove_nodes(uid, m.BatchNodeRemoveOptions(node_ids=["tvm-nope"]), polling_interval=0.05).result()
    assert (e.value.status_code, e.value.error.code) == (404, "NodeNotFound")


def test_all_nodes_unusable_recover_by_themselves(client: BatchClient, emulator: Emulator, uid: str) -> None:
    make_pool(client, uid, nodes=2)
    status, answer = unusable(emulator, uid, {"all": True, "recoverAfterSeconds": 0.5, "error": None})
    assert status == 200 and sorted(answer["unusableNodeIds"]) == sorted(states(client, uid))
    assert all(n.state == "unusable" and n.errors is None for n in client.list_nodes(uid))
    wait_for(lambda: set(states(client, uid).values()) == {"idle"}, timeout=30, what="the nodes to recover")


def test_bad_requests_and_the_key(client: BatchClient, emulator: Emulator, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    [node_id] = states(client, uid)
    for body in ({}, {"nodes": 1, "all": True}, {"nodes": -1}, {"nodeIds": "x"}, {"all": True, "error": "full"}):
        status, error = unusable(emulator, uid, body)
        assert status == 400, body
    status, error = unusable(emulator, uid, {"nodeIds": ["tvm-nope"]})
    assert (status, error["code"]) == (404, "NodeNotFound")
    status, error = unusable(emulator, "no-such-pool", {"all": True})
    assert (status, error["code"]) == (404, "PoolNotFound")
    status, error = unusable(emulator, uid, {"nodeIds": [node_id], "usable": True})
    assert (status, error["code"]) == (409, "NodeStateInvalid")  # it is not unusable
    status, error = unusable(emulator, uid, {"all": True}, key="")
    assert (status, error["code"]) == (403, "AuthenticationFailed")
    assert states(client, uid) == {node_id: "idle"}


def test_random_unusable_nodes(tmp_path: Path, uid: str) -> None:
    with Emulator(
        data_dir=tmp_path, boot_seconds=0.05, unusable_rate=36000, seed=3, unusable_recover_seconds=0.2
    ) as emu:
        client = BatchClient(emu.endpoint, emu.credential())
        make_pool(client, uid, nodes=1, wait=False)
        seen = wait_for(
            lambda: [n for n in client.list_nodes(uid) if n.state == "unusable"], timeout=30, what="a node unusable"
        )
        assert seen[0].errors[0].code == "DiskFull"
        wait_for(
            lambda: any(n.state in ("starting", "idle") for n in client.list_nodes(uid)),
            timeout=30,
            what="the node to recover",
        )
        client.close()
