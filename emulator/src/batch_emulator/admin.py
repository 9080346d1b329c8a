"""The emulator's own endpoints under /_emulator/: request counts, health, and the bad-day injections
(pre-empting spot nodes, quotas, capacity, unusable nodes, throttling) with which a test makes Azure's rare
events happen now. The behaviour of each is in its own module (preemption.py, quotas.py, capacity.py,
unusable.py, throttle.py); the handlers here only read the request and answer.

Routed as urls.py routes the REST operations: a table of (method, path pattern, handler, action). A route
with an action changes state, so only a request signed with the account's Shared Key may call it
(`SharedKeyAuth.check_admin`; the action names it in the 403); reading the counts and health stays open.
Handlers take (host, request, *path ids) and return a Response; a BatchError they raise is answered as
the service answers errors. Nothing here takes the service's lock: the service's methods do.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from typing import Protocol
from urllib.parse import unquote, urlsplit

from batch_emulator import preemption, unusable, urls
from batch_emulator.auth import SharedKeyAuth
from batch_emulator.errors import BatchError
from batch_emulator.injections import Injections
from batch_emulator.responses import Request, Response
from batch_emulator.service import BatchService

PREFIX = "/_emulator/"
ANY = "*"  # a route for every method (after those of the same path with one)
_ID = r"([^/]+)"


class Host(Protocol):
    """What admin handlers reach of the running emulator (server.Emulator is one)."""

    account: str
    auth: SharedKeyAuth
    counts: Counter[str]
    service: BatchService
    injections: Injections


def stats(host: Host, req: Request) -> Response:
    """The request counts per operation, and the scheduler's own CPU time: a client's API cost."""
    counts = host.counts
    scheduler = host.service.scheduler_stats()
    body = {"requests": dict(sorted(counts.items())), "total": sum(counts.values()), "scheduler": scheduler}
    return Response(200, {**body, "pid": os.getpid()})


def reset_stats(host: Host, req: Request) -> Response:
    host.counts.clear()
    return Response(204)


def health(host: Host, req: Request) -> Response:
    return Response(200, {"status": "ok", "account": host.account})


def preempt(host: Host, req: Request, pool_id: str) -> Response:
    """Spot nodes pre-empted now (preemption.py): the body may name `nodeIds`, or a count `nodes`."""
    return Response(200, preemption.preempt_pool(host.service, pool_id, req.json()))


def quotas(host: Host, req: Request) -> Response:
    """The account's quotas (quotas.py) and what it uses of them."""
    return Response(200, host.injections.quotas.view(host.service))


def set_quotas(host: Host, req: Request) -> Response:
    """Any of dedicatedCores, lowPriorityCores, activeJobs, pools (null or absent: unchanged); reset: true."""
    return Response(200, host.injections.quotas.update(host.service, req.json()))


def capacity(host: Host, req: Request, pool_id: str) -> Response:
    limits = host.injections.capacity.limits(pool_id)
    return Response(200, {"poolId": pool_id, "dedicated": limits[0], "lowPriority": limits[1]})


def set_capacity(host: Host, req: Request, pool_id: str) -> Response:
    """At most dedicated / lowPriority nodes for the pool (capacity.py); null: no end."""
    return Response(200, host.injections.capacity.update(host.service, pool_id, req.json()))


def set_unusable(host: Host, req: Request, pool_id: str) -> Response:
    """Nodes turned unusable (unusable.py): nodeIds, nodes or all; usable: true turns them back."""
    return Response(200, unusable.update(host.service, pool_id, req.json()))


def throttling(host: Host, req: Request) -> Response:
    return Response(200, host.injections.throttle.view())


def set_throttle(host: Host, req: Request) -> Response:
    """429 for `seconds` (throttle.py), for the operations named (urls.py's names) or all."""
    known = [name for *_, name in urls.ROUTES]
    return Response(200, host.injections.throttle.update(req.json(), known))


def use_post(host: Host, req: Request, *ids: str) -> Response:
    raise BatchError(405, "UnsupportedHttpVerb", "Use POST.")


ROUTES: list[tuple[str, str, Callable[..., Response], str | None]] = [
    ("GET", "/_emulator/stats", stats, None),
    ("POST", "/_emulator/stats/reset", reset_stats, "Resetting the request counts"),
    (ANY, "/_emulator/health", health, None),  # whatever the method: a HEAD probe gets its 200 too
    # bad-day injections
    ("POST", f"/_emulator/pools/{_ID}/preempt", preempt, "Pre-empting nodes"),
    (ANY, f"/_emulator/pools/{_ID}/preempt", use_post, None),
    ("GET", "/_emulator/quotas", quotas, None),
    ("POST", "/_emulator/quotas", set_quotas, "Setting the account's quotas"),
    ("GET", f"/_emulator/pools/{_ID}/capacity", capacity, None),
    ("POST", f"/_emulator/pools/{_ID}/capacity", set_capacity, "Setting a pool's capacity"),
    ("POST", f"/_emulator/pools/{_ID}/unusable", set_unusable, "Turning nodes unusable"),
    (ANY, f"/_emulator/pools/{_ID}/unusable", use_post, None),
    ("GET", "/_emulator/throttle", throttling, None),
    ("POST", "/_emulator/throttle", set_throttle, "Throttling requests"),
]

_COMPILED = [(method, re.compile(f"^{pattern}$"), handler, action) for method, pattern, handler, action in ROUTES]


def resolve(method: str, path: str) -> tuple[Callable[..., Response], str | None, list[str]] | None:
    """The handler, signed action and raw (still percent-encoded) path ids for an admin request, or None."""
    for route_method, pattern, handler, action in _COMPILED:
        if route_method in (method, ANY) and (m := pattern.match(path)):
            return handler, action, list(m.groups())
    return None


def handle(host: Host, req: Request, path: str) -> Response:
    """Answers a request for a path under PREFIX."""
    route = resolve(req.method, path)
    if route is None:
        return Response(404, {"code": "ResourceNotFound", "message": "unknown emulator endpoint"})
    handler, action, ids = route
    try:
        if action:
            host.auth.check_admin(req.method, path, urlsplit(req.raw_path).query, req.headers, action)
        return handler(host, req, *(unquote(i) for i in ids))
    except BatchError as e:
        return Response(e.status, e.body(req.origin))
