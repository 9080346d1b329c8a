"""The local stack: Azurite (Storage) and the Batch emulator as background services on loopback; and, on
demand, a Prefect server (`topn server start`) that every later `topn run` uses instead of starting a
temporary one.

They outlive a `topn run`, as Azure does, so a run that died can be resumed; `topn stack stop` and
`topn server stop` end them.
"""

from __future__ import annotations

import contextlib
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


def prefect_url(settings: TopnSettings) -> str:
    return f"http://127.0.0.1:{settings.local_prefect_port}/api"


def prefect_up(settings: TopnSettings) -> bool:
    answer = _probe(f"{prefect_url(settings)}/health")
    if answer is None:
        return False
    if answer[0] == 200 and answer[2].strip() == b"true":
        return True
    raise StackError(
        f"port {settings.local_prefect_port} is taken by something that is not a Prefect server: "
        "set TOPN_LOCAL_PREFECT_PORT to a free port"
    )


def ensure_prefect_server(settings: TopnSettings) -> bool:
    """Starts a Prefect server on loopback (its database under the local folder) unless one answers there;
    returns whether it started one. Analytics stay off."""
    if prefect_up(settings):
        return False
    home = settings.local_dir.resolve()
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_SERVER_API_PORT": str(settings.local_prefect_port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    _spawn("prefect-server", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                              "--port", str(settings.local_prefect_port)], home, env)  # fmt: skip
    _wait(lambda: prefect_up(settings), "prefect-server", home, timeout=180)
    return True


def stop_prefect_server(settings: TopnSettings, grace: float = 15) -> list[str]:
    return _stop(settings, [("prefect-server", b"prefect")], grace)


def _spawn(name: str, command: list[str], home: Path, env: dict[str, str] | None = None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{name}.log", "ab") as log:
        process = subprocess.Popen(command, cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)  # fmt: skip
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


def stop_local_stack(settings: TopnSettings, grace: float = 15) -> list[str]:
    """Stops the services `ensure_local_stack` started: SIGTERM, then after `grace` s SIGKILL of the whole group.

    Returns one line per service saying how it ended. A pid file whose process is gone, or is no longer
    the service (its pid reused), is only removed: never signal a process topn did not start.
    """
    return _stop(settings, [("batch-emulator", b"batch_emulator"), ("azurite", b"azurite")], grace)


def _stop(settings: TopnSettings, services: list[tuple[str, bytes]], grace: float) -> list[str]:
    home = settings.local_dir.resolve()
    said = []
    for name, marker in services:
        pid_file = home / f"{name}.pid"
        if not pid_file.exists():
            continue
        try:
            pid = int(pid_file.read_text())
        except ValueError:
            pid = 0
        if pid > 0 and _alive(pid, marker):
            said.append(f"{name} {_terminate(pid, marker, grace)}")
        pid_file.unlink()
    return said


def _data_dir(pid: int) -> Path | None:
    """The --data-dir a running emulator was started with, if any."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return Path(argv[argv.index(b"--data-dir") + 1].decode())
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, marker: bytes) -> bool:
    """Whether `pid` is a live (not zombie) process whose command line holds `marker`."""
    try:
        if marker not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pid: int, marker: bytes, grace: float) -> str:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid, marker):
        if time.monotonic() > deadline:
            # Started with its own session, so its process group is the service and whatever it started,
            # except the emulator's task processes (each in a session of its own, as on a node): those go too.
            data_dir = _data_dir(pid) if marker == b"batch_emulator" else None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            if data_dir:
                from batch_emulator.processes import kill_node_processes

                kill_node_processes(data_dir)
            return f"did not stop within {grace:.0f} s of SIGTERM: killed (SIGKILL to its process group)"
        time.sleep(0.1)
    return "stopped"
