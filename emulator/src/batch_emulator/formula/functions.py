"""The formula language's functions (`avg`, `max`, `time`, ...) and the methods of its sampled variables
(`$PendingTasks.GetSample(...)`, ...). Each takes the evaluated arguments, the pool's state and `fail`,
which makes the evaluation error that names the call's position."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from batch_emulator.formula.syntax import SAMPLED, FormulaError
from batch_emulator.formula.values import PoolState, Stop, kind_of

Fail = Callable[[str, int | None], FormulaError]

_UNARY = {
    "ceil": math.ceil,
    "floor": math.floor,
    "round": round,
    "abs": abs,
    "lg": math.log2,
    "ln": math.log,
    "log": math.log10,
}


def call(name: str, args: list, pos: int, state: PoolState, fail: Fail) -> object:
    """The value of the function `name` (the parser let only known names through)."""
    if name in _UNARY:
        return _elementwise(name, _UNARY[name], args, pos, fail)
    if name in ("len", "count"):
        return float(len(_numbers(name, args, pos, fail)))
    if name == "sum":
        return float(sum(_numbers(name, args, pos, fail)))
    if name == "rand":
        return random.random()
    if name == "stop":
        raise Stop
    if name == "time":
        return _time(args, pos, state, fail)
    if name in ("percentile", "val"):
        return _pick(name, args, pos, fail)
    return _aggregate(name, _numbers(name, args, pos, fail), pos, fail)


def _numbers(name: str, args: list, pos: int, fail: Fail) -> list[float]:
    """The arguments as one list of numbers, vectors flattened."""
    flat: list[float] = []
    for a in args:
        if isinstance(a, list):
            flat.extend(a)
        elif isinstance(a, float):
            flat.append(a)
        else:
            raise fail(f"{name}() takes numbers and vectors, not {kind_of(a)}", pos)
    return flat


def _elementwise(name: str, fn: Callable[[float], float], args: list, pos: int, fail: Fail) -> object:
    if len(args) != 1 or not isinstance(args[0], (float, list)):
        raise fail(f"{name}() takes one number or vector", pos)
    try:
        return [float(fn(x)) for x in args[0]] if isinstance(args[0], list) else float(fn(args[0]))
    except (ValueError, OverflowError):
        raise fail(f"{name}() of a value out of its domain", pos) from None


def _time(args: list, pos: int, state: PoolState, fail: Fail) -> datetime:
    """time(): now; time("2025-01-01T00:00:00Z"): that moment (UTC unless it says otherwise)."""
    if not args:
        return state.now
    if len(args) != 1 or not isinstance(args[0], str):
        raise fail("time() takes a date-time string", pos)
    try:
        parsed = datetime.fromisoformat(args[0].replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"time() cannot read {args[0]!r}", pos) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _pick(name: str, args: list, pos: int, fail: Fail) -> float:
    """val(vector, index) and percentile(vector, percent)."""
    if len(args) != 2 or not isinstance(args[0], list) or not isinstance(args[1], float):
        raise fail(f"{name}() takes a vector and a number", pos)
    v, x = args
    if name == "val":
        if not 0 <= x < len(v):
            raise fail(f"val(): index {x:g} is outside the vector", pos)
        return v[int(x)]
    if not v or not 0 <= x <= 100:
        raise fail("percentile() needs values and a percentile from 0 to 100", pos)
    ordered = sorted(v)
    return ordered[min(len(v) - 1, max(0, math.ceil(x / 100 * len(v)) - 1))]


def _aggregate(name: str, values: list[float], pos: int, fail: Fail) -> float:
    """avg, max, min, range, norm, std of numbers and vectors."""
    if not values:
        raise fail(f"{name}() of no values", pos)
    if name == "avg":
        return sum(values) / len(values)
    if name == "max":
        return max(values)
    if name == "min":
        return min(values)
    if name == "range":
        return max(values) - min(values)
    if name == "norm":
        return math.sqrt(sum(x * x for x in values))
    if name == "std":
        mean = sum(values) / len(values)
        return math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))
    raise AssertionError(name)


def sample(target: tuple, name: str, args: list, pos: int, state: PoolState, fail: Fail) -> object:
    """A sampled variable's method: Count, GetSamplePeriod, HistoryBeginTime, GetSample, GetSamplePercent."""
    if target[0] != "var" or target[1][1:] not in SAMPLED:
        raise fail(f"{name}() applies to a sampled variable such as $PendingTasks", pos)
    variable, history = target[1], state.history
    samples = list(history.samples)
    if name == "Count":
        return float(len(samples))
    if name == "GetSamplePeriod":
        return history.period
    if name == "HistoryBeginTime":
        if not samples:
            raise fail(f"{variable} has no samples yet", pos)
        return samples[0][0]
    if name == "GetSample" and len(args) == 1 and isinstance(args[0], float):
        count = int(args[0])
        chosen = samples[-count:] if count > 0 else []
    else:
        chosen, have = _in_period(variable, name, args, pos, state, samples, fail)
        if name == "GetSamplePercent":
            return have
    if not chosen:
        raise fail(f"{variable} has no samples for the period requested", pos)
    return [float(v.get(variable[1:], 0)) for _, v in chosen]


def _in_period(
    variable: str, name: str, args: list, pos: int, state: PoolState, samples: list, fail: Fail
) -> tuple[list, float]:
    """The samples of the period the arguments give (one interval back from now, or a start and an end), and
    the percentage of the period's samples they are; fewer than a percentage asked for fail."""
    intervals = [a for a in args if isinstance(a, timedelta)]
    if len(intervals) not in (1, 2) or args[: len(intervals)] != intervals:
        raise fail(f"{name}() takes a time interval, or a start and an end interval", pos)
    rest = args[len(intervals) :]
    if name == "GetSamplePercent" and rest:
        raise fail("GetSamplePercent() takes one or two time intervals", pos)
    if len(rest) > 1 or (rest and not isinstance(rest[0], float)):
        raise fail("GetSample() takes a sample percentage as its last argument", pos)
    percent = rest[0] if rest else None
    now = state.now
    start, end = now - intervals[0], now - (intervals[1] if len(intervals) == 2 else timedelta(0))
    chosen = [(t, v) for t, v in samples if start <= t <= end]
    expected = max(1.0, (end - start) / state.history.period)
    have = min(100.0, 100.0 * len(chosen) / expected)
    if percent is not None and have < percent:
        raise fail(f"{variable} has {have:.0f}% of the samples of the period, not {percent:g}%", pos)
    return chosen, have
