"""Stopping the emulator is bounded and leaves no process behind, whatever its nodes are doing at that moment."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import AzureError
from batch_emulator import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME
from batch_emulator.server import Emulator

from tests.emulator.conftest import vm_config
from tests.stack import free_port, spawn, wait_for

ITERATIONS = 50


def processes_with(token: str) -> list[int]:
    """Live (not zombie) processes whose command line holds `token`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if token.encode() not in (entry / "cmdline").read_bytes():
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def keep_adding_tasks(client: BatchClient, job_id: str, command: str, stop: threading.Event) -> None:
    """Adds tasks until told to stop or the emulator goes away: the scheduler is busy when the signal comes."""
    serial = 0
    while not stop.is_set():
        batch = [m.BatchTaskCreateOptions(id=f"t{serial + i}", command_line=command) for i in range(5)]
        serial += 5
        try:
            client.create_tasks(job_id, batch)
        except (AzureError, OSError, AttributeError):  # AttributeError: azure-batch 15.1, on no answer at all
            return


def busy_account(client: BatchClient, command: str) -> None:
    """A pool whose nodes are booting and running a start task, and a job ready for tasks."""
    client.create_pool(
        m.BatchPoolCreateOptions(
            id="p",
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=vm_config(),
            target_dedicated_nodes=3,
            task_slots_per_node=2,
            start_task=m.BatchStartTask(command_line=command, wait_for_success=False),
        )
    )
    client.create_job(m.BatchJobCreateOptions(id="j", pool_info=m.BatchPoolInfo(pool_id="p")))


def no_retries() -> dict:
    return {"retry_total": 0, "connection_timeout": 30, "read_timeout": 60}


def test_sigterm_while_tasks_are_being_scheduled_kills_every_process(tmp_path: Path) -> None:
    rng = random.Random(13)
    for i in range(ITERATIONS):
        token = f"{rng.randrange(10**9)}"
        command = f"/bin/sleep 600.{token}"  # a unique command line, to find every process it became
        port = free_port()
        proc = spawn([sys.executable, "-m", "batch_emulator", "--port", str(port), "--data-dir",
                      str(tmp_path / str(i)), "--boot-seconds", f"{rng.choice([0, 0.01, 0.05])}"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert "listening" in proc.stdout.readline()
        client = BatchClient(
            f"http://127.0.0.1:{port}", AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY), **no_retries()
        )
        done = threading.Event()
        adder = threading.Thread(target=keep_adding_tasks, args=(client, "j", command, done))
        try:
            busy_account(client, command)
            adder.start()
            threading.Event().wait(rng.uniform(0, 0.15))  # the moment the signal comes, varied on purpose
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        finally:
            done.set()
            if adder.is_alive():
                adder.join()
            client.close()
        assert (proc.returncode, err) == (0, ""), f"iteration {i}: {err[-2000:]}"
        assert "stopped" in out
        wait_for(lambda t=token: not processes_with(t), timeout=30, what=f"iteration {i}: every task process gone")


def test_stop_in_process_while_nodes_boot_and_tasks_start(tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(ITERATIONS):
        token = f"{rng.randrange(10**9)}"
        command = f"/bin/sleep 600.{token}"
        emu = Emulator(data_dir=tmp_path / str(i), boot_seconds=rng.choice([0, 0.01, 0.03])).start()
        client = BatchClient(emu.endpoint, emu.credential(), **no_retries())
        try:
            busy_account(client, command)
            client.create_tasks("j", [m.BatchTaskCreateOptions(id=f"t{n}", command_line=command) for n in range(20)])
            threading.Event().wait(rng.uniform(0, 0.05))
        finally:
            finished = emu.stop()
            client.close()
        assert finished, f"iteration {i}: node threads still running after stop"
        wait_for(lambda t=token: not processes_with(t), timeout=30, what=f"iteration {i}: every task process gone")


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A port that accepts connections and never answers: a download that hangs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def hanging_download(tmp_path: Path, silent_server: socket.socket) -> tuple[subprocess.Popen, socket.socket]:
    port = free_port()
    proc = spawn([sys.executable, "-m", "batch_emulator", "--port", str(port), "--data-dir", str(tmp_path),
                  "--boot-seconds", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert "listening" in proc.stdout.readline()
    client = BatchClient(f"http://127.0.0.1:{port}", AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY))
    busy_account(client, "/bin/true")
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/never"
    client.create_task(
        "j",
        m.BatchTaskCreateOptions(
            id="t", command_line="/bin/true", resource_files=[m.ResourceFile(http_url=url, file_path="x")]
        ),
    )
    silent_server.settimeout(120)
    connection, _ = silent_server.accept()  # the node is now inside the download, waiting for an answer
    client.close()
    return proc, connection


def test_sigterm_during_a_hanging_download_still_exits(tmp_path: Path, silent_server: socket.socket) -> None:
    proc, connection = hanging_download(tmp_path, silent_server)
    with connection:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped" in out and err == ""


def test_a_second_signal_forces_the_exit(tmp_path: Path, silent_server: socket.socket) -> None:
    proc, connection = hanging_download(tmp_path, silent_server)
    with connection:
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    # The first stop waits for the hanging download; the second signal (whichever runs second) ends it now.
    assert proc.returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM)
