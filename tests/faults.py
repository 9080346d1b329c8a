"""A fault-injecting HTTP reverse proxy: transient failures on the wire, in front of Azurite or the Batch emulator.

    with FaultProxy(upstream_port, rate=0.3, seed=7) as proxy:
        client = BlobServiceClient(f"http://127.0.0.1:{proxy.port}/devstoreaccount1", ...)

Requests are relayed byte for byte (request line, headers including Host, body), because the Azure
SDKs sign them with Shared Key and the services check the signature. Each request draws, from `seed`
and its number, whether it fails and how; the faults are those real networks and services produce:

- "503", "500", "429": answered by the proxy, the request never reaches upstream;
- "reset-request": the connection is reset once the request is read, it never reaches upstream;
- "reset-response": upstream processes the request, then the connection is reset before or in the
  middle of the response: the client sees a failure for a request that was applied (so a retried
  create-only PUT gets 409, a retried DELETE 404).

STORAGE_KINDS leaves out 429, which Azure Storage never sends and its SDK does not retry.

With `tls` (a certificate and its key) the proxy serves HTTPS and speaks HTTPS upstream, trusting that
certificate (the local stack's in Entra ID mode). `answer(method, path)` may return (status, code, message)
for a request the service itself would refuse (e.g. 403 for a principal without a role): the proxy answers
that, in the service's format, and the request never reaches upstream.

Stdlib only. Nothing is logged: request URLs carry SAS signatures in their query strings.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import socketserver
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO, Self

ALL_KINDS: tuple[str, ...] = ("503", "500", "429", "reset-request", "reset-response")
# Azure Storage throttles with 503 ServerBusy, never 429, and its SDK does not retry a 429 (a client error to it).
STORAGE_KINDS: tuple[str, ...] = tuple(kind for kind in ALL_KINDS if kind != "429")
_STATUS = {  # kind -> status, reason, error code (the codes Storage and Batch use for these)
    "503": (503, "Service Unavailable", "ServerBusy"),
    "500": (500, "Internal Server Error", "InternalError"),
    "429": (429, "Too Many Requests", "TooManyRequests"),
}
_MAX_LINE = 65536


class FaultProxy:
    """Relays HTTP/1.1 from 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, failing a `rate` share of requests.

    `spare(method, path)` (path without the query) exempts requests from faults, e.g. admin endpoints;
    spared requests do not draw from the fault sequence, so they do not shift it. `rate` may be changed
    while running (e.g. 0 for set-up). `retry_after` is the Retry-After header of 429/503 (None: none).
    """

    def __init__(
        self,
        upstream_port: int,
        rate: float,
        seed: int,
        kinds: tuple[str, ...] = ALL_KINDS,
        *,
        spare: Callable[[str, str], bool] | None = None,
        retry_after: int | None = 1,
        timeout: float = 60,
        tls: tuple[Path, Path] | None = None,
        answer: Callable[[str, str], tuple[int, str, str] | None] | None = None,
    ) -> None:
        if not 0 <= rate <= 1 or not kinds or not set(kinds) <= set(ALL_KINDS):
            raise ValueError(f"rate must be in [0, 1] and kinds a non-empty subset of {ALL_KINDS}")
        self.upstream_port = upstream_port
        self.rate = rate
        self.seed = seed
        self.kinds = tuple(kinds)
        self.spare = spare
        self.retry_after = retry_after
        self.timeout = timeout
        self.answer = answer
        self.server_tls: ssl.SSLContext | None = None
        self.upstream_tls: ssl.SSLContext | None = None
        if tls:
            self.server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.server_tls.load_cert_chain(*tls)
            self.upstream_tls = ssl.create_default_context(cafile=str(tls[0]))
        self.requests = 0  # requests received
        self.sas_signed = 0  # of which signed by a SAS in their query, not by an Authorization header
        self.forwarded = 0  # requests sent upstream (reset-response ones included)
        self.faults: Counter[str] = Counter()
        self.events: list[tuple[str, str, str | None]] = []  # (method, path without query, fault or None)
        self._draws = 0  # position in the fault sequence; reset_counts() keeps it, so faults do not repeat
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()  # open client and upstream connections, cut by close()
        self._server = _Server(self)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops accepting, then cuts every open connection so that no handler thread stays blocked."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)

    def reset_counts(self) -> None:
        """Zeroes the counters and events (not the fault sequence, which goes on)."""
        with self._lock:
            self.requests = self.forwarded = self.sas_signed = 0
            self.faults.clear()
            self.events.clear()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)

    def _decide(self, method: str, path: str) -> tuple[str | None, random.Random]:
        """The fault for this request (or None), and the random source for its details."""
        spared = self.spare is not None and self.spare(method, path)
        with self._lock:
            self.requests += 1
            draw = -1 if spared else self._draws
            if not spared:
                self._draws += 1
        # A string seed is hashed the same way in every process: the same seed gives the same faults.
        rng = random.Random(f"{self.seed}:{draw}")
        kind = None
        if not spared and rng.random() < self.rate:
            kind = rng.choice(self.kinds)
        with self._lock:
            self.events.append((method, path, kind))
            if kind:
                self.faults[kind] += 1
        return kind, rng

    def _status_response(
        self, kind: str, method: str, fields: dict[str, str], said: tuple[int, str, str] | None = None
    ) -> bytes:
        """An error as the service would send it: XML for Storage, JSON (OData) for Batch."""
        status, reason, code = _STATUS[kind] if said is None else (said[0], "Refused", said[1])
        message = f"Injected fault: {reason}." if said is None else said[2]
        if "json" in fields.get("accept", "").lower():
            body = json.dumps({"code": code, "message": {"lang": "en-US", "value": message}}).encode()
            content_type = "application/json;odata=minimalmetadata"
        else:
            xml = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            body, content_type = f'<?xml version="1.0" encoding="utf-8"?>{xml}'.encode(), "application/xml"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"Date: {formatdate(usegmt=True)}",
            f"x-ms-error-code: {code}",
        ]
        if status in (429, 503) and self.retry_after is not None:
            lines.append(f"Retry-After: {self.retry_after}")
        if request_id := fields.get("x-ms-client-request-id"):
            lines.append(f"x-ms-client-request-id: {request_id}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if method == "HEAD" else head + body  # a HEAD response has no body, whatever its length

    def _forward(self, request: bytes, method: str) -> tuple[bytes, int, bool]:
        """Sends a request on a new upstream connection: (raw response, length of its head, keep-alive)."""
        with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=self.timeout) as plain:
            upstream = self.upstream_tls.wrap_socket(plain, server_hostname="127.0.0.1") if self.upstream_tls else plain
            self._track(upstream, True)
            try:
                upstream.sendall(request)
                with self._lock:
                    self.forwarded += 1
                with upstream.makefile("rb") as rfile:
                    while True:
                        head = _read_head(rfile)
                        if head is None:
                            raise ConnectionError("upstream closed the connection without a response")
                        status = int(head[0][9:12])  # "HTTP/1.1 200 OK"
                        if not 100 <= status < 200:
                            break  # interim responses (100 Continue) are dropped: the proxy sent its own
                    fields = _fields(head)
                    bodiless = method == "HEAD" or status in (204, 304)
                    body = b"" if bodiless else _read_body(rfile, fields, until_close=True)
            finally:
                self._track(upstream, False)
        # A body that ended with the connection can only end the same way for the client.
        framed = bodiless or "chunked" in fields.get("transfer-encoding", "").lower() or "content-length" in fields
        keep = framed and "close" not in fields.get("connection", "").lower()
        raw_head = b"".join(head)
        return raw_head + body, len(raw_head), keep


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # handler threads never keep the process alive
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64  # the SDKs open several connections at once

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def setup(self) -> None:
        if self.server.proxy.server_tls:
            self.request = self.server.proxy.server_tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def handle(self) -> None:
        proxy = self.server.proxy
        proxy._track(self.connection, True)
        try:
            while self._exchange(proxy):
                pass
        except (OSError, ValueError):
            # A client or upstream that went away, or a message that is not HTTP: drop the connection, quietly
            # (broken connections are the point here). Other errors are bugs: socketserver prints them, and no
            # message here holds a query string.
            pass
        finally:
            proxy._track(self.connection, False)

    def _exchange(self, proxy: FaultProxy) -> bool:
        """Relays one request and its response; True to keep the client connection for the next one."""
        head = _read_head(self.rfile)
        if head is None:
            return False
        method, target, version = head[0].decode("latin-1").split()
        fields = _fields(head)
        if fields.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for it before sending the body
        request = b"".join(head) + _read_body(self.rfile, fields)
        keep = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
        said = proxy.answer(method, target.split("?", 1)[0]) if proxy.answer else None
        if said:
            self.wfile.write(proxy._status_response("500", method, fields, said))
            return keep
        kind, rng = proxy._decide(method, target.split("?", 1)[0])
        if "sig=" in target and "authorization" not in fields:
            with proxy._lock:
                proxy.sas_signed += 1
        if kind == "reset-request":
            self._reset()
            return False
        if kind in _STATUS:
            self.wfile.write(proxy._status_response(kind, method, fields))
            return keep
        try:
            response, head_length, upstream_keep = proxy._forward(request, method)
        except OSError:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        if kind == "reset-response":
            # Before any byte, in the status line or headers, or (if there is a body) in the middle of it:
            # always short of the whole response, which the client must not be able to take as complete.
            cuts = [0, head_length // 2]
            if len(response) > head_length:
                cuts.append((head_length + len(response)) // 2)
            self.wfile.write(response[: rng.choice(cuts)])
            self._reset()
            return False
        self.wfile.write(response)
        return keep and upstream_keep

    def _reset(self) -> None:
        """Closes with a TCP reset (SO_LINGER 0), as a crashed peer or a middlebox does, rather than a FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # the socket's file must go too, or close() would be deferred
        self.connection.close()  # now, before socketserver's shutdown(SHUT_WR) could send a FIN


