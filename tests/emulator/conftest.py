from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from batch_emulator import wire
from batch_emulator.auth import sign, string_to_sign
from batch_emulator.server import Emulator

from tests.stack import wait_for

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with Emulator(data_dir=tmp_path_factory.mktemp("batch"), boot_seconds=0.05) as emu:
        yield emu


@pytest.fixture(scope="session")
def client(emulator: Emulator) -> BatchClient:
    return BatchClient(emulator.endpoint, emulator.credential())


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    """An id unique to this test, usable for pools, jobs and containers."""
    return f"t{next(_ids)}-{request.node.name[:30]}".lower().replace("_", "-").replace("[", "-").replace("]", "")


def vm_config() -> m.VirtualMachineConfiguration:
    return m.VirtualMachineConfiguration(
        image_reference=m.BatchVmImageReference(publisher="canonical", offer="ubuntu-24_04-lts", sku="server"),
        node_agent_sku_id="batch.node.ubuntu 24.04",
    )


def make_pool(
    client: BatchClient, pool_id: str, nodes: int = 1, slots: int = 1, start_task=None, wait: bool = True, **extra
) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=vm_config(),
            target_dedicated_nodes=nodes,
            task_slots_per_node=slots,
            start_task=start_task,
            **extra,
        )
    )
    if wait and nodes:
        wait_for(
            lambda: len([n for n in client.list_nodes(pool_id) if n.state in ("idle", "starttaskfailed")]) == nodes,
            what=f"pool {pool_id} nodes to start",
        )


def make_job(client: BatchClient, job_id: str, pool_id: str, **extra) -> None:
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id), **extra))


def wait_task(client: BatchClient, job_id: str, task_id: str, timeout: float = 30) -> m.BatchTask:
    return wait_for(
        lambda: (t := client.get_task(job_id, task_id)).state == "completed" and t,
        timeout=timeout,
        what=f"task {task_id} to complete",
    )


def read_file(client: BatchClient, job_id: str, task_id: str, path: str) -> str:
    return b"".join(client.download_task_file(job_id, task_id, path)).decode()


def admin(emu: Emulator, method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    """An /_emulator/... request signed with `key` (the account's by default; "" unsigned), as an admin POST must
    be: (status, JSON answer)."""
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"ocp-date": wire.rfc1123(wire.now()), "Content-Type": "application/json"}
    if data:
        headers["Content-Length"] = str(len(data))
    key = emu.key if key is None else key
    if key:
        signature = sign(key, string_to_sign(method, path, "", headers, emu.account))
        headers["Authorization"] = f"SharedKey {emu.account}:{signature}"
    request = urllib.request.Request(emu.endpoint + path, data=data or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
