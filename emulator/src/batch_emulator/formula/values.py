"""What a formula reads and answers: the pool's state and metric samples, a run's AutoScaleRun, and values as
the service names and prints them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from batch_emulator.formula.syntax import DEFAULT_SAMPLE_SECONDS, FormulaError


class Stop(Exception):
    """stop(): the evaluation ends here, what was assigned so far stands."""


@dataclass
class History:
    """A pool's metric samples, oldest first: what GetSample reads."""

    period: timedelta = timedelta(seconds=DEFAULT_SAMPLE_SECONDS)
    samples: deque = field(default_factory=lambda: deque(maxlen=25_000))  # (datetime, {metric: value})

    def add(self, when: datetime, values: dict[str, float]) -> None:
        self.samples.append((when, dict(values)))


@dataclass
class PoolState:
    """What a formula reads about its pool at one moment."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    current_dedicated: int = 0
    current_low_priority: int = 0
    target_dedicated: int = 0
    target_low_priority: int = 0
    task_slots_per_node: int = 1
    live: dict[str, float] = field(default_factory=dict)  # current value of each SAMPLED metric
    history: History = field(default_factory=History)


@dataclass
class Run:
    """One evaluation: the AutoScaleRun and, if it succeeded, the targets to apply."""

    timestamp: datetime
    results: str
    error: FormulaError | None
    target_dedicated: int
    target_low_priority: int
    deallocation: str

    def to_wire(self) -> dict:
        out: dict = {"timestamp": stamp(self.timestamp), "results": self.results}
        if self.error:
            out["error"] = self.error.to_wire()
        return out


def metrics(active: int, running: int, succeeded: int, failed: int, usable_nodes: int) -> dict[str, float]:
    """The SAMPLED metrics from a pool's task and node counts."""
    return {
        "ActiveTasks": active,
        "RunningTasks": running,
        "PendingTasks": active + running,
        "SucceededTasks": succeeded,
        "FailedTasks": failed,
        "UsableNodeCount": usable_nodes,
        "PreemptedNodeCount": 0,
    }


@dataclass
class Schedule:
    """An autoscale pool's samples and when (time.monotonic()) it is next sampled and evaluated."""

    history: History
    interval: float = 900.0  # seconds between evaluations
    next_sample: float = 0.0
    next_eval: float = 0.0


def kind_of(value: object) -> str:
    return {float: "a number", list: "a vector", str: "a string", timedelta: "a time interval"}.get(
        type(value), "a timestamp"
    )


def stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def formatted(value: object) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.15g}"
    if isinstance(value, list):
        return "[" + ",".join(formatted(v) for v in value) + "]"
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        days, rest = divmod(abs(seconds), 86400)
        clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
        return ("-" if seconds < 0 else "") + (f"{days}." if days else "") + clock
    if isinstance(value, datetime):
        return stamp(value)
    return str(value)
