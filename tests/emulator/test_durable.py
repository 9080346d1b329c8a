"""With --data-dir the emulator keeps its pools, jobs and tasks across a restart, even after kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from batch_emulator import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

from tests.emulator.conftest import make_job, make_pool, wait_task
from tests.stack import alive, free_port, spawn, stop, wait_for


def start(port: int, data: Path) -> subprocess.Popen:
    process = spawn([sys.executable, "-m", "batch_emulator", "--port", str(port), "--data-dir", str(data),
                     "--boot-seconds", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert "listening" in process.stdout.readline()
    return process


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_state_survives_a_restart(tmp_path: Path, how: signal.Signals) -> None:
    port = free_port()
    emulator = start(port, tmp_path)
    client = BatchClient(f"http://127.0.0.1:{port}", AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY))
    make_pool(client, "p", nodes=1, slots=2)
    make_job(client, "j", "p", uses_task_dependencies=True)
    client.create_task("j", m.BatchTaskCreateOptions(id="done", command_line="/bin/sh -c 'exit 0'"))
    wait_task(client, "j", "done")
    pid_file = tmp_path / "pid"
    client.create_task("j", m.BatchTaskCreateOptions(id="long", command_line=f"/bin/sh -c 'echo $$ > {pid_file}; "
                                                     "exec sleep 3'"))  # fmt: skip
    client.create_task("j", m.BatchTaskCreateOptions(
        id="after", command_line="/bin/true", depends_on=m.BatchTaskDependencies(task_ids=["long"])))  # fmt: skip
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the long task to start"))
    wait_for(lambda: (tmp_path / "state.json").exists() and b'"running"' in (tmp_path / "state.json").read_bytes(),
             what="the state with the running task to be saved")  # fmt: skip
    stop(emulator, how)

    emulator = start(port, tmp_path)
    assert not alive(pid)  # the node "rebooted": what ran on it was killed
    assert client.get_pool("p").state == "active" and len(list(client.list_nodes("p"))) == 1
    done = client.get_task("j", "done")
    assert done.state == "completed" and done.execution_info.result == "success"
    long = wait_task(client, "j", "long", timeout=120)
    assert long.execution_info.result == "success" and long.execution_info.requeue_count == 1
    assert wait_task(client, "j", "after").execution_info.result == "success"
    stop(emulator)


def test_an_unreadable_state_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"format": 99}')
    process = subprocess.run([sys.executable, "-m", "batch_emulator", "--port", str(free_port()), "--data-dir",
                              str(tmp_path)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert process.returncode == 1 and process.stderr.count("\n") == 1
    assert "cannot read the saved state" in process.stderr and "move it away" in process.stderr
