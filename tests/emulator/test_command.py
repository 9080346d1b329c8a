"""The `azure-batch-emulator` command as a user runs it, and states only the service layer can pin down."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from batch_emulator import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME
from batch_emulator.config import EmulatorConfig, from_command_line
from batch_emulator.errors import BatchError
from batch_emulator.server import Emulator
from batch_emulator.service import BatchService

from tests.emulator.conftest import make_job, make_pool
from tests.stack import alive, free_port, spawn, wait_for


def start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = spawn([sys.executable, "-m", "batch_emulator", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=True)  # fmt: skip
    banner = [proc.stdout.readline() for _ in range(5)]
    return proc, "".join(banner)


def test_command_prints_where_and_how_then_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc, banner = start("--port", str(port), "--data-dir", str(tmp_path), "--boot-seconds", "0.05")
    try:
        assert f"http://127.0.0.1:{port}" in banner
        assert DEV_ACCOUNT_NAME in banner and DEV_ACCOUNT_KEY in banner and str(tmp_path) in banner
        client = BatchClient(f"http://127.0.0.1:{port}", AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY))
        make_pool(client, "p", nodes=1)
        make_job(client, "j", "p")
        pid_file = tmp_path / "pid"
        client.create_task(
            "j", m.BatchTaskCreateOptions(id="t", command_line=f"/bin/sh -c 'echo $$ > {pid_file}; exec sleep 60'")
        )
        pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="task to start"))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped" in out and err == ""
    wait_for(lambda: not alive(pid), what="the task process to be killed")


def test_command_listens_on_loopback_only_by_default() -> None:
    port = free_port()
    proc, _banner = start("--port", str(port))
    try:
        listening = Path("/proc/net/tcp").read_text()
        assert f"0100007F:{port:04X}" in listening  # 127.0.0.1
        assert f"00000000:{port:04X}" not in listening  # not 0.0.0.0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert proc.returncode == 0


def test_busy_port_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "batch_emulator", "--port", str(s.getsockname()[1])],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "cannot listen" in proc.stderr


def test_the_command_line_and_tests_share_one_config(tmp_path: Path) -> None:
    args = ["--port", "0", "--data-dir", str(tmp_path), "--boot-seconds", "0.05", "--autoscale-interval-min", "1"]
    config = from_command_line(args)
    assert config == EmulatorConfig(port=0, data_dir=tmp_path, boot_seconds=0.05, autoscale_min_interval=1.0)
    assert from_command_line([]).port == 10100 and EmulatorConfig().port == 0  # a test takes any free port
    with pytest.raises(ValueError, match="nothing could authenticate"):
        EmulatorConfig(shared_key=False)
    emulator = Emulator(config, boot_seconds=0.01)  # keywords replace the config's fields
    try:
        assert emulator.config == replace(config, boot_seconds=0.01)
        assert (emulator.service.boot_seconds, emulator.service.autoscale_min_interval.total_seconds()) == (0.01, 1.0)
        assert emulator.data_dir == tmp_path.resolve()
    finally:
        emulator.stop()


POOL = {
    "id": "p",
    "vmSize": "x",
    "targetDedicatedNodes": 1,
    "virtualMachineConfiguration": {"imageReference": {"offer": "u"}, "nodeAgentSKUId": "n"},
}


@pytest.fixture
def service(tmp_path: Path):
    svc = BatchService(tmp_path, "a", boot_seconds=0.01)
    yield svc
    svc.close()


def test_being_deleted_conflicts(service: BatchService) -> None:
    service.create_pool(POOL)
    service.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
    with service.lock:  # holding the lock keeps the background reclaim from finishing
        service.delete_pool("p")
        service.delete_job("j")
        assert service.pool("p").state == "deleting" and service.job("j").state == "deleting"
        for call, code in (
            (lambda: service.create_pool(POOL), "PoolBeingDeleted"),
            (lambda: service.resize_pool("p", {"targetDedicatedNodes": 2}), "PoolBeingDeleted"),
            (lambda: service.create_job({"id": "J", "poolInfo": {"poolId": "p"}}), "JobBeingDeleted"),
            (lambda: service.delete_job("j"), "JobBeingDeleted"),
            (lambda: service.add_task("j", {"id": "t", "commandLine": "x"}), "JobBeingDeleted"),
        ):
            with pytest.raises(BatchError) as e:
                call()
            assert (e.value.status, e.value.code) == (409, code)
    wait_for(lambda: not service.pools and not service.jobs, what="reclaim")


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("azure-batch-emulator")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--data-dir" in proc.stdout and "loopback" in proc.stdout
