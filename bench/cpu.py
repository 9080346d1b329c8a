"""Where a run's CPU goes: each service's CPU (its whole process tree, from /proc), sampled every second while
the run goes on, and how busy the machine was, so that any span of the run (a Prefect task run, say) can be
split into each service's core-seconds. Linux only, as the bench is.

    with CpuSampler({"Azurite": lambda: pid, ...}) as cpu:
        ...
    busy, by_service = cpu.between(start, end)   # time.time() values
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def _processes() -> dict[int, tuple[int, float]]:
    """Every process: its parent, and its CPU seconds with those of its children it has waited for."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / TICK)
    return found


def _tree_cpu(root: int, processes: dict[int, tuple[int, float]], others: set[int]) -> float:
    """The CPU of `root` and its descendants, but for those of `others` (services of their own, e.g. a
    Prefect server that `topn run` started: its child until the flow ends)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += processes.get(pid, (0, 0.0))[1]
        todo += [child for child in children.get(pid, []) if child not in others]
    return total


def _busy() -> float:
    """Core-seconds the machine spent on anything but idling and waiting for I/O, since it started."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


class CpuSampler:
    """Samples, every `every` s, the CPU of each service (name -> a function giving its root pid, or None
    while it has none) and the machine's busy time."""

    def __init__(self, services: dict[str, Callable[[], int | None]], every: float = 1.0) -> None:
        self.services, self.every = services, every
        self.times: list[float] = []
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._last: dict[str, tuple[int, float]] = {}  # a service's pid and its CPU when last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        processes, busy, now = _processes(), _busy(), time.time()
        roots = {name: pid_of() for name, pid_of in self.services.items()}
        cpu = {}
        for name, pid in roots.items():
            if pid is not None and pid in processes:
                others = {p for other, p in roots.items() if other != name and p is not None}
                self._last[name] = (pid, _tree_cpu(pid, processes, others))
            cpu[name] = self._last.get(name, (0, 0.0))[1]  # a process gone keeps its last reading
        self.times.append(now)
        self.samples.append((busy, cpu))

    def _at(self, when: float) -> tuple[float, dict[str, float]]:
        i = min(max(bisect.bisect_left(self.times, when), 1), len(self.times) - 1)
        (t0, (b0, c0)), (t1, (b1, c1)) = (self.times[i - 1], self.samples[i - 1]), (self.times[i], self.samples[i])
        share = min(max((when - t0) / (t1 - t0), 0.0), 1.0) if t1 > t0 else 1.0
        return b0 + (b1 - b0) * share, {k: c0[k] + (c1[k] - c0[k]) * share for k in c0}

    def between(self, start: float, end: float) -> tuple[float, dict[str, float]]:
        """The machine's busy core-seconds, and each service's CPU seconds, from `start` to `end`."""
        (b0, c0), (b1, c1) = self._at(start), self._at(end)
        return b1 - b0, {k: c1[k] - c0[k] for k in c0}
