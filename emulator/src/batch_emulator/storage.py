"""Blob Storage over HTTP(S) with SAS URLs, as a node agent uses it (Azurite or Azure alike).

Like the Batch node agent, every transfer is retried after a transient failure (5xx, 408, 429, a
refused, reset or dropped connection, a cut-short body, a timeout), with capped exponential back-off
and full jitter, for at most RETRY_BUDGET_SECONDS; any other failure (403, 404, 409, an untrusted
certificate, ...) stands at once.

HTTPS servers are verified against the system's CAs and those `trust` added (Azurite's development
certificate, say): one context for the whole process, so trust is only ever added, never taken away.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import ssl
import time
import urllib.error
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from batch_emulator import connections

# The node agent's retry budget (README, "Retries"): every attempt of one transfer (a download, a page of
# a blob listing, an upload) within this many seconds of the first; then the last failure stands. Read at
# each transfer, so that tests can lower it.
RETRY_BUDGET_SECONDS = 60.0
RETRY_FIRST_SECONDS = 0.2  # the first back-off, doubling with each attempt ...
RETRY_CAP_SECONDS = 5.0  # ... up to this; a random wait up to the back-off (full jitter)
RETRY_AFTER_CAP_SECONDS = 30.0  # the longest Retry-After a server gets honoured
TIMEOUT = 60  # seconds one connect or read may take

T = TypeVar("T")
_POLL = 0.05  # how often a back-off looks whether its transfer was cancelled
_tls = ssl.create_default_context()  # every transfer's: the system's CAs, and those `trust` added


def trust(ca_file: Path | str) -> None:
    """Nodes also trust the CA certificate(s) in this PEM file when they download and upload.

    Process-wide and only ever added: several emulators in one process all trust every CA any of them was
    given. A missing or unreadable file raises OSError, one without a certificate ssl.SSLError.
    """
    _tls.load_verify_locations(cafile=os.fspath(ca_file))


def shown(url: str) -> str:
    """A URL as it may be printed: never its query string, which holds the SAS signature."""
    return url.split("?", 1)[0]


def blob_url(container_url: str, name: str) -> str:
    parts = urlsplit(container_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + quote(name, safe="/~")))


def transient(error: BaseException) -> bool:
    """Whether trying the same request again may work."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code in (408, 429) or error.code >= 500
    if isinstance(error, urllib.error.URLError):  # connect failures come wrapped; `reason` may be a string
        error = error.reason  # type: ignore[assignment]
    # RemoteDisconnected (closed before answering) is a ConnectionError; socket.timeout is TimeoutError.
    return isinstance(error, (ConnectionError, TimeoutError, http.client.IncompleteRead))


def timed_out(error: BaseException) -> bool:
    return isinstance(getattr(error, "reason", None) or error, TimeoutError)


def with_retries(fn: Callable[[], T], cancelled: Callable[[], bool] = lambda: False) -> T:
    """`fn()`, tried again after transient failures until it works, RETRY_BUDGET_SECONDS pass or `cancelled()`.

    The failure that stands is raised, always as an OSError (http.client's errors are not all one), so
    callers map it to a failureInfo with one `except OSError`.
    """
    deadline = time.monotonic() + RETRY_BUDGET_SECONDS
    attempt = 0
    while True:
        try:
            return fn()
        except (OSError, http.client.HTTPException) as e:
            error = e
        delay = _retry_after(error)
        if isinstance(error, urllib.error.HTTPError):
            error.close()  # its connection; the status and headers stay readable
        if delay is None:
            delay = random.uniform(0, min(RETRY_CAP_SECONDS, RETRY_FIRST_SECONDS * 2 ** min(attempt, 16)))
        attempt += 1
        left = deadline - time.monotonic()  # the last attempt comes at the deadline, not before it
        if not transient(error) or left <= 0 or not _sleep(min(delay, left), cancelled):
            if isinstance(error, OSError):
                raise error
            raise ConnectionError(f"{type(error).__name__}: {error}") from error


def _retry_after(error: BaseException) -> float | None:
    if not isinstance(error, urllib.error.HTTPError) or error.headers is None:
        return None
    try:
        return min(max(0.0, float(error.headers.get("Retry-After") or "")), RETRY_AFTER_CAP_SECONDS)
    except ValueError:  # absent, or an HTTP date: the usual back-off applies
        return None


def _sleep(seconds: float, cancelled: Callable[[], bool]) -> bool:
    """Waits `seconds`, but False as soon as the transfer is cancelled (a task ended, the emulator stops)."""
    end = time.monotonic() + seconds
    while not cancelled():
        left = end - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(_POLL, left))
    return False


def download(url: str, dest: Path, cancelled: Callable[[], bool] = lambda: False) -> None:
    """Downloads under a temporary name, renamed when complete: a file at `dest` is never a partial one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")

    def attempt() -> None:
        with connections.request("GET", url, _tls, TIMEOUT) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
            if response.length:  # read in pieces, http.client ends a cut-short body quietly
                raise http.client.IncompleteRead(b"", response.length)
        os.replace(part, dest)

    try:
        with_retries(attempt, cancelled)
    finally:
        part.unlink(missing_ok=True)


def list_blobs(container_url: str, prefix: str = "", cancelled: Callable[[], bool] = lambda: False) -> list[str]:
    """Names of the blobs in a container (SAS URL with list permission), following continuation markers."""
    names: list[str] = []
    marker = ""
    parts = urlsplit(container_url)
    while True:
        query = {
            "restype": "container",
            "comp": "list",
            "prefix": prefix,
            **({"marker": marker} if marker else {}),
        }
        url = urlunsplit(parts._replace(query="&".join(filter(None, [parts.query, urlencode(query)]))))
        try:
            root = ET.fromstring(with_retries(lambda u=url: _read(u), cancelled))
        except ET.ParseError as e:  # an OSError, so that it fails the task instead of its node thread
            raise OSError(f"the blob list is not valid XML: {e}") from e
        names += [n.text or "" for n in root.iter("Name")]
        marker = root.findtext("NextMarker") or ""
        if not marker:
            return names


def _read(url: str) -> bytes:
    with connections.request("GET", url, _tls, TIMEOUT) as response:
        return response.read()  # a cut-short body raises IncompleteRead when read whole


def upload(container_url: str, name: str, source: Path, cancelled: Callable[[], bool] = lambda: False) -> None:
    def attempt() -> None:
        headers = {
            "x-ms-blob-type": "BlockBlob",
            "Content-Length": str(source.stat().st_size),
            "Content-Type": "application/octet-stream",
        }
        with (
            open(source, "rb") as body,  # opened again for each attempt: a retry sends the whole file
            connections.request("PUT", blob_url(container_url, name), _tls, TIMEOUT, body, headers) as response,
        ):
            response.read()

    with_retries(attempt, cancelled)


def http_status(error: BaseException) -> int | None:
    return error.code if isinstance(error, urllib.error.HTTPError) else None
