"""The local stack: Azurite (Storage) and the Batch emulator as background services on loopback; and, on
demand, a Prefect server (`topn server start`) that every later `topn run` uses instead of starting a
temporary one.

They outlive a `topn run`, as Azure does, so a run that died can be resumed; `topn stack stop` and
`topn server stop` end them.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from topn.tasks.settings import AZURITE_ACCOUNT, TopnSettings

CHECKOUT_AZURITE = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "azurite-blob"
NEEDS_LOCAL = "the local stack needs topn's `local` extra: pip install 'topn[local]' (in a checkout: ./dev)"


class StackError(RuntimeError):
    """The local stack cannot be started."""


def _probe(url: str, ca_file: str | None = None) -> tuple[int, dict[str, str], bytes] | None:
    try:
        context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
        with urllib.request.urlopen(url, timeout=2, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except OSError:
        return None


def _mode(entra: bool) -> str:
    return "Entra ID mode (HTTPS)" if entra else "Shared Key mode (HTTP)"


def _answer(settings: TopnSettings, port: int, path: str) -> tuple[int, dict[str, str], bytes] | None:
    """The service's answer on `port` in the mode the settings ask for; a StackError if it runs in the
    other mode (HTTP where HTTPS is expected, or the reverse); None if nothing answers."""
    scheme = settings.local_scheme
    ca_file = str(settings.local_tls[0])  # the local stack's, whatever the rest of the settings point at
    answer = _probe(f"{scheme}://127.0.0.1:{port}{path}", ca_file)
    if answer is None:
        other = "http" if scheme == "https" else "https"
        if _probe(f"{other}://127.0.0.1:{port}{path}", ca_file) is not None:
            raise StackError(
                f"the local stack on port {port} runs in {_mode(other == 'https')}, and topn is set for "
                f"{_mode(scheme == 'https')}: restart it with `topn stack stop` then `topn stack start"
                f"{' --entra' if scheme == 'https' else ''}`, or {'unset' if scheme == 'https' else 'set'} "
                "TOPN_USE_ENTRA_ID"
            )
    return answer


def azurite_up(settings: TopnSettings) -> bool:
    answer = _answer(settings, settings.local_blob_port, "/")
    if answer is None:
        return False
    if "Azurite" not in answer[1].get("Server", ""):
        raise StackError(
            f"port {settings.local_blob_port} is taken by something that is not Azurite: "
            "set TOPN_LOCAL_BLOB_PORT to a free port"
        )
    return True


def emulator_up(settings: TopnSettings) -> bool:
    answer = _answer(settings, settings.local_batch_port, "/_emulator/health")
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
    env = {
        **os.environ,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_API_PORT": str(settings.local_prefect_port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }
    env.pop("PREFECT_API_URL", None)
    _spawn(
        "prefect-server",
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.local_prefect_port),
        ],
        home,
        env,
    )
    _wait(lambda: prefect_up(settings), "prefect-server", home, timeout=180)
    return True


def stop_prefect_server(settings: TopnSettings, grace: float = 15) -> list[str]:
    return _stop(settings, [("prefect-server", b"prefect")], grace)


def _spawn(name: str, command: list[str], home: Path, env: dict[str, str] | None = None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    (home / f"{name}.pid").write_text(str(process.pid))


def _wait(check, name: str, home: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{name} did not start within {timeout:.0f} s; see {home / (name + '.log')}")
        time.sleep(0.2)


def ensure_local_stack(settings: TopnSettings) -> list[str]:
    """Starts whatever of Azurite and the emulator is not answering yet; returns what it started. With
    TOPN_USE_ENTRA_ID both serve HTTPS with the development certificate and take Entra ID tokens only."""
    home = settings.local_dir.resolve()
    started = []
    if settings.use_entra_id:
        _ensure_certificate(settings)
    emulator_down = not emulator_up(settings)
    if emulator_down and importlib.util.find_spec("batch_emulator") is None:
        raise StackError(NEEDS_LOCAL)  # a stack started elsewhere (a checkout's) serves without it
    if not azurite_up(settings):
        _spawn(
            "azurite",
            [
                _azurite(),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(settings.local_blob_port),
                "--location",
                str(home / "azurite"),
                "--silent",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                *_azurite_entra(settings),
            ],
            home,
            _azurite_env(settings),
        )
        started.append("azurite")
    if emulator_down:
        _spawn(
            "batch-emulator",
            [
                sys.executable,
                "-m",
                "batch_emulator",
                "--port",
                str(settings.local_batch_port),
                "--data-dir",
                str(home / "batch"),
                *_emulator_entra(settings),
            ],
            home,
        )
        started.append("batch-emulator")
    if "azurite" in started:
        _wait(lambda: azurite_up(settings), "azurite", home)
    if "batch-emulator" in started:
        _wait(lambda: emulator_up(settings), "batch-emulator", home)
    return started


def _azurite() -> str:
    """Azurite's blob service: the checkout's (npm ci), else the one on PATH (npm install -g azurite)."""
    found = str(CHECKOUT_AZURITE) if CHECKOUT_AZURITE.exists() else shutil.which("azurite-blob")
    if not found:
        raise StackError(
            "Azurite (the Storage emulator) is not installed: npm install -g azurite@3.37.0, or put azurite-blob on "
            "PATH (in a checkout: ./dev)"
        )
    return found


def _ensure_certificate(settings: TopnSettings) -> None:
    """Makes the development certificate when it is missing or ends within a month, but never under
    services that serve the old one (clients would stop trusting them)."""
    from topn.flows.dev_tls import certificate_due, make_certificate  # the `local` extra's cryptography

    cert, key = settings.local_tls
    if not certificate_due(cert, key):
        return
    if any(_listening(port) for port in (settings.local_blob_port, settings.local_batch_port)):
        raise StackError(
            f"the local stack is running without Entra ID, or with a development certificate that is gone or "
            f"ends within a month ({cert}): restart it (`topn stack stop`, then `topn stack start --entra`)"
        )
    make_certificate(cert, key)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _azurite_entra(settings: TopnSettings) -> list[str]:
    cert, key = settings.local_tls
    return ["--oauth", "basic", "--cert", str(cert), "--key", str(key)] if settings.use_entra_id else []


def _azurite_env(settings: TopnSettings) -> dict[str, str] | None:
    """In Entra ID mode, Azurite's account gets a random key that is kept nowhere: Shared Key (the well-known
    development key included) is refused, as on an account with key access disabled."""
    if not settings.use_entra_id:
        return None
    return {**os.environ, "AZURITE_ACCOUNTS": f"{AZURITE_ACCOUNT}:{base64.b64encode(secrets.token_bytes(64)).decode()}"}


def _emulator_entra(settings: TopnSettings) -> list[str]:
    cert, key = settings.local_tls
    if not settings.use_entra_id:
        return []
    return ["--cert", str(cert), "--cert-key", str(key), "--entra", "--no-shared-key", "--trust-ca", str(cert)]


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
