"""Node-side transfer retries through SDK 15, against a tiny Blob server on 127.0.0.1 that fails on cue."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from batch_emulator import storage
from batch_emulator.server import Emulator

from tests.emulator.conftest import make_job, make_pool, wait_task
from tests.emulator.test_execution import output
from tests.stack import wait_for

PAGE = 2  # blobs per listing page: listings take several requests, each retried on its own


class FlakyBlobs(ThreadingHTTPServer):
    """Stores, serves and lists blobs ('/container/name'), answering the requests it is told to with failures:
    503, 429 (Retry-After: 1), 403, 409, 302 (to the same path + '.moved'), drop (connection closed, no
    answer) or cut (body cut short)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.planned: dict[str, deque[str]] = defaultdict(deque)  # "GET /c/a" -> failures for the next requests
        self.always: dict[str, str] = {}  # "GET /c/a" -> the failure of every request
        self.seen: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}?sv=2025&sig=secret"  # a SAS-like query

    def fail(self, key: str, *failures: str) -> None:
        self.planned[key].extend(failures)

    def failure_for(self, key: str) -> str | None:
        with self.lock:
            self.seen[key] += 1
            self.times[key].append(time.monotonic())
            return self.always.get(key) or (self.planned[key].popleft() if self.planned[key] else None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FlakyBlobs

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = f"{self.command} {path}"
        failure = self.server.failure_for(key)
        if failure == "drop":
            self.close_connection = True
            return
        if failure in ("503", "429", "403", "409", "302"):
            headers = {"Retry-After": "1"} if failure == "429" else {}
            if failure == "302":
                headers = {"Location": self.server.url(path + ".moved")}
            return self._answer(int(failure), b"", headers)
        if self.command == "PUT":
            self.server.blobs[path] = body
            return self._answer(201, b"")
        if query.get("comp") == ["list"]:
            data = self._listing(path, query.get("prefix", [""])[0], int(query.get("marker", ["0"])[0]))
        elif path in self.server.blobs:
            data = self.server.blobs[path]
        else:
            return self._answer(404, b"", {"x-ms-error-code": "BlobNotFound"})
        if failure == "cut":
            self._answer(200, data[: len(data) // 2], {"Content-Length": str(len(data))})
            self.close_connection = True
            return
        self._answer(200, data)

    def _listing(self, container: str, prefix: str, start: int) -> bytes:
        names = sorted(p[len(container) + 1 :] for p in self.server.blobs if p.startswith(f"{container}/{prefix}"))
        page = "".join(f"<Blob><Name>{escape(n)}</Name></Blob>" for n in names[start : start + PAGE])
        marker = str(start + PAGE) if start + PAGE < len(names) else ""
        return (f"<?xml version='1.0' encoding='utf-8'?><EnumerationResults><Blobs>{page}</Blobs>"
                f"<NextMarker>{marker}</NextMarker></EnumerationResults>").encode()  # fmt: skip

    def _answer(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(data)), **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = _serve


@pytest.fixture
def blobs() -> Iterator[FlakyBlobs]:
    server = FlakyBlobs()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def files_of(client: BatchClient, job: str, task: str) -> set[str]:
    return {f.name for f in client.list_task_files(job, task, recursive=True)}


def fetch(url: str) -> dict:
    return {"resource_files": [m.ResourceFile(http_url=url, file_path="x")]}


def fetch_all(container_url: str) -> dict:
    return {"resource_files": [m.ResourceFile(storage_container_url=container_url)]}


def upload(container_url: str) -> dict:
    return {"output_files": [output(container_url, "x.txt")]}


def run_all(client: BatchClient, job: str, tasks: dict[str, dict]) -> dict[str, m.BatchTaskExecutionInfo]:
    command = "/bin/sh -c 'echo 1 > x.txt'"
    client.create_tasks(job, [m.BatchTaskCreateOptions(id=t, command_line=command, **x) for t, x in tasks.items()])
    return {t: wait_task(client, job, t).execution_info for t in tasks}


def test_transient_failures_are_retried(client: BatchClient, uid: str, blobs: FlakyBlobs) -> None:
    blobs.blobs.update({
        "/c/start.sh": b"echo started", "/c/tool.sh": b"echo tool",
        "/c/in/a.txt": b"alpha", "/c/in/b.txt": b"beta", "/c/in/sub/c.txt": b"gamma",
    })  # fmt: skip
    blobs.fail("GET /c/start.sh", "503", "drop")
    blobs.fail("GET /c/tool.sh", "503", "cut", "429")  # 429 says Retry-After: 1
    blobs.fail("GET /c", "drop", "cut", "503")  # the listing pages
    blobs.fail("GET /c/in/b.txt", "cut", "drop")
    blobs.fail("PUT /out/result.txt", "503", "drop")
    start = m.BatchStartTask(command_line="/bin/sh start.sh", wait_for_success=True, **fetch(blobs.url("/c/start.sh")))
    start.resource_files[0].file_path = "start.sh"
    make_pool(client, uid, nodes=1, start_task=start)
    node = next(iter(client.list_nodes(uid)))
    assert (node.state, node.start_task_info.result) == ("idle", "success")
    make_job(client, uid, uid)
    command = "/bin/sh -c 'cat in/in/a.txt in/in/b.txt in/in/sub/c.txt > result.txt; sh tool.sh >> result.txt'"
    client.create_task(
        uid,
        m.BatchTaskCreateOptions(
            id="t",
            command_line=command,
            resource_files=[
                m.ResourceFile(storage_container_url=blobs.url("/c"), blob_prefix="in/", file_path="in"),
                m.ResourceFile(http_url=blobs.url("/c/tool.sh"), file_path="tool.sh"),
            ],
            output_files=[output(blobs.url("/out"), "result.txt")],
        ),
    )
    done = wait_task(client, uid, "t")
    assert done.execution_info.result == "success", done.execution_info.failure_info
    assert blobs.blobs["/out/result.txt"] == b"alphabetagammatool\n"
    assert (blobs.seen["GET /c/tool.sh"], blobs.seen["GET /c/in/b.txt"], blobs.seen["PUT /out/result.txt"]) == (4, 3, 3)
    assert blobs.seen["GET /c"] == 5  # 3 failures, then 2 pages
    tool = blobs.times["GET /c/tool.sh"]
    assert tool[3] - tool[2] >= 0.95  # the 429's Retry-After was honoured
    assert not [n for n in files_of(client, uid, "t") if n.endswith(".part")]


def test_other_failures_are_not_retried(client: BatchClient, uid: str, blobs: FlakyBlobs) -> None:
    blobs.fail("GET /c/secret.txt", *["403"] * 5)
    blobs.fail("PUT /out/x.txt", *["409"] * 5)
    make_pool(client, uid, nodes=1, slots=3)
    make_job(client, uid, uid)
    tasks = {"missing": fetch(blobs.url("/c/gone.txt")), "denied": fetch(blobs.url("/c/secret.txt")),
             "conflict": upload(blobs.url("/out"))}  # fmt: skip
    infos = run_all(client, uid, tasks)
    codes = {t: (i.result, i.failure_info.code, i.failure_info.category) for t, i in infos.items()}
    assert codes == {
        "missing": ("failure", "BlobNotFound", "usererror"),
        "denied": ("failure", "BlobAccessDenied", "usererror"),
        "conflict": ("failure", "FileUploadConflict", "usererror"),
    }
    assert not [i for i in infos.values() if "sig=" in i.failure_info.message]
    assert (blobs.seen["GET /c/gone.txt"], blobs.seen["GET /c/secret.txt"], blobs.seen["PUT /out/x.txt"]) == (1, 1, 1)


def test_a_redirect_is_not_followed_but_fails_the_download(client: BatchClient, uid: str, blobs: FlakyBlobs) -> None:
    """Blob Storage never redirects: a 302 (say, an endpoint that is not Storage's) fails at once, not written."""
    blobs.blobs.update({"/c/moved.txt": b"wrong", "/c/moved.txt.moved": b"elsewhere"})
    blobs.always["GET /c/moved.txt"] = "302"
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid)
    info = run_all(client, uid, {"redirected": fetch(blobs.url("/c/moved.txt"))})["redirected"]
    assert (info.result, info.failure_info.code, info.failure_info.category) == (
        "failure", "BlobDownloadMiscError", "servererror")  # fmt: skip
    assert "HTTP 302" in info.failure_info.message and "sig=" not in info.failure_info.message
    assert (blobs.seen["GET /c/moved.txt"], blobs.seen["GET /c/moved.txt.moved"]) == (1, 0)
    assert not [n for n in files_of(client, uid, "redirected") if n.rsplit("/", 1)[-1] in ("x", ".x.part")]


def test_a_url_with_a_bad_port_fails_the_task(client: BatchClient, uid: str) -> None:
    """A port that is no port fails the download at once (it is not retried), and the task ends."""
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid)
    info = run_all(client, uid, {"bad": fetch("http://127.0.0.1:99999/c/x.txt?sv=2025&sig=secret")})["bad"]
    assert (info.result, info.failure_info.code) == ("failure", "BlobDownloadMiscError")
    assert "sig=" not in info.failure_info.message


def test_failing_forever_ends_after_the_retry_budget(
    client: BatchClient, uid: str, blobs: FlakyBlobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "RETRY_BUDGET_SECONDS", 1.5)
    blobs.blobs["/c/cut.txt"] = b"0123456789" * 100
    blobs.always.update({"GET /c/down.txt": "503", "GET /c/cut.txt": "cut", "GET /c": "drop", "PUT /out/x.txt": "503"})
    make_pool(client, uid, nodes=1, slots=4)
    make_job(client, uid, uid)
    tasks = {"down": fetch(blobs.url("/c/down.txt")), "cut": fetch(blobs.url("/c/cut.txt")),
             "list": fetch_all(blobs.url("/c")), "up": upload(blobs.url("/out"))}  # fmt: skip
    infos = run_all(client, uid, tasks)
    assert {t: (i.result, i.failure_info.code) for t, i in infos.items()} == {
        "down": ("failure", "BlobDownloadMiscError"),
        "cut": ("failure", "BlobDownloadMiscError"),
        "list": ("failure", "ResourceContainerListMiscError"),
        "up": ("failure", "FileUploadMiscError"),
    }
    for info in infos.values():  # it kept trying for the whole budget (that it then stopped: it completed)
        assert (info.end_time - info.start_time).total_seconds() >= storage.RETRY_BUDGET_SECONDS - 0.1
    assert min(blobs.seen[k] for k in ("GET /c/down.txt", "GET /c/cut.txt", "GET /c", "PUT /out/x.txt")) >= 2
    assert not [n for n in files_of(client, uid, "cut") if n.startswith("wd/")]  # no partial file, complete or not


def test_cancelling_stops_the_retries(client: BatchClient, uid: str, blobs: FlakyBlobs) -> None:
    blobs.always["GET /c/never.txt"] = "503"
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid)
    client.create_task(
        uid, m.BatchTaskCreateOptions(id="t", command_line="/bin/true", **fetch(blobs.url("/c/never.txt")))
    )
    wait_for(lambda: blobs.seen["GET /c/never.txt"] >= 2, timeout=30, what="the download to be retried")
    client.terminate_task(uid, "t")
    assert wait_task(client, uid, "t").execution_info.failure_info.code == "TaskEnded"
    count = blobs.seen["GET /c/never.txt"]
    time.sleep(1)
    assert blobs.seen["GET /c/never.txt"] == count


def test_stopping_the_emulator_stops_the_retries(tmp_path: Path, blobs: FlakyBlobs) -> None:
    blobs.always["GET /c/never.txt"] = "503"
    emu = Emulator(data_dir=tmp_path, boot_seconds=0).start()
    try:
        with BatchClient(emu.endpoint, emu.credential()) as client:
            start = m.BatchStartTask(command_line="/bin/true", **fetch(blobs.url("/c/never.txt")))
            make_pool(client, "p", nodes=1, start_task=start, wait=False)
            wait_for(lambda: blobs.seen["GET /c/never.txt"] >= 2, timeout=30, what="the start task to retry")
    finally:
        finished = emu.stop(timeout=5)
    assert finished  # every node thread ended: a retry still waiting out its 60 s budget would not have