def _readline(rfile: BinaryIO) -> bytes:
    line = rfile.readline(_MAX_LINE)
    if not line.endswith(b"\n"):
        raise ConnectionError("connection closed, or line too long, in the middle of a message")
    return line


def _read_head(rfile: BinaryIO) -> list[bytes] | None:
    """The start line and header lines, raw, up to and including the empty line; None at a clean end."""
    first = rfile.readline(_MAX_LINE)
    if not first:
        return None
    lines = [first]
    while lines[-1] not in (b"\r\n", b"\n"):
        lines.append(_readline(rfile))
    return lines


def _fields(head: list[bytes]) -> dict[str, str]:
    """Header names (lower case) and values, only to find a message's framing: the raw lines are relayed."""
    fields = {}
    for line in head[1:-1]:
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def _read_exact(rfile: BinaryIO, size: int) -> bytes:
    data = rfile.read(size)
    if len(data) != size:
        raise ConnectionError("connection closed in the middle of a body")
    return data


def _read_body(rfile: BinaryIO, fields: dict[str, str], until_close: bool = False) -> bytes:
    """A message body, raw (chunk framing included); without framing, none, or (responses) all until close."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        parts = []
        while True:
            parts.append(_readline(rfile))
            size = int(parts[-1].split(b";", 1)[0], 16)
            if size == 0:
                break
            parts.append(_read_exact(rfile, size + 2))  # the data and its CRLF
        parts.append(_readline(rfile))
        while parts[-1] not in (b"\r\n", b"\n"):  # trailer fields, up to the final empty line
            parts.append(_readline(rfile))
        return b"".join(parts)
    if "content-length" in fields:
        return _read_exact(rfile, int(fields["content-length"]))
    return rfile.read() if until_close else b""
