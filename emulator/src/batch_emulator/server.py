"""The HTTP server: `azure-batch-emulator` on the command line, or `Emulator` inside a test process."""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from batch_emulator import admin, connections, injections, persistence, responses, storage, urls, versions
from batch_emulator.auth import SharedKeyAuth
from batch_emulator.config import EmulatorConfig, from_command_line
from batch_emulator.errors import BatchError
from batch_emulator.service import BatchService


class StateError(RuntimeError):
    """The saved state in the data folder cannot be read."""


class Emulator:
    """A running emulator: `with Emulator() as emu: BatchClient(emu.endpoint, emu.credential())`."""

    def __init__(self, config: EmulatorConfig | None = None, /, **settings: Any) -> None:
        """`Emulator(config)`, or `Emulator(**settings)` with EmulatorConfig's fields (replacing `config`'s).

        `trust_ca` is added to `storage.trust`'s process-wide trust, which stays after `stop()`."""
        self.config = config = replace(config, **settings) if config else EmulatorConfig(**settings)
        if config.trust_ca is not None:
            storage.trust(config.trust_ca)  # first: a bad file (OSError, ssl.SSLError) leaves nothing open behind
        self._tmp = None if config.data_dir else tempfile.TemporaryDirectory(prefix="batch-emulator-")
        self.data_dir = Path(config.data_dir or self._tmp.name).resolve()
        self.account, self.key = config.account, config.key
        self.auth = SharedKeyAuth(
            config.account, config.key, config.accept_bearer, entra=config.entra, shared_key=config.shared_key
        )
        self.counts: Counter[str] = Counter()
        self.max_body_bytes = config.max_body_bytes
        self.httpd = _listen(config)
        self.httpd.emulator = self
        self.scheme = "https" if config.cert else "http"
        self.endpoint = f"{self.scheme}://{config.host}:{self.httpd.server_address[1]}"
        self.service = BatchService(
            self.data_dir, config.account, self.endpoint + "/", config.boot_seconds, **_autoscale(config)
        )
        self.injections = injections.Injections(self.service, config)  # bad days: quotas, throttling, ...
        self._thread: threading.Thread | None = None
        self._saver = self._restore() if config.data_dir else None

    def _restore(self) -> persistence.Saver:
        """A data folder of the user's: the state lives there, across restarts."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = self.data_dir / persistence.STATE_FILE
        try:
            persistence.restore(self.service, state)
        except (ValueError, KeyError, TypeError) as e:
            self.httpd.server_close()
            raise StateError(f"cannot read the saved state {state}: {e}; move it away to start empty") from None
        self.service.resume()
        return persistence.Saver(self.service, state)

    def credential(self):
        from azure.core.credentials import AzureNamedKeyCredential

        return AzureNamedKeyCredential(self.account, self.key)

    def start(self) -> Emulator:
        if self._saver:
            self._saver.start()
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.1,), name="batch-emulator", daemon=True
        )  # a short poll interval: stop() waits for it
        self._thread.start()
        self.injections.start()
        return self

    def stop(self, timeout: float = 10) -> bool:
        """Kills every task process, stops serving and removes a temporary data folder, within about `timeout` s.

        True if every node thread ended in that time (one may still sit in a hanging download).
        """
        self.injections.stop()
        self.service.halt()  # first: nothing a node is about to start may outlive us
        if self._thread:
            self.httpd.shutdown()
        self.httpd.server_close()
        finished = self.service.wait(timeout)
        connections.close_idle()  # the nodes' kept-alive connections (shared by emulators in one process)
        if self._saver:
            self._saver.stop()
        if self._tmp:
            self._tmp.cleanup()
        return finished

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, req: responses.Request) -> responses.Response:
        path = urlsplit(req.raw_path).path
        if path.startswith(admin.PREFIX):
            return admin.handle(self, req, path)
        if path == f"/{self.account}" or path.startswith(f"/{self.account}/"):
            req.prefix, path = f"/{self.account}", path[len(self.account) + 1 :]
        try:
            if "api-version" not in req.query:
                raise BatchError(
                    400,
                    "MissingRequiredQueryParameter",
                    "A query parameter that's mandatory for this request is not specified.",
                    QueryParameterName="api-version",
                )
            version = versions.rank(req.query["api-version"])  # an unknown one is refused, never misread
            self.auth.check(req.method, urlsplit(req.raw_path).path, urlsplit(req.raw_path).query, req.headers)
            route = urls.resolve(req.method, path)
            if route is None:
                status, code = (405, "UnsupportedHttpVerb") if urls.path_known(path) else (404, "ResourceNotFound")
                raise BatchError(status, code, f"{req.method} {path} is not an operation of the Azure Batch emulator.")
            handler, name, ids = route
            self.counts[name] += 1
            self.injections.throttle.check(name)  # 429 while throttled: counted above, as the attempt it is
            if len(req.body) > self.max_body_bytes:
                raise BatchError(
                    413,
                    "RequestBodyTooLarge",
                    "The request body is too large and exceeds the maximum permissible limit.",
                    MaxLimit=self.max_body_bytes,
                )
            if version >= versions.CURRENT:
                return handler(self.service, req, *(unquote(i) for i in ids))
            return self._older(req, version, handler, name, ids)
        except BatchError as e:  # a refused bearer token also carries its WWW-Authenticate challenge
            if e.status == 304:  # a conditional read of what has not changed: no body
                return responses.Response(304, b"")
            return responses.Response(e.status, e.body(req.base_url), dict(getattr(e, "headers", {})))

    def _older(
        self, req: responses.Request, version: int, handler: Callable, name: str, ids: list[str]
    ) -> responses.Response:
        """A request in an older api-version's names: renamed into the current ones, the answer renamed back."""
        versions.map_request(name, req, version)
        try:
            res = handler(self.service, req, *(unquote(i) for i in ids))
        except BatchError as e:
            versions.map_error(e, version)
            raise
        res.body = versions.map_response(name, res.body, version)
        return res


