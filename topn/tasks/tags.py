"""The service tags of topn's tasks, `azure-batch` and `azure-storage`, for Prefect's tag-based concurrency
limits: `prefect concurrency-limit create azure-batch 4` caps how many task runs call Batch at once.

A task run carries the tags of its services that have an active limit on the Prefect server, and no others.
Every tag costs a check at the server when a task run starts, and on a SQLite server (a local one, such as
`topn server start`'s) that check fails with "database is locked" whenever another write lands in the
middle of it; Prefect's client then waits 2 s before it asks again. That was 4 of the 20 task runs of a
10,000-file run (8 s of its 57 s), and a tag no limit reads buys nothing for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prefect import Task

SERVICE_TAGS = frozenset({"azure-batch", "azure-storage"})
LOOK_EVERY = 60.0  # seconds a lookup of the server's limits holds: a limit made meanwhile applies within this

LOOKUP_TIMEOUT = 10.0  # seconds for each request of a lookup

_lock = threading.Lock()
_seen: tuple[float, frozenset[str]] | None = None  # when the limits were looked up, and the tags limited
_looking = False  # a thread is looking them up


class ServiceTask(Task):
    """A Prefect task whose service tags (`azure-batch`, `azure-storage`) are those a concurrency limit reads;
    any other tag it was given, it keeps."""

    service_tags: frozenset[str]

    @property  # type: ignore[override]
    def tags(self) -> set[str]:
        return set(self.service_tags - SERVICE_TAGS) | (self.service_tags & limited())

    @tags.setter
    def tags(self, value: Iterable[str]) -> None:  # Task.__init__ sets the tags it was given
        self.service_tags = frozenset(value)

    def with_options(self, **options: Any) -> ServiceTask:
        """As Task.with_options (which makes a plain Task), but a ServiceTask, its tags still chosen when each
        of its runs is made."""
        options.setdefault("tags", self.service_tags)
        copy = super().with_options(**options)
        tags = copy.__dict__.pop("tags")  # set by Task.__init__ as a plain attribute
        copy.__class__ = type(self)
        copy.tags = tags
        return copy


def service_task(**options: Any) -> Callable[[Callable[..., Any]], ServiceTask]:
    """`@task(**options)` for a step that calls Azure: `options["tags"]` name the services it calls."""
    return lambda fn: ServiceTask(fn=fn, **options)


def limited() -> frozenset[str]:
    """The service tags with an active concurrency limit on the Prefect server, looked up at most every
    LOOK_EVERY seconds, by one thread while the others go on with what was seen last. All of them when the
    server cannot say: a limit is then honoured, at the check's cost."""
    global _seen, _looking
    with _lock:
        if _seen is not None and (_looking or time.monotonic() - _seen[0] < LOOK_EVERY):
            return _seen[1]
        _looking = True
    try:
        found = _look_up()
    finally:
        with _lock:
            _looking = False
    with _lock:
        _seen = (time.monotonic(), found)
    return found


def _look_up() -> frozenset[str]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    found = set()
    try:
        with get_client(sync_client=True, httpx_settings={"timeout": LOOKUP_TIMEOUT}) as client:
            for tag in SERVICE_TAGS:
                try:
                    if client.read_global_concurrency_limit_by_name(f"tag:{tag}").active:
                        found.add(tag)
                except ObjectNotFound:
                    pass
    except Exception:  # no answer (the run's own calls say why, if it matters): keep every tag
        return frozenset(SERVICE_TAGS)
    return frozenset(found)
