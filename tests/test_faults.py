"""The fault-injecting proxy (tests/faults.py): exact relaying, each fault as a client sees it, and the Blob SDK
retrying through all of them against a real Azurite."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, LinearRetry

from tests.faults import ALL_KINDS, STORAGE_KINDS, FaultProxy
from tests.stack import AZURITE_ACCOUNT, AZURITE_KEY, Azurite

# What a client sees when the connection breaks: a reset or EOF (ConnectionError), or a cut message.
BROKEN = (ConnectionError, http.client.HTTPException)


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


class Upstream(ThreadingHTTPServer):
    """A tiny blob store: PUT stores the body at the path, GET/HEAD return it, DELETE removes it."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StoreHandler)
        self.port: int = self.server_address[1]
        self.store: dict[str, bytes] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()


class _StoreHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses
    server: Upstream

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", ""):
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))
        data = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            data += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        return data

    def _handle(self) -> None:
        body = self._read_body()
        key = self.path.split("?")[0]
        with self.server.lock:
            self.server.seen.append(Seen(self.command, self.path, list(self.headers.items()), body))
            stored = self.server.store.get(key)
            if self.command == "PUT":
                self.server.store[key] = body
            elif self.command == "DELETE":
                self.server.store.pop(key, None)
        if self.command == "PUT":
            return self._reply(201, b"")
        if stored is None:
            return self._reply(404, b"no such blob")
        if self.command == "DELETE":
            return self._reply(202, b"deleted " + body)
        if "chunked" in self.path:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(stored), 1000):
                piece = stored[i : i + 1000]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return None
        return self._reply(200, stored)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream", "yes")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _handle


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def request(port: int, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, dict, bytes]:
    """One request on a new connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_relays_requests_and_responses_byte_for_byte(upstream: Upstream) -> None:
    big = os.urandom(1 << 20)
    signed = {"Host": "storage.example:443", "x-ms-Date": "Mon, 01 Jan 2024 00:00:00 GMT", "X-Odd": "a  b ,c"}
    path = "/c/blob?sv=2025-11-05&sig=abc%2Fdef%3D"
    with FaultProxy(upstream.port, rate=0, seed=1) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)  # one keep-alive connection
        conn.request("PUT", path, body=big, headers=signed)
        assert conn.getresponse().read() == b""
        conn.request("HEAD", path)  # Content-Length of 1 MB but no body: the next response must not be shifted
        head = conn.getresponse()
        assert (head.status, head.getheader("Content-Length"), head.read()) == (200, str(len(big)), b"")
        conn.request("GET", path)
        get = conn.getresponse()
        assert (get.status, get.getheader("X-Upstream"), get.read()) == (200, "yes", big)
        conn.request("GET", path + "&chunked")  # a chunked response
        assert conn.getresponse().read() == big
        conn.request("PUT", "/c/chunked", body=iter([b"abc", b"", b"defg"]), encode_chunked=True)  # chunked request
        assert conn.getresponse().read() == b""
        conn.request("PUT", "/c/expect", body=b"xyz", headers={"Expect": "100-continue"})
        expect = conn.getresponse()  # http.client skips the proxy's interim 100 Continue
        assert (expect.status, expect.read()) == (201, b"")
        conn.request("DELETE", path, body=b"why")
        assert conn.getresponse().read() == b"deleted why"
        conn.close()
        assert (proxy.requests, proxy.forwarded, proxy.faults) == (7, 7, {})

    assert upstream.store == {"/c/chunked": b"abcdefg", "/c/expect": b"xyz"}
    put = upstream.seen[0]
    assert (put.method, put.path, put.body == big) == ("PUT", path, True)
    for name, value in signed.items():
        assert (name, value) in put.headers  # name case, value and Host as the client sent them
    assert [s.method for s in upstream.seen] == ["PUT", "HEAD", "GET", "GET", "PUT", "PUT", "DELETE"]


def test_rate_zero_injects_nothing(upstream: Upstream) -> None:
    with FaultProxy(upstream.port, rate=0, seed=2) as proxy:
        for i in range(30):
            assert request(proxy.port, "PUT", f"/b{i}", b"x")[0] == 201
        assert (proxy.requests, proxy.forwarded, proxy.faults) == (30, 30, {})
        assert len(upstream.seen) == 30


@pytest.mark.parametrize("kind", ["503", "500", "429"])
def test_status_faults_are_answered_by_the_proxy(upstream: Upstream, kind: str) -> None:
    with FaultProxy(upstream.port, rate=1, seed=3, kinds=(kind,)) as proxy:
        status, headers, body = request(proxy.port, "PUT", "/b?sig=x", b"data", **{"x-ms-client-request-id": "r1"})
        assert status == int(kind)
        assert headers.get("Retry-After") == (None if kind == "500" else "1")
        assert headers["x-ms-client-request-id"] == "r1"
        assert body.startswith(b"<?xml") and f"<Code>{headers['x-ms-error-code']}</Code>".encode() in body
        status, headers, body = request(proxy.port, "GET", "/b", Accept="application/json")  # as Batch asks
        assert status == int(kind) and b'"code"' in body
        assert request(proxy.port, "HEAD", "/b")[2] == b""
        assert (proxy.requests, proxy.forwarded, proxy.faults) == (3, 0, {kind: 3})
    assert upstream.seen == []


def test_retry_after_is_configurable(upstream: Upstream) -> None:
    with FaultProxy(upstream.port, rate=1, seed=3, kinds=("429",), retry_after=None) as proxy:
        assert "Retry-After" not in request(proxy.port, "GET", "/b")[1]
    with FaultProxy(upstream.port, rate=1, seed=3, kinds=("503",), retry_after=0) as proxy:
        assert request(proxy.port, "GET", "/b")[1]["Retry-After"] == "0"


def test_reset_request_never_reaches_upstream(upstream: Upstream) -> None:
    with FaultProxy(upstream.port, rate=1, seed=4, kinds=("reset-request",)) as proxy:
        for i in range(5):
            with pytest.raises(BROKEN):
                request(proxy.port, "PUT", f"/b{i}", b"data")
        assert (proxy.requests, proxy.forwarded, proxy.faults) == (5, 0, {"reset-request": 5})
    assert upstream.seen == []


def test_reset_response_breaks_a_request_that_was_applied(upstream: Upstream) -> None:
    upstream.store["/big"] = os.urandom(100_000)
    with FaultProxy(upstream.port, rate=1, seed=5, kinds=("reset-response",)) as proxy:
        for i in range(12):  # cut at different points: before any byte, in the head, in the body
            with pytest.raises(BROKEN):
                request(proxy.port, "PUT", f"/b{i}", f"data{i}".encode())
            with pytest.raises(BROKEN):
                request(proxy.port, "GET", "/big")
        assert (proxy.requests, proxy.forwarded, proxy.faults) == (24, 24, {"reset-response": 24})
    assert all(upstream.store[f"/b{i}"] == f"data{i}".encode() for i in range(12))


def _fault_sequence(port: int, seed: int) -> list[str | None]:
    with FaultProxy(port, rate=0.5, seed=seed) as proxy:
        for i in range(40):
            with contextlib.suppress(*BROKEN):
                request(proxy.port, "PUT", f"/b{i}", b"x")
        assert proxy.requests == 40
        return [kind for _, _, kind in proxy.events]


def test_faults_are_determined_by_the_seed(upstream: Upstream) -> None:
    first = _fault_sequence(upstream.port, seed=6)
    assert first == _fault_sequence(upstream.port, seed=6)
    assert first != _fault_sequence(upstream.port, seed=7)
    assert set(first) == {None, *ALL_KINDS}


def test_spared_requests_are_never_faulted(upstream: Upstream) -> None:
    def spare(method: str, path: str) -> bool:
        return path.startswith("/_emulator/")

    with FaultProxy(upstream.port, rate=1, seed=8, kinds=("503",), spare=spare) as proxy:
        assert request(proxy.port, "PUT", "/_emulator/stats?x=1", b"s")[0] == 201
        assert request(proxy.port, "PUT", "/blob", b"b")[0] == 503
        assert proxy.events == [("PUT", "/_emulator/stats", None), ("PUT", "/blob", "503")]  # no query kept
        proxy.reset_counts()
        assert (proxy.requests, proxy.forwarded, proxy.faults, proxy.events) == (0, 0, {}, [])


def test_close_is_prompt_with_connections_open() -> None:
    baseline = threading.active_count()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        proxy = FaultProxy(silent.getsockname()[1], rate=0, seed=9)
        idle = socket.create_connection(("127.0.0.1", proxy.port))
        stuck = socket.create_connection(("127.0.0.1", proxy.port))
        stuck.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # waits on the silent upstream
        deadline = time.monotonic() + 5
        while proxy.forwarded == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 2
        assert idle.recv(1) == b""  # the proxy hung up
        deadline = time.monotonic() + 2
        while threading.active_count() > baseline and time.monotonic() < deadline:
            time.sleep(0.01)
        assert threading.active_count() == baseline
        idle.close()
        stuck.close()


def _blob_client(proxy: FaultProxy) -> BlobServiceClient:
    retry = LinearRetry(backoff=0.1, random_jitter_range=0.05, retry_total=10, retry_connect=10, retry_read=10,
                        retry_status=10)  # fmt: skip
    return BlobServiceClient(
        f"http://127.0.0.1:{proxy.port}/{AZURITE_ACCOUNT}",
        credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
        api_version="2025-11-05",
        retry_policy=retry,
    )


def test_blob_sdk_retries_through_faults(azurite: Azurite) -> None:
    name = f"faults-{uuid.uuid4().hex[:8]}"
    with FaultProxy(azurite.port, rate=0.3, seed=10, kinds=STORAGE_KINDS, retry_after=0) as proxy:
        container = _blob_client(proxy).get_container_client(name)
        with contextlib.suppress(ResourceExistsError):  # a reset after Azurite created it makes the retry a 409
            container.create_container()
        blobs = {f"blob-{i}": os.urandom(100 + i) for i in range(20)}
        for blob, data in blobs.items():
            container.upload_blob(blob, data, overwrite=True)  # idempotent: a retry after a reset-response is fine
        for blob, data in blobs.items():
            assert container.download_blob(blob).readall() == data
        # The seed was picked so that this run meets every kind (about 55 requests, 17 faults).
        assert set(proxy.faults) == set(STORAGE_KINDS), proxy.faults
    azurite.client().delete_container(name)


def _fault_once(method: str, part: str) -> Callable[[str, str], bool]:
    """A spare predicate that exposes only the first request with this method and path part to faults."""
    exposed: list[str] = []

    def spare(m: str, path: str) -> bool:
        if m == method and part in path and not exposed:
            exposed.append(path)
            return False
        return True

    return spare


def test_blob_sdk_after_a_reset_response_on_create_only_requests(azurite: Azurite) -> None:
    """The hazard reset-response exists for: Azurite applied the request, the SDK retries it and gets a conflict."""
    name = f"faults-{uuid.uuid4().hex[:8]}"
    reset = ("reset-response",)
    with FaultProxy(azurite.port, rate=1, seed=11, kinds=reset, spare=_fault_once("PUT", name)) as proxy:
        with pytest.raises(ResourceExistsError):
            _blob_client(proxy).create_container(name)
        assert [kind for _, _, kind in proxy.events] == ["reset-response", None]
    with FaultProxy(azurite.port, rate=1, seed=11, kinds=reset, spare=_fault_once("PUT", "/b")) as proxy:
        container = _blob_client(proxy).get_container_client(name)
        with pytest.raises(ResourceExistsError):
            container.upload_blob("b", b"hello")  # create-only (If-None-Match: *)
    with FaultProxy(azurite.port, rate=1, seed=11, kinds=reset, spare=_fault_once("DELETE", "/b")) as proxy:
        container = _blob_client(proxy).get_container_client(name)
        assert container.download_blob("b").readall() == b"hello"  # written, though the client saw a failure
        with pytest.raises(ResourceNotFoundError):
            container.delete_blob("b")  # deleted by the first attempt
    azurite.client().delete_container(name)


def test_blob_sdk_does_not_retry_429(azurite: Azurite) -> None:
    """Why STORAGE_KINDS leaves 429 out: Storage throttles with 503, and its SDK takes a 429 as final."""
    with FaultProxy(azurite.port, rate=1, seed=12, kinds=("429",)) as proxy:
        with pytest.raises(HttpResponseError) as raised:
            _blob_client(proxy).create_container(f"faults-{uuid.uuid4().hex[:8]}")
        assert raised.value.status_code == 429
        assert proxy.requests == 1
