"""Azure SDK clients built from the settings: the only place credentials are turned into clients."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import requests
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.pipeline.transport._bigger_block_size_http_adapters import BiggerBlockSizeHTTPAdapter
from azure.storage.blob import BlobServiceClient, ExponentialRetry
from azure.storage.blob.aio import ExponentialRetry as AsyncExponentialRetry
from urllib3.util.retry import Retry

from topn.tasks import entra
from topn.tasks.policy import FIRST_BACKOFF, HTTP_RETRIES, MAX_BACKOFF, THROTTLE_BUDGET, backoff
from topn.tasks.settings import AzureConnection

_THROTTLED_SAID: dict[str, float] = {}
THROTTLED_SAID_EVERY = 30.0  # seconds between two "throttling" lines for one service


def _say_throttled(service: str, retry_after: str | None) -> None:
    """A throttling service is said in the run's log, at most every THROTTLED_SAID_EVERY seconds: a run
    that slows down says why."""
    now = time.monotonic()
    if now - _THROTTLED_SAID.get(service, -THROTTLED_SAID_EVERY) < THROTTLED_SAID_EVERY:
        return
    _THROTTLED_SAID[service] = now
    asked = f", asking to wait {retry_after} s" if retry_after else ""
    try:
        from prefect import get_run_logger

        logger: Any = get_run_logger()
    except Exception:  # outside a task run (a worker thread of the SDK): the process's own log
        logger = logging.getLogger("topn")
    logger.warning("%s is throttling (429 or 503 Server Busy%s): waiting and retrying as it asks", service, asked)


class BatchRetry(RetryPolicy):
    """azure-core's retry (idempotent methods, and 5xx or Retry-After for POST and PATCH) with our back-off."""

    def __init__(self) -> None:
        super().__init__(retry_total=HTTP_RETRIES, retry_backoff_factor=FIRST_BACKOFF, retry_backoff_max=MAX_BACKOFF)

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return backoff(len(settings["history"]))

    def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
        # A throttled answer does not use up a retry while the storm lasts less than THROTTLE_BUDGET: Batch
        # asks to wait (Retry-After, which azure-core obeys) and will answer; a run survives a long storm.
        if getattr(getattr(response, "http_response", None), "status_code", None) == 429:
            since = settings.setdefault("throttled_since", time.monotonic())
            if time.monotonic() - since < THROTTLE_BUDGET:
                settings["total"] += 1
                settings["status"] += 1
        return super().increment(settings, response, error)

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        # A throttled request was not applied: safe to send again whatever its method (azure-core retries
        # a POST only on 500, 503 and 504, or when a Retry-After header comes with the 429).
        if response.http_response.status_code == 429:
            _say_throttled("Azure Batch", response.http_response.headers.get("Retry-After"))
            return bool(settings["total"])
        return super().is_retry(settings, response)


class _ThrottledIsAnError:
    """Between the Storage retry policy and the rest of the pipeline: a 429 answer becomes an error, which
    that policy retries. Azure Storage throttles with 503, so its SDK takes 429 as final; but gateways and
    proxies in front of storage answer 429."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def send(self, request: Any) -> Any:
        return self._checked(self.inner.send(request))

    def _checked(self, response: Any) -> Any:
        if response.http_response.status_code in (429, 503):
            _say_throttled("Azure Storage", response.http_response.headers.get("Retry-After"))
        if response.http_response.status_code == 429:
            raise HttpResponseError(response=response.http_response)
        return response


class _AsyncThrottledIsAnError(_ThrottledIsAnError):
    """`_ThrottledIsAnError` in an async pipeline."""

    async def send(self, request: Any) -> Any:  # type: ignore[override]
        response = await self.inner.send(request)
        return self._checked(response)


def _storage_backoff(settings: dict[str, Any]) -> float:
    """Our back-off for Storage, honouring Retry-After."""
    last = settings["history"][-1] if settings["history"] else None
    response = last and (last.http_response or getattr(last.error, "response", None))
    header = response.headers.get("Retry-After") if response is not None else None
    try:
        retry_after = float(header) if header else None
    except ValueError:  # an HTTP date: rare; the exponential back-off is fine
        retry_after = None
    return backoff(settings["count"] + 1, retry_after)


class _OurStorageRetry:
    """The Storage SDK's retry (its default waits 15 s and more) with our back-off, honouring Retry-After,
    and retrying 429 too (`_throttled` turns it into an error before the policy sees it)."""

    _throttled: type[_ThrottledIsAnError] = _ThrottledIsAnError

    def __init__(self) -> None:
        super().__init__(retry_total=HTTP_RETRIES)  # type: ignore[call-arg]

    @property
    def next(self) -> Any:
        return self._next

    @next.setter
    def next(self, policy: Any) -> None:  # the pipeline links the policies after building them
        self._next = self._throttled(policy)

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return _storage_backoff(settings)


class StorageRetry(_OurStorageRetry, ExponentialRetry):
    """Our retry for the sync Storage clients."""


class AsyncStorageRetry(_OurStorageRetry, AsyncExponentialRetry):
    """Our retry for the async Storage clients."""

    _throttled = _AsyncThrottledIsAnError


# Files up to SINGLE_PUT_BYTES go in one PUT (the SDK's default is 64 MiB: a large file would go up on one
# thread); larger ones as blocks of that size, several at once. Each block in flight is held in memory:
# Azurite takes 69-86 MB/s whatever the block size (8-64 MiB; 4 MiB in ./dev bench scale), so small blocks cost nothing.
SINGLE_PUT_BYTES = 4 << 20

# azure-storage-blob 12.31 speaks a newer service version than Azurite accepts (docs/local-stack.md: API version).
AZURITE_API_VERSION = "2025-11-05"


def _tls(settings: AzureConnection) -> dict[str, Any]:
    """On the local stack over HTTPS, trust its development certificate (and nothing else)."""
    return {"connection_verify": settings.ca_file} if settings.ca_file else {}


def batch_client(settings: AzureConnection) -> BatchClient:
    """A BatchClient for the configured account: Shared Key, or Entra ID tokens when use_entra_id is set."""
    if settings.use_entra_id:
        credential: Any = entra.credential(settings)
    else:
        credential = AzureNamedKeyCredential(*settings.batch_account)
    return BatchClient(settings.batch_url, credential, retry_policy=BatchRetry(), **_tls(settings))


def _session(connections: int, url: str) -> requests.Session:
    """A requests session keeping up to `connections` connections open (azure-core keeps 10): transfers
    from more threads than that would otherwise open and drop a connection per request. It reads the
    environment's proxy settings once, here: requests would read them again on every request (a third of
    a small upload's CPU)."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(url)  # HTTPS_PROXY / NO_PROXY, as requests reads them
    adapter = BiggerBlockSizeHTTPAdapter(pool_maxsize=connections, max_retries=Retry(total=False, redirect=False))
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return session


