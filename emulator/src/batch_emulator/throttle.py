"""Throttling, as the Batch service answers a client that sends too many requests: for a window of time, every
REST request (or those of some operations) gets 429 with a `Retry-After` header and the service's error body,
code `TooManyRequests`, message "Request failed as server encountered too many requests. Please try again."
(the body the service sent, quoted in github.com/nextflow-io/nextflow/issues/2688). Azure documents no Batch rate
limit and no header; `Retry-After` (whole seconds) is what the Azure SDKs' retry policy honours for a 429.

Set by `POST /_emulator/throttle` (admin.py) or `--throttle SECONDS[:RETRY_AFTER]` from the start; the
emulator's own /_emulator/* endpoints are never throttled. A throttled request still counts in
/_emulator/stats (under its operation), so a test can count a client's attempts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from batch_emulator.errors import BatchError, invalid

MESSAGE = "Request failed as server encountered too many requests. Please try again."


class Throttle:
    """The throttling window: until when, for which operations (None: all), and the Retry-After it sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0  # time.monotonic()
        self.retry_after = 1
        self.operations: frozenset[str] | None = None
        self.throttled = 0  # requests answered 429 since the window was set

    def start(self, seconds: float, retry_after: int = 1, operations: Iterable[str] | None = None) -> None:
        """Throttles for `seconds` from now (0: ends it)."""
        with self._lock:
            self._until = time.monotonic() + seconds if seconds > 0 else 0.0
            self.retry_after = retry_after
            self.operations = None if operations is None else frozenset(operations)
            self.throttled = 0

    def check(self, operation: str) -> None:
        """Raises the 429 BatchError (with its Retry-After header) if `operation` is throttled now."""
        with self._lock:
            if time.monotonic() >= self._until:
                return
            if self.operations is not None and operation not in self.operations:
                return
            self.throttled += 1
            retry_after = self.retry_after
        error = BatchError(429, "TooManyRequests", MESSAGE)
        error.headers = {"Retry-After": str(retry_after)}
        raise error

    def update(self, body: dict, known: Iterable[str]) -> dict:
        """POST /_emulator/throttle: `seconds` (required; 0 ends it), `retryAfter` (whole seconds, default 1),
        `operations` (names of urls.py's operations, e.g. create_job; absent: all). Answers the window now."""
        seconds, retry_after, operations = body.get("seconds"), body.get("retryAfter", 1), body.get("operations")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise invalid("seconds", seconds, "It must be a number of seconds, 0 or more (0 ends the throttling).")
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise invalid("retryAfter", retry_after, "It must be a whole number of seconds, 0 or more.")
        if operations is not None:
            names = set(known)
            if not isinstance(operations, list) or not all(isinstance(o, str) for o in operations):
                raise invalid("operations", operations, "It must be a list of operation names.")
            if unknown := sorted(set(operations) - names):
                raise invalid("operations", unknown[0], "It is not an operation name of the emulator (urls.py).")
        self.start(float(seconds), retry_after, operations)
        return self.view()

    def view(self) -> dict:
        """The window: seconds left (0: none), Retry-After, operations (null: all), requests throttled so far."""
        with self._lock:
            left = max(0.0, self._until - time.monotonic())
            operations = None if self.operations is None else sorted(self.operations)
            return {
                "secondsLeft": round(left, 3),
                "retryAfter": self.retry_after,
                "operations": operations,
                "throttled": self.throttled,
            }


def parse(text: str) -> tuple[float, int]:
    """`--throttle SECONDS[:RETRY_AFTER]`: "30" (Retry-After 1) or "30:5"."""
    seconds, _, retry_after = text.partition(":")
    value, after = float(seconds), int(retry_after) if retry_after else 1
    if value < 0 or after < 0:
        raise ValueError("seconds and Retry-After must be 0 or more")
    return value, after
