"""The local stack: Azurite (Storage) and the Batch emulator as background services on loopback.

They outlive a `topn run`, as Azure does, so a run that died can be resumed; `topn stack stop` ends them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tasks.settings import TopnSettings

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"


class StackError(RuntimeError):
    """The local stack cannot be started."""


def _probe(url: str) -> tuple[int, dict[str, str], bytes] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except OSError:
        return None


def azurite_up(settings: TopnSettings) -> bool:
    answer = _probe(f"http://127.0.0.1:{settings.local_blob_port}/")
    if answer is None:
        return False
    if "Azurite" not in answer[1].get("Server", ""):
        raise StackError(
            f"port {settings.local_blob_port} is taken by something that is not Azurite: "
            "set TOPN_LOCAL_BLOB_PORT to a free port"
        )
    return True


def emulator_up(settings: TopnSettings) -> bool:
    answer = _probe(f"http://127.0.0.1:{settings.local_batch_port}/_emulator/health")
    if answer is None:
        return False
    try:
        return json.loads(answer[2])["status"] == "ok"
    except (ValueError, KeyError, TypeError):
        raise StackError(
            f"port {settings.local_batch_port} is taken by something that is not the Batch emulator: "
            "set TOPN_LOCAL_BATCH_PORT to a free port"
        ) from None


def _spawn(name: str, command: list[str], home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{name}.log", "ab") as log:
        process = subprocess.Popen(command, cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # fmt: skip
    (home / f"{name}.pid").write_text(str(process.pid))


def _wait(check, name: str, home: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{name} did not start within {timeout:.0f} s; see {home / (name + '.log')}")
        time.sleep(0.2)


def ensure_local_stack(settings: TopnSettings) -> list[str]:
    """Starts whatever of Azurite and the emulator is not answering yet; returns what it started."""
    home = settings.local_dir.resolve()
    started = []
    if not azurite_up(settings):
        if not AZURITE.exists():
            raise StackError(f"Azurite is not installed at {AZURITE}: run ./dev demo (or npm ci) first")
        _spawn("azurite", [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(settings.local_blob_port),
                           "--location", str(home / "azurite"), "--silent", "--disableTelemetry",
                           "--skipApiVersionCheck"], home)  # fmt: skip
        started.append("azurite")
    if not emulator_up(settings):
        _spawn("batch-emulator", [sys.executable, "-m", "batch_emulator", "--port", str(settings.local_batch_port),
                                  "--data-dir", str(home / "batch")], home)  # fmt: skip
        started.append("batch-emulator")
    if "azurite" in started:
        _wait(lambda: azurite_up(settings), "azurite", home)
    if "batch-emulator" in started:
        _wait(lambda: emulator_up(settings), "batch-emulator", home)
    return started


def stop_local_stack(settings: TopnSettings) -> list[str]:
    """Stops the services `ensure_local_stack` started (SIGTERM; the emulator kills its task processes)."""
    home = settings.local_dir.resolve()
    stopped = []
    for name in ("batch-emulator", "azurite"):
        pid_file = home / f"{name}.pid"
        if not pid_file.exists():
            continue
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            stopped.append(name)
        except (ProcessLookupError, ValueError):
            pass
        pid_file.unlink()
    return stopped
