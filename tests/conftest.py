from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import SESSION_MARKER, Azurite, running_started, start_azurite, stop, stop_all_started

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A real Azurite blob service, in memory, for the whole session."""
    stack = start_azurite()
    try:
        yield stack
    finally:
        stop(stack.process)


def _session_processes(roots: list[Path]) -> dict[int, str]:
    """Live processes this test session started: they carry its marker, or run in its temporary folders."""
    marker = f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # already dead, waiting to be reaped
            cwd = Path(os.readlink(entry / "cwd"))
            ours = marker in (entry / "environ").read_bytes().split(b"\0")
            if ours or any(cwd.is_relative_to(r) for r in roots):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to look at
    return found


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    """Processes a test started are killed when it ends, passed or failed (session services stay)."""
    before = running_started()
    yield
    for process in running_started() - before:
        stop(process, signal.SIGKILL)


_temp_roots: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _session_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    _temp_roots.append(tmp_path_factory.getbasetemp())


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture's teardown: no process the suite started may still be alive."""
    stop_all_started()
    roots = list(_temp_roots)
    deadline = time.monotonic() + 30  # killed processes take a moment to disappear on a busy machine
    while (left := _session_processes(roots)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not left:
        return
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    lines = "\n".join(f"  {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items()))
    session.config.get_terminal_writer().line(
        f"\nFAILED: processes left behind by the test session:\n{lines}", red=True
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
