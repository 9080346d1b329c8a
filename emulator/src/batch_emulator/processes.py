"""Every process the emulator's nodes start, so that a shutdown kills them all however late they start.

A node's attempt can be anywhere between "scheduled" and "process running" when the emulator stops.
Starting a process and recording it happen under one lock that `close` also takes: after `close`,
nothing can start, and everything that did start is in the table and gets killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path


class ProcessTable:
    """Starts node processes in their own process groups and kills all of them on `close`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self.closed = False

    def spawn(self, argv: list[str], **popen: object) -> subprocess.Popen | None:
        """Starts `argv` as the leader of a new process group; None once the table is closed."""
        with self._lock:
            if self.closed:
                return None
            process = subprocess.Popen(argv, start_new_session=True, **popen)
            self._groups.add(process.pid)
            return process

    def release(self, process: subprocess.Popen) -> None:
        """Kills what the process left running in its group and forgets it (it has been waited for)."""
        with self._lock:
            kill_group(process.pid)
            self._groups.discard(process.pid)

    def close(self) -> None:
        """No process starts from now on; every one that started is killed with its group."""
        with self._lock:
            self.closed = True
            groups = list(self._groups)
        for pgid in groups:
            kill_group(pgid)

    def kill_all_now(self) -> None:
        """For a forced exit from a signal handler: takes no lock (the interrupted thread may hold it)."""
        self.closed = True
        for pgid in list(self._groups):
            kill_group(pgid)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_node_processes(data_dir: Path) -> int:
    """Kills, with their process groups, the processes running in node folders under `data_dir` (what an
    emulator that was killed left running: its nodes "reboot"). Returns how many it found."""
    nodes = (Path(data_dir) / "pools").resolve()
    found = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(entry / "cwd")).is_relative_to(nodes):
                kill_group(os.getpgid(int(entry.name)))
                found += 1
    return found
