"""The OData `$filter` subset Batch clients use, and `$select` (docs/batch-wire.md 3.6)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from batch_emulator.errors import BatchError

Predicate = Callable[[dict], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<dt>datetime'[^']*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<punct>[(),])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_/]*))"
)
_OPS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}

# Properties each list operation may filter on (the service rejects others).
FILTERABLE = {
    "tasks": {
        "id",
        "state",
        "stateTransitionTime",
        "creationTime",
        "lastModified",
        "executionInfo/startTime",
        "executionInfo/endTime",
        "executionInfo/exitCode",
        "executionInfo/result",
        "executionInfo/retryCount",
    },
    "nodes": {
        "id",
        "state",
        "schedulingState",
        "isDedicated",
        "startTaskInfo/state",
        "startTaskInfo/result",
        "startTaskInfo/exitCode",
        "stateTransitionTime",
    },
    "pools": {"id", "state", "allocationState", "creationTime", "lastModified", "vmSize"},
    "jobs": {"id", "state", "creationTime", "lastModified", "priority", "executionInfo/poolId"},
    "files": {"name"},
    # account-level lists (learn.microsoft.com/rest/api/batchservice/odata-filters-in-batch)
    "supportedimages": {"osType", "verificationType", "nodeAgentSKUId"},
    "nodeagentskus": {"osType"},  # the 2016-2019 API
    "nodecounts": {"poolId"},
    "poolusagemetrics": {"poolId", "startTime", "endTime"},
    "jobschedules": {"id", "state", "stateTransitionTime", "creationTime", "lastModified"},
    "certificates": {"state", "stateTransitionTime"},
    "applications": set(),  # the service takes no $filter here
    "jobpreparationandreleasetaskstatus": {"nodeId"},
}


def bad_filter(text: str, reason: str) -> BatchError:
    return BatchError(
        400,
        "InvalidQueryParameterValue",
        f"The value for one of the query parameters is invalid: {reason}",
        QueryParameterName="$filter",
        QueryParameterValue=text,
        Reason=reason,
    )


def parse_filter(text: str, kind: str) -> Predicate:
    """Compiles a $filter for the list operation `kind` into a predicate over wire dicts."""
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise bad_filter(text, f"unexpected text at position {pos}")
        tokens.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    parser = _Parser(text, tokens, FILTERABLE[kind])
    predicate = parser.expr()
    if parser.i != len(tokens):
        raise bad_filter(text, f"unexpected {tokens[parser.i][1]!r}")
    return predicate


class _Parser:
    def __init__(self, text: str, tokens: list[tuple[str, str]], allowed: set[str]) -> None:
        self.text, self.tokens, self.allowed, self.i = text, tokens, allowed, 0

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise bad_filter(self.text, "the filter ends too early")
        kind, value = self.tokens[self.i]
        if expected is not None and value.lower() != expected:
            raise bad_filter(self.text, f"expected {expected!r}, found {value!r}")
        self.i += 1
        return kind, value

    def expr(self) -> Predicate:
        terms = [self.conjunction()]
        while (self.peek() or "").lower() == "or":
            self.take()
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else (lambda e: any(t(e) for t in terms))

    def conjunction(self) -> Predicate:
        terms = [self.unary()]
        while (self.peek() or "").lower() == "and":
            self.take()
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else (lambda e: all(t(e) for t in terms))

    def unary(self) -> Predicate:
        word = (self.peek() or "").lower()
        if word == "not":
            self.take()
            inner = self.unary()
            return lambda e: not inner(e)
        if word == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if word == "startswith":
            self.take()
            self.take("(")
            path = self.path()
            self.take(",")
            prefix = self.literal()
            self.take(")")
            return lambda e: isinstance(v := _lookup(e, path), str) and v.lower().startswith(str(prefix).lower())
        path = self.path()
        _, op = self.take()
        if op.lower() not in _OPS:
            raise bad_filter(self.text, f"unknown operator {op!r}")
        compare, value = _OPS[op.lower()], self.literal()
        missing_result = op.lower() == "ne"
        return lambda e: _compare(_lookup(e, path), value, compare, missing_result)

    def path(self) -> str:
        kind, value = self.take()
        if kind != "word" or value not in self.allowed:
            raise bad_filter(self.text, f"{value!r} cannot be filtered on here; use one of {sorted(self.allowed)}")
        return value

    def literal(self) -> object:
        kind, value = self.take()
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind == "dt":
            return _parse_time(value[9:-1], self.text)
        if kind == "word" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad_filter(self.text, f"expected a value, found {value!r}")


def _parse_time(text: str, source: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_filter(source, f"not a date-time: {text!r}") from None


def _lookup(entity: dict, path: str) -> object:
    value: object = entity
    for part in path.split("/"):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _compare(actual: object, expected: object, compare: Callable, missing_result: bool) -> bool:
    if actual is None:
        return missing_result
    if isinstance(expected, datetime) and isinstance(actual, str):
        actual = datetime.fromisoformat(actual.replace("Z", "+00:00")[:26] + "+00:00")
    elif isinstance(expected, str) and isinstance(actual, str):
        actual, expected = actual.lower(), expected.lower()  # ids and enums compare without case
    try:
        return compare(actual, expected)
    except TypeError:
        return False


def select(entity: dict, fields: str | None) -> dict:
    """Only the top-level properties named in a $select (the SDK models tolerate the rest missing)."""
    if not fields:
        return entity
    wanted = {f.strip() for f in fields.split(",") if f.strip()}
    return {k: v for k, v in entity.items() if k in wanted}