def _verify(settings: AzureConnection) -> dict[str, Any]:
    """What a session that does not read the environment per request must be told: the CA bundle that
    REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE names, as requests would have used it."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return _tls(settings) or ({"connection_verify": bundle} if bundle else {})


def blob_service(settings: AzureConnection, connections: int = 0) -> BlobServiceClient:
    """A BlobServiceClient for the configured storage account (Azurite when local); with `connections`,
    one that many threads can share."""
    extra: dict[str, Any] = {
        "retry_policy": StorageRetry(),
        "max_single_put_size": SINGLE_PUT_BYTES,
        "max_block_size": SINGLE_PUT_BYTES,
        # What a download holds in memory at once (else its first 32 MiB): the file rows of 100,000 files
        # are 180 MB, streamed to disk (storage.download_outputs).
        "max_single_get_size": SINGLE_PUT_BYTES,
        "max_chunk_get_size": SINGLE_PUT_BYTES,
    }
    if connections:
        extra["transport"] = RequestsTransport(session=_session(connections, settings.blob_url), **_verify(settings))
    if settings.local:
        extra["api_version"] = AZURITE_API_VERSION
    if settings.use_entra_id:
        return BlobServiceClient(settings.blob_url, credential=entra.credential(settings), **extra, **_tls(settings))
    name, key = settings.storage_account
    return BlobServiceClient(
        settings.blob_url, credential={"account_name": name, "account_key": key}, **extra, **_tls(settings)
    )


def aio_transport(settings: AzureConnection) -> Any:
    """An aiohttp transport for Storage, made in the loop that will use it. It reads the environment's CA
    bundle once, here, into one TLS context for the session: azure-core would load the bundle's file anew
    for every request."""
    import ssl  # here, not at import: aiohttp alone takes 125 ms to import, and only uploads need it

    import aiohttp
    from azure.core.pipeline.transport import AioHttpTransport

    verify = _verify(settings).get("connection_verify")
    tls = ssl.create_default_context(cafile=verify) if verify else True
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )
    return AioHttpTransport(session=session, session_owner=True)


def storage_proxies(settings: AzureConnection) -> dict[str, str] | None:
    """The environment's proxies for Storage, read once (as `blob_service`'s shared session does)."""
    return requests.utils.get_environ_proxies(settings.blob_url) or None


def async_blob_service(settings: AzureConnection) -> Any:
    """An async BlobServiceClient (aiohttp) for many small transfers from one event loop: a third less CPU
    a request than threads of the sync client. Called in the loop that will use it."""
    from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

    extra: dict[str, Any] = {
        "retry_policy": AsyncStorageRetry(),
        "transport": aio_transport(settings),
        "proxies": storage_proxies(settings),
    }
    if settings.local:
        extra["api_version"] = AZURITE_API_VERSION
    if settings.use_entra_id:
        credential: Any = entra.AsyncCredential(entra.credential(settings))
    else:
        name, key = settings.storage_account
        credential = {"account_name": name, "account_key": key}
    return AsyncBlobServiceClient(settings.blob_url, credential=credential, **extra)
