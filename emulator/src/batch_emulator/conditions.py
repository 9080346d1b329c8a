"""Conditional requests as the service answers them: `If-Match`, `If-None-Match`, `If-Modified-Since` and
`If-Unmodified-Since` checked against an entity's ETag and Last-Modified, in RFC 7232's order.

A read (GET, HEAD) that the resource has not changed for answers 304 without a body; any other condition that
fails answers 412 `ConditionNotMet`. Dates compare at the second, as `Last-Modified` is written. A date that
cannot be read is ignored, as RFC 7232 says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from batch_emulator.errors import BatchError


@dataclass(frozen=True)
class Conditions:
    if_match: tuple[str, ...] | None = None
    if_none_match: tuple[str, ...] | None = None
    modified_since: datetime | None = None
    unmodified_since: datetime | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Conditions:
        lowered = {k.lower(): v for k, v in headers.items()}
        return cls(
            _etags(lowered.get("if-match")),
            _etags(lowered.get("if-none-match")),
            _date(lowered.get("if-modified-since")),
            _date(lowered.get("if-unmodified-since")),
        )

    def check(self, etag: str, modified: datetime, read: bool = False) -> None:
        """Raises the service's 412 (or, for a read, 304) if the entity does not meet the conditions."""
        stamp = modified.replace(microsecond=0)
        if self.if_match is not None:
            if not _matches(self.if_match, etag):
                raise not_met()
        elif self.unmodified_since is not None and stamp > self.unmodified_since:
            raise not_met()
        if self.if_none_match is not None:
            if _matches(self.if_none_match, etag):
                raise not_modified() if read else not_met()
        elif self.modified_since is not None and stamp <= self.modified_since:
            raise not_modified() if read else not_met()


ANY = Conditions()


def not_met() -> BatchError:
    return BatchError(412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met.")


def not_modified() -> BatchError:
    """304: the server answers it without a body."""
    return BatchError(304, "NotModified", "The resource has not been modified.")


def _etags(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip().removeprefix("W/").strip('"') for part in value.split(",") if part.strip())


def _matches(etags: tuple[str, ...], etag: str) -> bool:
    return "*" in etags or etag in etags


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
