"""The real local stack for flow tests: a Prefect server, Azurite and the Batch emulator, once per session."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_emulator.server import Emulator

from tests.stack import Azurite, free_port, spawn, stop, wait_for

QUIET = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false"}  # fmt: skip


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on loopback, with its own database; PREFECT_API_URL points at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")  # noqa: SIM115 - open for the server's lifetime
    server = spawn([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
                    "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    def healthy() -> bool:
        assert server.poll() is None, (home / "server.log").read_text()
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=5).status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=240, interval=0.5, what="prefect server")
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        os.environ.update({**QUIET, "PREFECT_API_URL": url, "PREFECT_HOME": str(home)})
        with temporary_settings({PREFECT_API_URL: url, PREFECT_HOME: home}):
            yield url
            from prefect.logging.handlers import APILogHandler

            for logger in [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]:
                for handler in logger.handlers:
                    if isinstance(handler, APILogHandler):
                        handler.flush()  # before the server goes, not after
    finally:
        stop(server)
        log.close()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    # Autoscale evaluates in seconds here (the service allows 5 minutes at least), on samples every 0.5 s.
    with Emulator(port=free_port(), data_dir=tmp_path_factory.mktemp("batch"), boot_seconds=0.05,
                  autoscale_min_interval=1, autoscale_sample_seconds=0.5) as emu:  # fmt: skip
        yield emu


@pytest.fixture(scope="session")
def stack_env(prefect_api: str, azurite: Azurite, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """TOPN_* settings that point the flow at this session's local stack."""
    env = {
        "TOPN_LOCAL_BLOB_PORT": str(azurite.port),
        "TOPN_LOCAL_BATCH_PORT": emulator.endpoint.rsplit(":", 1)[1],
        "TOPN_LOCAL_DIR": str(tmp_path_factory.mktemp("topn")),
        "TOPN_DEDICATED_NODES": "2",
        "TOPN_TASK_SLOTS_PER_NODE": "4",
    }
    os.environ.update(env)
    return env


@pytest.fixture
def settings_env(stack_env: dict, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Per-test changes to TOPN_* settings, undone afterwards."""
    return monkeypatch
