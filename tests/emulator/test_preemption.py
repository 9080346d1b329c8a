"""Spot node pre-emption: the admin endpoint, requeued tasks, replacement nodes, random pre-emption (SDK 15)."""

from __future__ import annotations

from pathlib import Path

from azure.batch import BatchClient
from azure.batch import models as m
from batch_emulator.server import Emulator

from tests.emulator.conftest import admin, make_job, vm_config
from tests.stack import wait_for

WRONG_KEY = "d3Jvbmcga2V5IGZvciB0ZXN0cw=="


def preempt(emu: Emulator, pool_id: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    """POST /_emulator/pools/{pool_id}/preempt, signed with `key` (the account's by default; "" unsigned)."""
    return admin(emu, "POST", f"/_emulator/pools/{pool_id}/preempt", body, key)


def spot_pool(client: BatchClient, pool_id: str, dedicated: int = 0, spot: int = 2) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=vm_config(),
            target_dedicated_nodes=dedicated,
            target_low_priority_nodes=spot,
            start_task=m.BatchStartTask(command_line="/bin/sh -c 'echo ready > $AZ_BATCH_NODE_SHARED_DIR/ready'"),
        )
    )
    wait_for(
        lambda: len([n for n in client.list_nodes(pool_id) if n.state == "idle"]) == dedicated + spot,
        what=f"pool {pool_id} nodes to start",
    )


