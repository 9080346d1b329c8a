"""Autoscale formulas as the Batch service reads them: parsing, evaluation and the pool's metric samples.

Plain Python, no HTTP and no locks: the service calls `check` (a create or enable request), `evaluate`
(evaluateautoscale and every periodic run) and `History.add` (every sampling tick).

The language (learn.microsoft.com/azure/batch/batch-automatic-scaling): statements separated by `;` (or a
line break after a complete statement), each `variable = expression`. Variables are service-defined
(`$TargetDedicatedNodes`, `$PendingTasks`, ...) or the user's own (`$myVar` or `myVar`). Expressions have
numbers, strings, `+ - * /`, `< <= > >= == !=`, `&& || !`, `?:`, parentheses, function calls, the
`TimeInterval_*` constants, sample methods (`$PendingTasks.GetSample(TimeInterval_Minute * 5)`) and
timestamp members (`time().hour`). Comments are `// ...` and `/* ... */`.

Values are doubles, vectors of doubles (Python lists), strings, time intervals (timedelta) and timestamps
(datetime). A true comparison is 1.0, a false one 0.0; any non-zero double is true.
"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

SYNTAX_ERROR = "AutoScalingFormulaSyntaxError"  # the service's code (BatchErrorCodeStrings)
TOO_LONG = "AutoScalingFormulaTooLong"  # the service's error-code table
EVALUATION_ERROR = "AutoScalingFormulaEvaluationError"  # the emulator's own name: the service's is not documented
MAX_LENGTH = 8192
MAX_STATEMENTS = 100
MAX_NODES = 100  # what the emulator's resize accepts
DEFAULT_SAMPLE_SECONDS = 30.0  # the service takes a sample every 30 seconds

DEALLOCATION = ("requeue", "terminate", "taskcompletion", "retaineddata")
SAMPLED = ("ActiveTasks", "RunningTasks", "PendingTasks", "SucceededTasks", "FailedTasks", "UsableNodeCount",
           "PreemptedNodeCount")  # fmt: skip
READ_ONLY = ("CurrentDedicatedNodes", "CurrentLowPriorityNodes", "TaskSlotsPerNode", *SAMPLED)
SETTABLE = ("TargetDedicatedNodes", "TargetLowPriorityNodes", "NodeDeallocationOption")
INTERVALS = {
    "TimeInterval_Zero": timedelta(0),
    "TimeInterval_100ns": timedelta(microseconds=0.1),
    "TimeInterval_Microsecond": timedelta(microseconds=1),
    "TimeInterval_Millisecond": timedelta(milliseconds=1),
    "TimeInterval_Second": timedelta(seconds=1),
    "TimeInterval_Minute": timedelta(minutes=1),
    "TimeInterval_Hour": timedelta(hours=1),
    "TimeInterval_Day": timedelta(days=1),
    "TimeInterval_Week": timedelta(weeks=1),
    "TimeInterval_Year": timedelta(days=365),
}
METHODS = ("GetSample", "GetSamplePercent", "GetSamplePeriod", "Count", "HistoryBeginTime")
MEMBERS = ("year", "month", "day", "weekday", "hour", "minute", "second")


class FormulaError(Exception):
    """A formula the service refuses (syntax) or cannot evaluate, with the 1-based position of the problem."""

    def __init__(self, code: str, message: str, position: int | None = None, source: str = "") -> None:
        self.code, self.position = code, position
        if position is not None:
            line = source.count("\n", 0, position - 1) + 1
            column = position - (source.rfind("\n", 0, position - 1) + 1)
            message = f"{message} (line {line}, column {column}, position {position})"
            self.line, self.column = line, column
        super().__init__(message)
        self.message = message

    def values(self) -> dict[str, str]:
        return {"Position": str(self.position), "Line": str(self.line)} if self.position is not None else {}

    def to_wire(self) -> dict:
        """An AutoScaleRunError."""
        out: dict = {"code": self.code, "message": self.message}
        if self.position is not None:
            out["values"] = [{"name": k, "value": v} for k, v in self.values().items()]
        return out


class _Stop(Exception):
    """stop(): the evaluation ends here, what was assigned so far stands."""


# ---- tokens and syntax ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"(?P<space>[ \t\r\n]+|//[^\n]*|/\*.*?\*/)"
    r"|(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r'|(?P<str>"[^"\n]*")'
    r"|(?P<var>\$[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>&&|\|\||<=|>=|==|!=|[-+*/<>=!?:;(),.])",
    re.S,
)


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int  # 1-based
    newline: bool  # a line break before it


def _tokens(src: str) -> list[_Tok]:
    out, i, newline = [], 0, False
    while i < len(src):
        m = _TOKEN.match(src, i)
        if not m:
            raise FormulaError(SYNTAX_ERROR, f"Unexpected character {src[i]!r}", i + 1, src)
        if m.lastgroup == "space":
            newline = newline or "\n" in m.group()
        else:
            out.append(_Tok(m.lastgroup, m.group(), i + 1, newline))
            newline = False
        i = m.end()
    out.append(_Tok("end", "", len(src) + 1, True))
    return out


_FUNCTIONS = {
    "avg", "ceil", "floor", "round", "len", "lg", "ln", "log", "max", "min", "norm", "percentile", "rand",
    "range", "std", "stop", "sum", "time", "val", "abs", "count",
}  # fmt: skip


class _Parser:
    def __init__(self, src: str) -> None:
        self.src, self.toks, self.i = src, _tokens(src), 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def error(self, message: str, tok: _Tok | None = None) -> FormulaError:
        tok = tok or self.tok
        return FormulaError(SYNTAX_ERROR, message, tok.pos, self.src)

    def take(self, text: str | None = None, kind: str | None = None) -> _Tok:
        tok = self.tok
        if (text is not None and tok.text != text) or (kind is not None and tok.kind != kind):
            found = f"{tok.text!r}" if tok.kind != "end" else "the end of the formula"
            raise self.error(f"Expected {text or kind!r} but found {found}")
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.tok.kind == "op" and self.tok.text == text:
            self.i += 1
            return True
        return False

    def program(self) -> list[tuple]:
        statements = []
        while self.tok.kind != "end":
            if self.accept(";"):
                continue
            target = self.tok
            if target.kind not in ("var", "name"):
                raise self.error(f"A statement must assign a variable; found {target.text!r}")
            self.i += 1
            if target.kind == "var" and target.text[1:] in READ_ONLY:
                raise self.error(f"{target.text} is read-only", target)
            if target.kind == "name" and (target.text in INTERVALS or target.text in _FUNCTIONS):
                raise self.error(f"{target.text} cannot be assigned", target)
            self.take("=")
            value = self.expr()
            if not (self.tok.kind == "end" or self.tok.newline or self.tok.text == ";"):
                raise self.error(f"Expected ';' but found {self.tok.text!r}")
            statements.append((target.text, value, target.pos))
            if len(statements) > MAX_STATEMENTS:
                raise self.error(f"A formula has at most {MAX_STATEMENTS} statements", target)
        return statements

    def expr(self) -> tuple:
        cond = self.binary(0)
        if self.tok.text == "?":
            tok = self.take("?")
            yes = self.expr()
            self.take(":")
            return ("?", cond, yes, self.expr(), tok.pos)
        return cond

    _LEVELS = (("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/"))

    def binary(self, level: int) -> tuple:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.tok.kind == "op" and self.tok.text in self._LEVELS[level]:
            tok = self.take()
            left = ("bin", tok.text, left, self.binary(level + 1), tok.pos)
        return left

    def unary(self) -> tuple:
        if self.tok.kind == "op" and self.tok.text in ("-", "+", "!"):
            tok = self.take()
            return ("un", tok.text, self.unary(), tok.pos)
        return self.postfix()

    def postfix(self) -> tuple:
        node = self.primary()
        while self.accept("."):
            name = self.take(kind="name")
            if self.tok.text == "(":
                if name.text not in METHODS:
                    raise self.error(f"Unknown method {name.text}", name)
                node = ("method", node, name.text, self.args(), name.pos)
            elif name.text in MEMBERS:
                node = ("member", node, name.text, name.pos)
            else:
                raise self.error(f"Unknown member {name.text}", name)
        return node

    def args(self) -> list[tuple]:
        self.take("(")
        args = []
        if not self.accept(")"):
            args.append(self.expr())
            while self.accept(","):
                args.append(self.expr())
            self.take(")")
        return args

    def primary(self) -> tuple:
        tok = self.tok
        if tok.kind == "num":
            self.i += 1
            return ("num", float(tok.text))
        if tok.kind == "str":
            self.i += 1
            return ("str", tok.text[1:-1])
        if tok.kind == "var":
            self.i += 1
            return ("var", tok.text, tok.pos)
        if tok.kind == "name":
            self.i += 1
            if self.tok.text == "(":
                if tok.text not in _FUNCTIONS:
                    raise self.error(f"Unknown function {tok.text}", tok)
                return ("call", tok.text, self.args(), tok.pos)
            return ("name", tok.text, tok.pos)
        if self.accept("("):
            inner = self.expr()
            self.take(")")
            return inner
        found = f"{tok.text!r}" if tok.kind != "end" else "the end of the formula"
        raise self.error(f"Expected a value but found {found}")


def check(formula: object) -> list[tuple]:
    """The parsed statements; a FormulaError if the service would refuse the formula."""
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError(SYNTAX_ERROR, "The autoscale formula is empty")
    if len(formula) > MAX_LENGTH:
        raise FormulaError(TOO_LONG, f"The autoscale formula is longer than {MAX_LENGTH} characters")
    return _Parser(formula).program()


# ---- samples and the pool's state ----------------------------------------------------------------


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
        out: dict = {"timestamp": _stamp(self.timestamp), "results": self.results}
        if self.error:
            out["error"] = self.error.to_wire()
        return out


def metrics(active: int, running: int, succeeded: int, failed: int, usable_nodes: int) -> dict[str, float]:
    """The SAMPLED metrics from a pool's task and node counts."""
    return {
        "ActiveTasks": active, "RunningTasks": running, "PendingTasks": active + running,
        "SucceededTasks": succeeded, "FailedTasks": failed, "UsableNodeCount": usable_nodes,
        "PreemptedNodeCount": 0,
    }  # fmt: skip


