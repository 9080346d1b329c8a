"""The local stack for tests: a real Azurite, and helpers for SAS URLs and polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

ROOT = Path(__file__).resolve().parent.parent
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

T = TypeVar("T")

# Every process a test starts (directly or through one it started) inherits this marker, so the
# session's end can find any that was left behind (tests/conftest.py).
SESSION_MARKER = "TOPN_TEST_SESSION"
os.environ[SESSION_MARKER] = f"{os.getpid()}-{time.time_ns()}"
_started: list[subprocess.Popen] = []


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], **popen: object) -> subprocess.Popen:
    """Starts a process in its own process group, remembered so that the session can always kill it."""
    process = subprocess.Popen(argv, start_new_session=True, **popen)
    _started.append(process)
    return process


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 60) -> None:
    """Signals a process started by `spawn`, then kills its whole group: what it left behind goes too."""
    with contextlib.suppress(ProcessLookupError):
        if process.poll() is None:
            os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if process in _started:  # done: its pid (and group id) may now be reused by others
        _started.remove(process)


def running_started() -> set[subprocess.Popen]:
    """The processes `spawn` started that `stop` has not ended yet."""
    return set(_started)


def stop_all_started() -> None:
    """Kills every process group `spawn` started, however its test ended."""
    for process in list(_started):
        stop(process, signal.SIGKILL)


def wait_for(check: Callable[[], T], timeout: float = 120, interval: float = 0.05, what: str = "condition") -> T:
    """Polls `check` until it returns something truthy; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Azurite:
    """A running Azurite blob service."""

    process: subprocess.Popen
    port: int

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def client(self) -> BlobServiceClient:
        return BlobServiceClient(
            self.blob_endpoint, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
        )

    def container_sas_url(self, container: str, permission: str, hours: float = 1) -> str:
        sas = generate_container_sas(
            AZURITE_ACCOUNT,
            container,
            account_key=AZURITE_KEY,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=datetime.now(UTC) + timedelta(hours=hours),
        )
        return f"{self.blob_endpoint}/{container}?{sas}"


def start_azurite(location: Path | None = None, port: int | None = None, access_log: Path | None = None) -> Azurite:
    """Azurite in memory, or keeping its data in `location` (across restarts, on the same `port`); with
    `access_log`, its log of every request goes there (one line each)."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-")  # in-memory mode still writes a debug-free workspace here
    keep = ["--location", str(location)] if location else ["--inMemoryPersistence"]
    log = open(access_log, "wb") if access_log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    process = spawn(
        [str(ROOT / "node_modules" / ".bin" / "azurite-blob"), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         *keep, *([] if access_log else ["--silent"]), "--disableTelemetry", "--skipApiVersionCheck"],
        cwd=workdir, stdout=log, stderr=subprocess.PIPE,
    )  # fmt: skip
    if access_log:
        log.close()

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited: {process.stderr.read().decode(errors='replace')}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(ready, timeout=120, what="Azurite to listen")
    except BaseException:
        stop(process)
        raise
    return Azurite(process, port)
