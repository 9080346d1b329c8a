"""`topn stack`: the local services start, stop, and are made to stop; nothing else is ever signalled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.stack import ROOT, alive, free_port, spawn, stop, wait_for
from topn.flows.local_stack import stop_local_stack
from topn.tasks.settings import TopnSettings

BIN = Path(sys.executable).parent


def local(tmp_path: Path) -> TopnSettings:
    return TopnSettings(local_dir=tmp_path, local_batch_port=free_port(), local_blob_port=free_port())


def test_stop_escalates_when_sigterm_is_ignored(tmp_path: Path) -> None:
    stubborn = spawn([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "print(flush=True); time.sleep(600)", "batch_emulator"], stdout=subprocess.PIPE)  # fmt: skip
    stubborn.stdout.readline()  # SIGTERM is ignored from here on
    (tmp_path / "batch-emulator.pid").write_text(str(stubborn.pid))
    said = stop_local_stack(local(tmp_path), grace=1)
    assert said == ["batch-emulator did not stop within 1 s of SIGTERM: killed (SIGKILL to its process group)"]
    stubborn.wait(timeout=60)
    assert stubborn.returncode == -9 and not (tmp_path / "batch-emulator.pid").exists()


def test_stop_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    other = spawn(["/bin/sleep", "600"])  # the pid file's process is gone and its pid now belongs to this one
    (tmp_path / "azurite.pid").write_text(str(other.pid))
    try:
        assert stop_local_stack(local(tmp_path), grace=1) == []
        assert alive(other.pid) and not (tmp_path / "azurite.pid").exists()
    finally:
        stop(other)


def test_topn_stack_start_then_stop(tmp_path: Path) -> None:
    settings = local(tmp_path)
    env = {**os.environ, "TOPN_LOCAL_DIR": str(tmp_path), "TOPN_LOCAL_BATCH_PORT": str(settings.local_batch_port),
           "TOPN_LOCAL_BLOB_PORT": str(settings.local_blob_port)}  # fmt: skip
    try:
        started = subprocess.run([str(BIN / "topn"), "stack", "start"], env=env, capture_output=True, text=True,
                                 timeout=300, cwd=ROOT)  # fmt: skip
        assert started.returncode == 0 and "started: azurite, batch-emulator" in started.stdout, started.stderr
        pids = [int((tmp_path / f"{n}.pid").read_text()) for n in ("azurite", "batch-emulator")]
    finally:
        stopped = subprocess.run([str(BIN / "topn"), "stack", "stop"], env=env, capture_output=True, text=True,
                                 timeout=300, cwd=ROOT)  # fmt: skip
    assert stopped.returncode == 0, stopped.stderr
    assert "batch-emulator stopped" in stopped.stdout and "azurite stopped" in stopped.stdout
    assert stopped.stdout.count(": down") == 2
    wait_for(lambda: not any(alive(p) for p in pids), what="the stack's processes to exit")