# ---- evaluation ----------------------------------------------------------------------------------


def evaluate(formula: str, state: PoolState) -> Run:
    """Runs a formula against a pool's state. Never raises for the formula's faults: they are the run's error."""
    ev = _Evaluator(formula, state)
    error = None
    try:
        ev.run(check(formula))
    except FormulaError as e:
        error = e
    except _Stop:
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
                    raise self.fail(f"{target} must be a number, not {_kind(value)}", pos)
                self.service[name] = value
            else:
                self.user[target] = value

    def results(self) -> str:
        parts = [f"${k}={_format(v)}" for k, v in self.service.items()]
        parts += [f"{k}={_format(self.user[k])}" for k in sorted(self.user, key=str.lower)]
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
            return self.call(node[1], [self.eval(a) for a in node[2]], node[3])
        if kind == "method":
            return self.method(node[1], node[2], [self.eval(a) for a in node[3]], node[4])
        if kind == "member":
            value = self.eval(node[1])
            if not isinstance(value, datetime):
                raise self.fail(f".{node[2]} needs a timestamp, not {_kind(value)}", node[3])
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
        fixed = {"CurrentDedicatedNodes": s.current_dedicated, "CurrentLowPriorityNodes": s.current_low_priority,
                 "TaskSlotsPerNode": s.task_slots_per_node}  # fmt: skip
        if bare in fixed:
            return float(fixed[bare])
        if bare in SAMPLED:  # used as a value: its current value (the emulator's leniency)
            return float(s.live.get(bare, 0))
        raise self.fail(f"{name} is not defined", pos)

    def truth(self, value: object, pos: int) -> bool:
        if not isinstance(value, float):
            raise self.fail(f"A condition must be a number, not {_kind(value)}", pos)
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
            raise self.fail(f"{_kind(a)} {op} {_kind(b)} is not defined", pos) from None
        return float(result) if isinstance(result, (int, float)) else result

    def call(self, name: str, args: list, pos: int) -> object:
        def numbers() -> list[float]:
            flat: list[float] = []
            for a in args:
                if isinstance(a, list):
                    flat.extend(a)
                elif isinstance(a, float):
                    flat.append(a)
                else:
                    raise self.fail(f"{name}() takes numbers and vectors, not {_kind(a)}", pos)
            return flat

        def elementwise(fn) -> object:
            if len(args) != 1 or not isinstance(args[0], (float, list)):
                raise self.fail(f"{name}() takes one number or vector", pos)
            try:
                return [float(fn(x)) for x in args[0]] if isinstance(args[0], list) else float(fn(args[0]))
            except (ValueError, OverflowError):
                raise self.fail(f"{name}() of a value out of its domain", pos) from None

        unary = {"ceil": math.ceil, "floor": math.floor, "round": round, "abs": abs, "lg": math.log2,
                 "ln": math.log, "log": math.log10}  # fmt: skip
        if name in unary:
            return elementwise(unary[name])
        if name in ("len", "count"):
            return float(len(numbers()))
        if name == "sum":
            return float(sum(numbers()))
        if name == "rand":
            return random.random()
        if name == "stop":
            raise _Stop
        if name == "time":
            if not args:
                return self.state.now
            if len(args) != 1 or not isinstance(args[0], str):
                raise self.fail("time() takes a date-time string", pos)
            try:
                parsed = datetime.fromisoformat(args[0].replace("Z", "+00:00"))
            except ValueError:
                raise self.fail(f"time() cannot read {args[0]!r}", pos) from None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if name in ("percentile", "val"):
            if len(args) != 2 or not isinstance(args[0], list) or not isinstance(args[1], float):
                raise self.fail(f"{name}() takes a vector and a number", pos)
            v, x = args
            if name == "val":
                if not 0 <= x < len(v):
                    raise self.fail(f"val(): index {x:g} is outside the vector", pos)
                return v[int(x)]
            if not v or not 0 <= x <= 100:
                raise self.fail("percentile() needs values and a percentile from 0 to 100", pos)
            ordered = sorted(v)
            return ordered[min(len(v) - 1, max(0, math.ceil(x / 100 * len(v)) - 1))]
        values = numbers()
        if not values:
            raise self.fail(f"{name}() of no values", pos)
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

    def method(self, target: tuple, name: str, args: list, pos: int) -> object:
        if target[0] != "var" or target[1][1:] not in SAMPLED:
            raise self.fail(f"{name}() applies to a sampled variable such as $PendingTasks", pos)
        metric, history = target[1][1:], self.state.history
        now = self.state.now
        samples = list(history.samples)
        if name == "Count":
            return float(len(samples))
        if name == "GetSamplePeriod":
            return history.period
        if name == "HistoryBeginTime":
            if not samples:
                raise self.fail(f"{target[1]} has no samples yet", pos)
            return samples[0][0]
        intervals = [a for a in args if isinstance(a, timedelta)]
        if name == "GetSample" and len(args) == 1 and isinstance(args[0], float):
            count = int(args[0])
            chosen = samples[-count:] if count > 0 else []
            percent = None
        else:
            if len(intervals) not in (1, 2) or args[: len(intervals)] != intervals:
                raise self.fail(f"{name}() takes a time interval, or a start and an end interval", pos)
            rest = args[len(intervals) :]
            if name == "GetSamplePercent" and rest:
                raise self.fail("GetSamplePercent() takes one or two time intervals", pos)
            if len(rest) > 1 or (rest and not isinstance(rest[0], float)):
                raise self.fail("GetSample() takes a sample percentage as its last argument", pos)
            percent = rest[0] if rest else None
            start, end = now - intervals[0], now - (intervals[1] if len(intervals) == 2 else timedelta(0))
            chosen = [(t, v) for t, v in samples if start <= t <= end]
            expected = max(1.0, (end - start) / history.period)
            have = min(100.0, 100.0 * len(chosen) / expected)
            if name == "GetSamplePercent":
                return have
            if percent is not None and have < percent:
                raise self.fail(f"{target[1]} has {have:.0f}% of the samples of the period, not {percent:g}%", pos)
        if not chosen:
            raise self.fail(f"{target[1]} has no samples for the period requested", pos)
        return [float(v.get(metric, 0)) for _, v in chosen]


def _kind(value: object) -> str:
    return {float: "a number", list: "a vector", str: "a string", timedelta: "a time interval"}.get(
        type(value), "a timestamp"
    )


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _format(value: object) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.15g}"
    if isinstance(value, list):
        return "[" + ",".join(_format(v) for v in value) + "]"
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        days, rest = divmod(abs(seconds), 86400)
        clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
        return ("-" if seconds < 0 else "") + (f"{days}." if days else "") + clock
    if isinstance(value, datetime):
        return _stamp(value)
    return str(value)


@dataclass
class Schedule:
    """An autoscale pool's samples and when (time.monotonic()) it is next sampled and evaluated."""

    history: History
    interval: float = 900.0  # seconds between evaluations
    next_sample: float = 0.0
    next_eval: float = 0.0
