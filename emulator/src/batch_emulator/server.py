"""The HTTP server: `azure-batch-emulator` on the command line, or `Emulator` inside a test process."""

from __future__ import annotations

import argparse
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
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from batch_emulator import admin, persistence, preemption, responses, storage, urls, versions
from batch_emulator.auth import SharedKeyAuth
from batch_emulator.devaccount import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME
from batch_emulator.errors import BatchError
from batch_emulator.service import BatchService

MAX_BODY_BYTES = 1_000_000  # what SDK 15 documents for a task collection; larger bodies get 413


class StateError(RuntimeError):
    """The saved state in the data folder cannot be read."""


class Emulator:
    """A running emulator: `with Emulator() as emu: BatchClient(emu.endpoint, emu.credential())`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | str | None = None,
        account: str = DEV_ACCOUNT_NAME,
        key: str = DEV_ACCOUNT_KEY,
        boot_seconds: float = 0.2,
        accept_bearer: bool = False,
        max_body_bytes: int = MAX_BODY_BYTES,
        preempt_rate: float = 0.0,
        autoscale_min_interval: float | None = None,
        autoscale_sample_seconds: float | None = None,
        entra: bool = False,
        shared_key: bool = True,
        cert: Path | str | None = None,
        cert_key: Path | str | None = None,
        trust_ca: Path | str | None = None,
    ) -> None:
        """`entra`: check Entra ID bearer tokens' claims (tokens.py); `shared_key=False`: refuse Shared Key;
        `cert` (+ `cert_key`, else the key is in `cert`): PEM files, served over HTTPS (TLS 1.2+);
        `trust_ca`: a PEM file of CA certificates the nodes trust besides the system's for their blob transfers
        (Azurite's over HTTPS): added to `storage.trust`'s process-wide trust, which stays after `stop()`."""
        if not shared_key and not (entra or accept_bearer):
            raise ValueError("shared_key=False needs entra=True (or accept_bearer=True): nothing could authenticate")
        if trust_ca is not None:
            storage.trust(trust_ca)  # first: a bad file (OSError, ssl.SSLError) leaves nothing open behind
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="batch-emulator-")
        self.data_dir = Path(data_dir or self._tmp.name).resolve()
        self.account, self.key = account, key
        self.auth = SharedKeyAuth(account, key, accept_bearer, entra=entra, shared_key=shared_key)
        self.counts: Counter[str] = Counter()
        self.max_body_bytes = max_body_bytes
        self.httpd = _Server((host, port), _Handler)
        self.httpd.emulator = self
        self.scheme = "https" if cert else "http"
        if cert:
            try:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(cert, cert_key)
            except (OSError, ssl.SSLError):
                self.httpd.server_close()
                raise
            # The handshake happens on the first read, in the request's thread: a stalled client cannot block accept().
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.endpoint = f"{self.scheme}://{host}:{self.httpd.server_address[1]}"
        autoscale = {}
        if autoscale_min_interval is not None:  # seconds: below the service's 5 minutes, for tests
            autoscale["autoscale_min_interval"] = timedelta(seconds=autoscale_min_interval)
        if autoscale_sample_seconds is not None:
            autoscale["autoscale_sample_seconds"] = autoscale_sample_seconds
        self.service = BatchService(self.data_dir, account, self.endpoint + "/", boot_seconds, **autoscale)
        self.preempter = preemption.RandomPreempter(self.service, preempt_rate)  # per spot node-minute
        self._thread: threading.Thread | None = None
        self._saver: persistence.Saver | None = None
        if data_dir:  # a folder of the user's: the state lives there, across restarts
            self.data_dir.mkdir(parents=True, exist_ok=True)
            state = self.data_dir / persistence.STATE_FILE
            try:
                persistence.restore(self.service, state)
            except (ValueError, KeyError, TypeError) as e:
                self.httpd.server_close()
                raise StateError(f"cannot read the saved state {state}: {e}; move it away to start empty") from None
            self.service.resume()
            self._saver = persistence.Saver(self.service, state)

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
        self.preempter.start()
        return self

    def stop(self, timeout: float = 10) -> bool:
        """Kills every task process, stops serving and removes a temporary data folder, within about `timeout` s.

        True if every node thread ended in that time (one may still sit in a hanging download).
        """
        self.preempter.stop()
        self.service.halt()  # first: nothing a node is about to start may outlive us
        if self._thread:
            self.httpd.shutdown()
        self.httpd.server_close()
        finished = self.service.wait(timeout)
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
        if "Content-Length" not in res.headers:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="azure-batch-emulator", description="A local Azure Batch service.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=10100, help="port (default 10100; 0 picks a free one)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the state and the nodes' folders are kept, across restarts (default: a temporary folder)",
    )
    parser.add_argument("--account", default=DEV_ACCOUNT_NAME, help=f"account name (default {DEV_ACCOUNT_NAME})")
    parser.add_argument("--key", default=DEV_ACCOUNT_KEY, help="account key, Base64 (default: the development key)")
    parser.add_argument("--boot-seconds", type=float, default=0.2, help="how long a node takes to start (0.2)")
    parser.add_argument("--accept-bearer", action="store_true", help="accept any bearer token, unchecked")
    parser.add_argument(
        "--entra",
        action="store_true",
        help="check Entra ID bearer tokens: audience, issuer, lifetime (not the signature)",
    )
    parser.add_argument(
        "--no-shared-key",
        action="store_true",
        help="refuse Shared Key, as an account without SharedKey in allowedAuthenticationModes (needs --entra)",
    )
    parser.add_argument("--cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (chain)")
    parser.add_argument(
        "--cert-key", type=Path, metavar="PEM", help="the certificate's private key (default: inside --cert)"
    )
    parser.add_argument(
        "--trust-ca",
        type=Path,
        metavar="PEM",
        help="CA certificate(s) the nodes trust, besides the system's, when they download resource files and "
        "upload output files: e.g. Azurite's development certificate",
    )
    parser.add_argument(
        "--preempt-rate",
        type=float,
        default=0.0,
        help="pre-empt spot nodes at random, this many times per node-minute on average (default 0: never)",
    )
    parser.add_argument(
        "--autoscale-interval-min",
        type=float,
        metavar="SECONDS",
        help="the shortest autoScaleEvaluationInterval accepted (default 300, the service's)",
    )
    parser.add_argument(
        "--autoscale-sample-seconds",
        type=float,
        metavar="SECONDS",
        help="how often an autoscale pool's metrics are sampled (default 30, the service's)",
    )
    args = parser.parse_args(argv)
    if args.no_shared_key and not (args.entra or args.accept_bearer):
        parser.error("--no-shared-key needs --entra (or --accept-bearer): nothing could authenticate")
    if args.cert_key and not args.cert:
        parser.error("--cert-key needs --cert")
    if args.trust_ca:  # trusted here, not by Emulator(trust_ca=): a bad file is a usage error, told apart from --cert's
        try:
            storage.trust(args.trust_ca)
        except ssl.SSLError as e:  # read, but no usable certificate in it
            print(f"azure-batch-emulator: --trust-ca {args.trust_ca}: not a PEM CA certificate ({e})", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"azure-batch-emulator: cannot read --trust-ca {args.trust_ca}: {e.strerror or e}", file=sys.stderr)
            return 2
    try:
        emulator = Emulator(
            args.host,
            args.port,
            args.data_dir,
            args.account,
            args.key,
            args.boot_seconds,
            args.accept_bearer,
            preempt_rate=args.preempt_rate,
            autoscale_min_interval=args.autoscale_interval_min,
            autoscale_sample_seconds=args.autoscale_sample_seconds,
            entra=args.entra,
            shared_key=not args.no_shared_key,
            cert=args.cert,
            cert_key=args.cert_key,
        )
    except ssl.SSLError as e:
        print(f"azure-batch-emulator: cannot use the certificate {args.cert}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if args.cert and e.filename:
            print(f"azure-batch-emulator: cannot read {e.filename}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(
            f"azure-batch-emulator: cannot listen on {args.host}:{args.port}: {e.strerror or e}",
            file=sys.stderr,
        )
        return 1
    except StateError as e:
        print(f"azure-batch-emulator: {e}", file=sys.stderr)
        return 1
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
    # Node threads may still sit in a network read; their processes are dead, so they must not delay the exit.
    os._exit(0)