def _listen(config: EmulatorConfig) -> _Server:
    """The listening server, over TLS 1.2+ when the config has a certificate."""
    httpd = _Server((config.host, config.port), _Handler)
    if not config.cert:
        return httpd
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(config.cert, config.cert_key)
    except (OSError, ssl.SSLError):
        httpd.server_close()
        raise
    # The handshake happens on the first read, in the request's thread: a stalled client cannot block accept().
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    return httpd


def _autoscale(config: EmulatorConfig) -> dict[str, Any]:
    """The service's autoscale settings the config changes (seconds; the service keeps its own otherwise)."""
    settings: dict[str, Any] = {}
    if config.autoscale_min_interval is not None:
        settings["autoscale_min_interval"] = timedelta(seconds=config.autoscale_min_interval)
    if config.autoscale_sample_seconds is not None:
        settings["autoscale_sample_seconds"] = config.autoscale_sample_seconds
    return settings


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    emulator: Emulator

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):  # a client hanging up, or not trusting us
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet: request lines can hold SAS-less ids only
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
        host, port = self.server.server_address[:2]
        origin = f"{self.server.emulator.scheme}://{self.headers.get('Host') or f'{host}:{port}'}"
        req = responses.Request(self.command, self.path, query, dict(self.headers.items()), body, origin)
        try:
            res = self.server.emulator.handle(req)
        except Exception as e:  # a bug must still answer, and never with a retryable 5xx loop
            res = responses.Response(500, BatchError(500, "InternalError", f"{type(e).__name__}: {e}").body(origin))
        self._send(res)

    def _send(self, res: responses.Response) -> None:
        payload = (
            res.body if isinstance(res.body, bytes) else b"" if res.body is None else json.dumps(res.body).encode()
        )
        self.send_response(res.status)
        if isinstance(res.body, dict):
            self.send_header("Content-Type", responses.JSON_TYPE)
        for name, value in res.headers.items():
            self.send_header(name, value)
        self.send_header("request-id", str(uuid.uuid4()))
        self.send_header("DataServiceVersion", "3.0")
        if "Content-Length" not in res.headers:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


def main(argv: list[str] | None = None) -> int:
    config = from_command_line(argv)
    if config.trust_ca:
        # Trusted here, not by Emulator(): a bad file is a usage error, told apart from --cert's.
        if problem := _trust(config.trust_ca):
            print(f"azure-batch-emulator: {problem}", file=sys.stderr)
            return 2
        config = replace(config, trust_ca=None)
    try:
        emulator = Emulator(config)
    except (OSError, StateError) as e:  # ssl.SSLError is an OSError
        print(f"azure-batch-emulator: {_start_failure(config, e)}", file=sys.stderr)
        return 1
    _serve(emulator)
    # Node threads may still sit in a network read; their processes are dead, so they must not delay the exit.
    os._exit(0)


def _trust(ca_file: Path | str) -> str | None:
    """Why the nodes cannot trust --trust-ca's certificates, or None once they do."""
    try:
        storage.trust(ca_file)
    except ssl.SSLError as e:  # read, but no usable certificate in it
        return f"--trust-ca {ca_file}: not a PEM CA certificate ({e})"
    except OSError as e:
        return f"cannot read --trust-ca {ca_file}: {e.strerror or e}"
    return None


def _start_failure(config: EmulatorConfig, error: OSError | StateError) -> str:
    if isinstance(error, ssl.SSLError):
        return f"cannot use the certificate {config.cert}: {error}"
    if isinstance(error, StateError):
        return str(error)
    if config.cert and error.filename:
        return f"cannot read {error.filename}: {error.strerror or error}"
    return f"cannot listen on {config.host}:{config.port}: {error.strerror or error}"


def _serve(emulator: Emulator) -> None:
    """Serves until SIGINT or SIGTERM, then stops within a few seconds; a second signal exits at once."""
    signals: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # Runs in the main thread between two bytecodes: it must take no lock the main thread may hold.
        signals.append(signum)
        if len(signals) > 1:  # a second signal: no more waiting
            emulator.service.processes.kill_all_now()
            os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    emulator.start()
    print(
        f"Azure Batch emulator listening at {emulator.endpoint}\n"
        f"  account name: {emulator.account}\n  account key:  {emulator.key}\n"
        f"  data folder:  {emulator.data_dir}\n  request counts: {emulator.endpoint}/_emulator/stats",
        flush=True,
    )
    # A timed sleep, not Event.wait(): the kernel may deliver the signal to any thread, and Python runs
    # the handler only when the main thread next executes bytecode.
    while not signals:
        time.sleep(0.1)
    emulator.stop(timeout=5)
    print("Azure Batch emulator stopped", flush=True)
