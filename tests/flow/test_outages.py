"""The local stack killed mid-run (kill -9) and started again with the same data folders: the run still ends
exactly, and what finished before the crash is not run again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from batch_emulator import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

from tests.flow.test_processes import SLOW_POOL, corpus, topn_process
from tests.stack import free_port, spawn, start_azurite, stop, wait_for
from tests.taskapp.oracle import spec_top


def start_emulator(port: int, data: Path) -> subprocess.Popen:
    log = open(data.parent / "emulator.log", "ab")  # noqa: SIM115 - for the process's lifetime
    process = spawn([sys.executable, "-m", "batch_emulator", "--port", str(port), "--data-dir", str(data),
                     "--boot-seconds", "0.05"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    wait_for(lambda: process.poll() is None and stats(port) is not None, what="the emulator to answer")
    return process


def stats(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/stats", timeout=5) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


def outputs(azurite) -> int:
    """How many files' results are in storage (this stack's own: every part file is this run's)."""
    results = azurite.client().get_container_client("topn-output")
    if not results.exists():
        return 0
    return sum(b.name.endswith(".part") for b in results.list_blobs(name_starts_with="parts/"))  # not .members


@pytest.mark.parametrize("victim", ["emulator", "azurite"])
def test_a_run_survives_its_stack_being_killed_and_restarted(prefect_api: str, tmp_path: Path, victim: str) -> None:
    blob_port, batch_port = free_port(), free_port()
    azurite = start_azurite(tmp_path / "azurite", blob_port)
    emulator = start_emulator(batch_port, tmp_path / "batch")
    folder = corpus(tmp_path / "texts", 40, tag=f"outage-{victim}-")
    env = {**SLOW_POOL, "TOPN_POOL_ID": "outage", "TOPN_LOCAL_DIR": str(tmp_path / "topn"),
           "TOPN_LOCAL_BLOB_PORT": str(blob_port), "TOPN_LOCAL_BATCH_PORT": str(batch_port)}  # fmt: skip
    run = topn_process(str(folder), "--top", "3", "--json", env=env)
    client = BatchClient(f"http://127.0.0.1:{batch_port}", AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY))

    def completed() -> int:
        jobs = list(client.list_jobs())
        return client.get_job_task_counts(jobs[0].id).task_counts.completed if jobs else 0

    wait_for(lambda: completed() >= 8, timeout=300, what="8 tasks to complete")
    if victim == "azurite":  # Azurite writes its data to disk every few seconds: kill it after it saved some
        saved = tmp_path / "azurite" / "__azurite_db_blob__.json"
        wait_for(lambda: saved.exists() and saved.read_text(errors="replace").count('"parts/') >= 8,
                 what="Azurite to save 8 results")  # fmt: skip
    finished = outputs(azurite)
    if victim == "emulator":
        stop(emulator, signal.SIGKILL)
        emulator = start_emulator(batch_port, tmp_path / "batch")
    else:
        stop(azurite.process, signal.SIGKILL)
        azurite = start_azurite(tmp_path / "azurite", blob_port)
    # Azurite saves its data every few seconds: outputs written just before it was killed are lost with it
    # and must be counted again. Nothing else may be.
    lost = max(0, finished - outputs(azurite))
    out, err = run.communicate(timeout=600)
    if run.returncode != 0:  # the run may give up (storage lost what it had not saved yet): a re-run finishes it
        assert "again" in err, err[-3000:] + (tmp_path / "emulator.log").read_text()[-3000:]
        run = topn_process(str(folder), "--top", "3", "--json", env=env)
        out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:] + (tmp_path / "emulator.log").read_text()[-3000:]
    result = json.loads(out)
    assert result["top"] == spec_top(folder, 3)
    assert result["files_counted"] == 40
    executions = stats(batch_port)["scheduler"]["tasksScheduled"]
    # Each file once and the merge, the files whose outputs storage lost, and what the crash forced: the
    # task running then, and completions the emulator had not saved yet (it saves every 0.5 s).
    assert 41 <= executions <= 41 + lost + 4, (executions, lost)
    print(f"\n  {victim} killed: {executions} task executions for 41 tasks ({lost} outputs lost)", file=sys.stderr)
