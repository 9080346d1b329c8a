"""Kept-alive HTTP(S) connections for the node agent's transfers, as a real node agent keeps them.

One TCP (and TLS) connection serves request after request to the same host. Opening one per blob, as
`urllib.request.urlopen` does, cost the emulator about 1 ms of CPU a transfer and the storage service
(Azurite) about as much again, on every one of a count task's 100 downloads. Where a proxy applies to a
URL (the environment's `https_proxy` and `no_proxy`), the transfer goes through urllib as before.

`request` fails like `urlopen`: a status other than 2xx raises `urllib.error.HTTPError` (its headers readable,
e.g. Retry-After), a failure to connect or send `urllib.error.URLError`, so callers tell transient failures
apart the same way for both. Redirects are not followed (Blob Storage sends none), but through a proxy,
where urllib follows them.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import select
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO
from urllib.parse import urlsplit

# Node's HTTP servers (Azurite's among them) close a connection idle for 5 s: one idle longer than this is
# closed here rather than raced against that (and one closed in the race is sent on again: `_send`).
IDLE_SECONDS = 4.0
MAX_IDLE = 32  # idle connections kept per host: a node's downloads and uploads at once, with room

_Key = tuple[str, str, int]


class _Pool:
    """Idle connections per (scheme, host, port), last used first; thread-safe. One idle for IDLE_SECONDS is
    closed when the pool is next used, whatever its host."""

    def __init__(self) -> None:
        self._idle: dict[_Key, list[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()

    def take(self, key: _Key, context: ssl.SSLContext, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to `key`, and whether it served a request before."""
        with self._lock:
            self._expire()
            idle = self._idle.get(key, [])
            while idle:
                _, connection = idle.pop()
                if not _dropped(connection):
                    connection.timeout = timeout
                    if connection.sock is not None:
                        connection.sock.settimeout(timeout)
                    return connection, True
                connection.close()
        return new_connection(key, context, timeout), False

    def give(self, key: _Key, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._expire()
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE:
                idle.append((time.monotonic(), connection))
                return
        connection.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for idle in self._idle.values():
            while idle and now - idle[0][0] >= IDLE_SECONDS:  # the oldest first
                idle.pop(0)[1].close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for _, connection in connections:
                connection.close()


def new_connection(key: _Key, context: ssl.SSLContext, timeout: float) -> http.client.HTTPConnection:
    scheme, host, port = key
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether the server closed (or wrote on) an idle connection: then it cannot take another request."""
    if connection.sock is None:
        return True
    poll = select.poll()  # not select.select: it fails for descriptors past 1024, which a busy emulator has
    poll.register(connection.sock, select.POLLIN)
    try:
        return bool(poll.poll(0))
    except OSError:
        return True


_pool = _Pool()


@contextlib.contextmanager
def request(
    method: str,
    url: str,
    context: ssl.SSLContext,
    timeout: float,
    body: IO[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[http.client.HTTPResponse]:
    """The response to one request, to read within the block; its connection is kept for the next request
    only if the block read it to its end."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or _proxied(parts.scheme, parts.hostname or ""):
        with _through_urllib(method, url, context, timeout, body, headers) as response:
            yield response
        return
    try:
        key = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except ValueError as e:  # a port that is no number, or out of range
        raise urllib.error.URLError(http.client.InvalidURL(str(e))) from e
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection, response = _send(key, context, timeout, method, target, body, headers or {})
    reusable = False
    try:
        if not 200 <= response.status < 300:  # a redirect too: Blob Storage sends none, so it is not followed
            data = response.read()
            reusable = not response.will_close
            raise urllib.error.HTTPError(url, response.status, response.reason, response.headers, io.BytesIO(data))
        yield response
        reusable = response.isclosed() and not response.length and not response.will_close
    finally:
        if reusable:
            _pool.give(key, connection)
        else:
            connection.close()


def _send(
    key: _Key,
    context: ssl.SSLContext,
    timeout: float,
    method: str,
    target: str,
    body: IO[bytes] | None,
    headers: dict[str, str],
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Sends the request and reads the answer's status and headers. A kept connection that turns out closed
    before answering (the server closed it as it was taken) is no failure of the transfer: the request goes
    again, once, on a new connection."""
    start = body.tell() if body is not None and body.seekable() else None
    connection, reused = _pool.take(key, context, timeout)
    while True:
        try:
            try:
                connection.request(method, target, body, headers)
            except OSError as e:  # connecting or sending, e.g. an untrusted certificate: wrapped as urlopen does
                raise urllib.error.URLError(e) from e
            return connection, connection.getresponse()
        except (urllib.error.URLError, ConnectionError, http.client.BadStatusLine) as e:
            connection.close()
            stale = isinstance(getattr(e, "reason", e), (ConnectionError, http.client.BadStatusLine))
            if not (reused and stale and (body is None or start is not None)):
                raise
            if body is not None and start is not None:
                body.seek(start)
            connection, reused = new_connection(key, context, timeout), False
        except BaseException:
            connection.close()
            raise


def _proxied(scheme: str, host: str) -> bool:
    return bool(urllib.request.getproxies().get(scheme)) and not urllib.request.proxy_bypass(host)


@contextlib.contextmanager
def _through_urllib(
    method: str,
    url: str,
    context: ssl.SSLContext,
    timeout: float,
    body: IO[bytes] | None,
    headers: dict[str, str] | None,
) -> Iterator[http.client.HTTPResponse]:
    sent = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(sent, timeout=timeout, context=context) as response:
        yield response


def close_idle() -> None:
    """Closes every idle connection (the emulator stopping)."""
    _pool.close()
