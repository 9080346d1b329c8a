"""Storage transfers honour the environment's proxy settings (HTTP_PROXY, NO_PROXY), read once per client
rather than on every request: through a real forward proxy in front of Azurite."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import pytest

from topn.tasks import storage
from topn.tasks.settings import load_settings


class _Forward(http.server.BaseHTTPRequestHandler):
    """A forward HTTP proxy: requests come with absolute URLs; each is sent on and counted."""

    seen: ClassVar[list[str]] = []

    def _forward(self) -> None:
        self.seen.append(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        request = urllib.request.Request(self.path, data=body or None, headers=headers, method=self.command)
        try:
            answer = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60)
        except urllib.error.HTTPError as e:
            answer = e
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[str]:
    _Forward.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def test_uploads_go_through_the_proxy_the_environment_names(
    stack_env: dict, proxy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPN_INPUT_CONTAINER", "proxied")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    settings = load_settings()
    storage.blob_service(settings).get_container_client("proxied").create_container()
    for i in range(3):
        (tmp_path / f"f{i}.txt").write_text(f"words number {i}")
    uploaded = storage.read_inputs(settings, [str(tmp_path)])
    storage.upload_inputs(settings, uploaded)
    puts = {unquote(urlsplit(p).path).split("/proxied/", 1)[1] for p in _Forward.seen if "/proxied/" in p}
    assert len(uploaded) == 3 and puts == {i.blob for i in uploaded}, _Forward.seen  # each, once or retried

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # bypassed: straight to Azurite
    before = len(_Forward.seen)
    (tmp_path / "f3.txt").write_text("one more")
    storage.upload_inputs(settings, storage.read_inputs(settings, [str(tmp_path)]))
    assert len(list(storage.blob_service(settings).get_container_client("proxied").list_blobs())) == 4
    assert len(_Forward.seen) == before
