"""Value formats on the Batch wire: dates, durations, ETags (docs/batch-wire.md 2.3-2.4)."""

from __future__ import annotations

import itertools
import os
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

# What the service reports for "no limit" (TimeSpan.MaxValue); both SDKs parse it.
INFINITE = timedelta.max
INFINITE_WIRE = "P10675199DT2H48M5.4775807S"

_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(t: datetime) -> str:
    """Body timestamps: UTC with 7 fractional digits, as the service writes them."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def rfc1123(t: datetime) -> str:
    """Header timestamps (Last-Modified, ocp-creation-time)."""
    return format_datetime(t.astimezone(UTC), usegmt=True)


def parse_duration(text: str) -> timedelta:
    """ISO 8601 durations as both SDKs write them (PT05M00S, PT5M, P1D, PT00.5S); ValueError otherwise."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if not m or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    if text == INFINITE_WIRE:
        return INFINITE
    parts = {k: float(v) for k, v in m.groupdict().items() if v}
    try:
        return timedelta(**parts)
    except OverflowError:
        return INFINITE


_ETAGS = itertools.count(int.from_bytes(os.urandom(5)) << 16)


def new_etag() -> str:
    """Unquoted hex, like the service's 0x8D4125FD1A825A4; a counter, as a random one per change is costly."""
    return f"0x8D{next(_ETAGS):013X}"
