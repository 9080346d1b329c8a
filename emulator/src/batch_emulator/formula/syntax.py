"""The autoscale formula language's syntax: its names and limits, tokens, the parser, and `check`, which
refuses what the service refuses (AutoScalingFormulaSyntaxError, AutoScalingFormulaTooLong)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

SYNTAX_ERROR = "AutoScalingFormulaSyntaxError"  # the service's code (BatchErrorCodeStrings)
TOO_LONG = "AutoScalingFormulaTooLong"  # the service's error-code table
EVALUATION_ERROR = "AutoScalingFormulaEvaluationError"  # the emulator's own name: the service's is not documented
MAX_LENGTH = 8192
MAX_STATEMENTS = 100
MAX_NODES = 100  # what the emulator's resize accepts
DEFAULT_SAMPLE_SECONDS = 30.0  # the service takes a sample every 30 seconds

DEALLOCATION = ("requeue", "terminate", "taskcompletion", "retaineddata")
SAMPLED = (
    "ActiveTasks",
    "RunningTasks",
    "PendingTasks",
    "SucceededTasks",
    "FailedTasks",
    "UsableNodeCount",
    "PreemptedNodeCount",
)
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
    "avg",
    "ceil",
    "floor",
    "round",
    "len",
    "lg",
    "ln",
    "log",
    "max",
    "min",
    "norm",
    "percentile",
    "rand",
    "range",
    "std",
    "stop",
    "sum",
    "time",
    "val",
    "abs",
    "count",
}


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
