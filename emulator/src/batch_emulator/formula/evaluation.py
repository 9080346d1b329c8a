"""Evaluating a formula against a pool's state, as the service's periodic runs and evaluateautoscale do."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from batch_emulator.formula import functions
from batch_emulator.formula.syntax import (
    DEALLOCATION,
    EVALUATION_ERROR,
    INTERVALS,
    MAX_NODES,
    SAMPLED,
    SETTABLE,
    FormulaError,
    check,
)
from batch_emulator.formula.values import PoolState, Run, Stop, formatted, kind_of


def evaluate(formula: str, state: PoolState) -> Run:
    """Runs a formula against a pool's state. Never raises for the formula's faults: they are the run's error."""
    ev = _Evaluator(formula, state)
    error = None
    try:
        ev.run(check(formula))
    except FormulaError as e:
        error = e
    except Stop:
        pass
    dedicated, low = ev.service["TargetDedicatedNodes"], ev.service["TargetLowPriorityNodes"]
    return Run(
        state.now,
        ev.results(),
        error,
        _count(dedicated) if error is None else state.target_dedicated,
        _count(low) if error is None else state.target_low_priority,
        str(ev.service["NodeDeallocationOption"]),
    )


def _count(value: float) -> int:
    return max(0, min(MAX_NODES, int(value)))


class _Evaluator:
    def __init__(self, src: str, state: PoolState) -> None:
        self.src, self.state = src, state
        self.service: dict[str, object] = {
            "TargetDedicatedNodes": float(state.target_dedicated),
            "TargetLowPriorityNodes": float(state.target_low_priority),
            "NodeDeallocationOption": "requeue",
        }
        self.user: dict[str, object] = {}

    def fail(self, message: str, pos: int | None) -> FormulaError:
        return FormulaError(EVALUATION_ERROR, message, pos, self.src)

    def run(self, statements: list[tuple]) -> None:
        for target, node, pos in statements:
            value = self.eval(node)
            if target[1:] in SETTABLE and target.startswith("$"):
                name = target[1:]
                if name == "NodeDeallocationOption":
                    if not isinstance(value, str) or value.lower() not in DEALLOCATION:
                        raise self.fail(f"$NodeDeallocationOption must be one of {', '.join(DEALLOCATION)}", pos)
                    value = value.lower()
                elif not isinstance(value, float) or math.isnan(value):
                    raise self.fail(f"{target} must be a number, not {kind_of(value)}", pos)
                self.service[name] = value
            else:
                self.user[target] = value

    def results(self) -> str:
        parts = [f"${k}={formatted(v)}" for k, v in self.service.items()]
        parts += [f"{k}={formatted(self.user[k])}" for k in sorted(self.user, key=str.lower)]
        return ";".join(parts)

    # -- expressions

    def eval(self, node: tuple) -> object:
        kind = node[0]
        if kind in ("num", "str"):
            return node[1]
        if kind == "var":
            return self.variable(node[1], node[2])
        if kind == "name":
            name, pos = node[1], node[2]
            if name in self.user:
                return self.user[name]
            if name.lower() in DEALLOCATION:
                return name.lower()
            if name in INTERVALS:
                return INTERVALS[name]
            raise self.fail(f"{name} is not defined", pos)
        if kind == "?":
            return self.eval(node[2]) if self.truth(self.eval(node[1]), node[4]) else self.eval(node[3])
        if kind == "un":
            value = self.eval(node[2])
            if node[1] == "!":
                return 0.0 if self.truth(value, node[3]) else 1.0
            if node[1] == "+":
                return value
            return self.arith("*", -1.0, value, node[3])
        if kind == "bin":
            op, pos = node[1], node[4]
            if op in ("&&", "||"):
                left = self.truth(self.eval(node[2]), pos)
                if (op == "&&" and not left) or (op == "||" and left):
                    return 1.0 if left else 0.0
                return 1.0 if self.truth(self.eval(node[3]), pos) else 0.0
            return self.arith(op, self.eval(node[2]), self.eval(node[3]), pos)
        if kind == "call":
            return functions.call(node[1], [self.eval(a) for a in node[2]], node[3], self.state, self.fail)
        if kind == "method":
            args = [self.eval(a) for a in node[3]]
            return functions.sample(node[1], node[2], args, node[4], self.state, self.fail)
        if kind == "member":
            value = self.eval(node[1])
            if not isinstance(value, datetime):
                raise self.fail(f".{node[2]} needs a timestamp, not {kind_of(value)}", node[3])
            if node[2] == "weekday":
                return float((value.weekday() + 1) % 7)  # Sunday is 0, as .NET's DayOfWeek
            return float(getattr(value, node[2]))
        raise AssertionError(kind)

    def variable(self, name: str, pos: int) -> object:
        bare = name[1:]
        if bare in self.service:
            return self.service[bare]
        if name in self.user:
            return self.user[name]
        s = self.state
        fixed = {
            "CurrentDedicatedNodes": s.current_dedicated,
            "CurrentLowPriorityNodes": s.current_low_priority,
            "TaskSlotsPerNode": s.task_slots_per_node,
        }
        if bare in fixed:
            return float(fixed[bare])
        if bare in SAMPLED:  # used as a value: its current value (the emulator's leniency)
            return float(s.live.get(bare, 0))
        raise self.fail(f"{name} is not defined", pos)

    def truth(self, value: object, pos: int) -> bool:
        if not isinstance(value, float):
            raise self.fail(f"A condition must be a number, not {kind_of(value)}", pos)
        return value != 0

    def arith(self, op: str, a: object, b: object, pos: int) -> object:
        try:
            if isinstance(a, list) or isinstance(b, list):
                if op not in "+-*/" or not all(isinstance(x, (float, list)) for x in (a, b)):
                    raise TypeError
                xs = a if isinstance(a, list) else [a] * len(b)
                ys = b if isinstance(b, list) else [b] * len(a)
                if len(xs) != len(ys):
                    raise self.fail("Vectors of different lengths", pos)
                return [self.arith(op, x, y, pos) for x, y in zip(xs, ys, strict=True)]
            if op in ("<", "<=", ">", ">=", "==", "!="):
                if type(a) is not type(b) or (isinstance(a, str) and op not in ("==", "!=")):
                    raise TypeError
                result = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[op]
                return 1.0 if result else 0.0
            if isinstance(a, str) or isinstance(b, str):
                raise TypeError
            if op == "/" and b in (0, timedelta(0)):
                raise self.fail("Division by zero", pos)
            result = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}[op]()
        except TypeError:
            raise self.fail(f"{kind_of(a)} {op} {kind_of(b)} is not defined", pos) from None
        return float(result) if isinstance(result, (int, float)) else result