def test_preempted_spot_nodes_requeue_their_tasks_and_are_replaced(
    client: BatchClient, emulator: Emulator, uid: str
) -> None:
    spot_pool(client, uid)
    make_job(client, uid, uid)
    for i in range(2):
        client.create_task(uid, m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/sleep 2"))
    wait_for(lambda: all(client.get_task(uid, f"t{i}").state == "running" for i in range(2)), what="tasks to run")
    status, answer = preempt(emulator, uid, {"recoverAfterSeconds": 1.5})
    assert status == 200, answer
    gone = set(answer["preemptedNodeIds"])
    assert answer["poolId"] == uid and len(gone) == 2

    nodes = list(client.list_nodes(uid))
    assert {n.id for n in nodes} == gone and {n.state for n in nodes} == {"preempted"}
    assert all(not n.is_dedicated and n.running_tasks_count == 0 for n in nodes)
    assert client.get_node(uid, next(iter(gone))).state == "preempted"
    pool = client.get_pool(uid)
    assert (pool.current_low_priority_nodes, pool.target_low_priority_nodes) == (2, 2)
    [counts] = client.list_pool_node_counts(filter=f"poolId eq '{uid}'")
    assert (counts.low_priority.preempted, counts.low_priority.total, counts.dedicated.total) == (2, 2, 0)

    def requeued() -> bool:
        tasks = [client.get_task(uid, f"t{i}") for i in range(2)]
        return all(t.state == "active" and t.execution_info.requeue_count == 1 for t in tasks)

    wait_for(requeued, timeout=10, what="tasks to be requeued")
    for i in range(2):
        info = client.get_task(uid, f"t{i}").execution_info
        assert (info.retry_count, info.result, info.failure_info) == (0, None, None)
        assert info.last_requeue_time is not None and info.last_retry_time is None

    for i in range(2):
        task = wait_for(
            lambda i=i: (t := client.get_task(uid, f"t{i}")).state == "completed" and t,
            timeout=15,
            what=f"task t{i} to complete",
        )
        info = task.execution_info
        assert (info.result, info.exit_code, info.requeue_count, info.retry_count) == ("success", 0, 1, 0)
        assert task.node_info.node_id not in gone
    nodes = list(client.list_nodes(uid))
    assert len(nodes) == 2 and not {n.id for n in nodes} & gone
    assert all(not n.is_dedicated and n.start_task_info.result == "success" for n in nodes)
    assert all(n.state in ("idle", "running") for n in nodes)
    [counts] = client.list_pool_node_counts(filter=f"poolId eq '{uid}'")
    assert (counts.low_priority.preempted, counts.low_priority.total) == (0, 2)


def test_only_spot_nodes_are_preempted(client: BatchClient, emulator: Emulator, uid: str) -> None:
    spot_pool(client, uid, dedicated=1, spot=2)
    nodes = list(client.list_nodes(uid))
    dedicated = next(n.id for n in nodes if n.is_dedicated)
    spot = sorted(n.id for n in nodes if not n.is_dedicated)

    status, error = preempt(emulator, uid, {"nodeIds": [dedicated]})
    assert (status, error["code"]) == (409, "NodeNotPreemptible")
    assert "dedicated" in error["message"]["value"]
    status, error = preempt(emulator, uid, {"nodeIds": ["tvm-nope"]})
    assert (status, error["code"]) == (404, "NodeNotFound")
    status, error = preempt(emulator, "no-such-pool")
    assert (status, error["code"]) == (404, "PoolNotFound")
    status, error = preempt(emulator, uid, {"nodes": -1})
    assert (status, error["code"]) == (400, "InvalidPropertyValue")
    assert {n.state for n in client.list_nodes(uid)} == {"idle"}

    status, answer = preempt(emulator, uid, {"nodeIds": [spot[0]], "recoverAfterSeconds": 30})
    assert (status, answer["preemptedNodeIds"]) == (200, [spot[0]])
    status, error = preempt(emulator, uid, {"nodeIds": [spot[0]]})
    assert (status, error["code"]) == (409, "NodeNotPreemptible")  # already pre-empted
    status, answer = preempt(emulator, uid, {"recoverAfterSeconds": 30})  # all the spot nodes left
    assert (status, answer["preemptedNodeIds"]) == (200, [spot[1]])
    states = {n.id: n.state for n in client.list_nodes(uid)}
    assert states == {dedicated: "idle", spot[0]: "preempted", spot[1]: "preempted"}
    status, answer = preempt(emulator, uid)
    assert (status, answer["preemptedNodeIds"]) == (200, [])

    # Shrinking the pool takes pre-empted nodes first; they are never replaced then.
    shrink = m.BatchPoolResizeOptions(target_dedicated_nodes=1, target_low_priority_nodes=0)
    client.begin_resize_pool(uid, shrink, polling_interval=0.05).result()
    assert [n.id for n in client.list_nodes(uid)] == [dedicated]


def test_preempting_needs_the_account_key(client: BatchClient, emulator: Emulator, uid: str) -> None:
    spot_pool(client, uid, spot=1)
    for key in ("", WRONG_KEY):
        status, error = preempt(emulator, uid, key=key)
        assert (status, error["code"]) == (403, "AuthenticationFailed")
    assert [n.state for n in client.list_nodes(uid)] == ["idle"]


def test_random_preemption_hits_spot_nodes_only(tmp_path: Path, uid: str) -> None:
    with Emulator(data_dir=tmp_path, boot_seconds=0.05, preempt_rate=600) as emu:
        client = BatchClient(emu.endpoint, emu.credential())
        client.create_pool(
            m.BatchPoolCreateOptions(
                id=uid,
                vm_size="standard_d2s_v3",
                virtual_machine_configuration=vm_config(),
                target_dedicated_nodes=1,
                target_low_priority_nodes=1,
            )
        )
        first = wait_for(
            lambda: [n.id for n in client.list_nodes(uid) if not n.is_dedicated and n.state == "idle"],
            timeout=10,
            what="spot node to start",
        )
        wait_for(
            lambda: first[0] not in {n.id for n in client.list_nodes(uid) if not n.is_dedicated},
            timeout=10,
            what="spot node to be pre-empted and replaced",
        )
        nodes = list(client.list_nodes(uid))
        assert sum(n.is_dedicated for n in nodes) == 1 and len(nodes) == 2
        assert next(n for n in nodes if n.is_dedicated).state in ("idle", "starting", "creating")
        client.close()
