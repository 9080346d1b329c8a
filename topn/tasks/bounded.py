"""A thread pool's map that keeps only a few calls in flight: over 100,000 files, `ThreadPoolExecutor.map`
would submit all of them at once and hold 100,000 futures (about a kilobyte each) until the last is done."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int = 0) -> Iterator[R]:
    """fn(item) for each item, `workers` at a time, in order, with at most `ahead` (4 x workers) submitted
    and not yet taken; the first exception stands (the calls in flight finish first)."""
    ahead = ahead or 4 * workers
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
