"""Many small files put as blobs from one event loop, each with one PUT.

The PUT goes through azure-core's pipeline straight to the container, signed by a SAS that allows creating
and writing blobs in that container only and lives in memory for SAS_LIFETIME: 0.8-1.0 ms of CPU a file on
the project's 2-core machine, against 1.8-1.9 ms through the Storage SDK's `upload_blob`, which builds a
client of its own for every blob (3,000 files each way; docs/scale.md). Whatever is not a clean answer (a
fault, a refusal, a SAS that expired) sends that file through `upload_blob` instead, and after throttling
or a refusal every later file too; its retries (`AsyncStorageRetry`) and errors are those of every other
Storage call: the first PUT is one attempt, not a retry layer of its own. The loop runs in a thread of its
own, so a caller that already runs one (Prefect's) is not disturbed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from azure.core import AsyncPipelineClient
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.core.pipeline.policies import HeadersPolicy, ProxyPolicy
from azure.core.rest import HttpRequest

from topn.tasks.clients import aio_transport, async_blob_service, blob_service, storage_proxies
from topn.tasks.sas import SasIssuer
from topn.tasks.settings import AzureConnection

IN_FLIGHT = 16  # Azurite answers small PUTs fastest with 16-32 in flight (docs/local-stack.md: Upload rate)
SAS_LIFETIME = timedelta(hours=4)  # puts after that go through upload_blob, as any refused one does
STAY_AWAY = {401, 403, 429, 503}  # answers after which every file goes through upload_blob

Name = Callable[[int, bytes], str]  # the blob name of the i-th file, from its content


def put_files(
    settings: AzureConnection, container: str, paths: Sequence[str], name: Name, overwrite: bool = False
) -> None:
    """Puts each file, read whole (each is small), as the blob `name(i, data)` names. Without `overwrite`, a
    blob already there is left as it is (content-addressed names: it holds the same bytes). The first
    failure stands, once the puts in flight are done; what was put stays put."""
    if not paths:
        return
    container_url = _signed(settings, container)
    with ThreadPoolExecutor(1, thread_name_prefix="topn-puts") as loop_thread:
        work = _put_all(settings, container, container_url, paths, name, overwrite)
        loop_thread.submit(asyncio.run, work).result()


def _signed(settings: AzureConnection, container: str) -> str | None:
    """The container's URL with a create-and-write SAS; None if none can be had (with Entra ID, a principal
    that may write blobs but not get a user delegation key): then every file goes through upload_blob."""
    try:
        issuer = SasIssuer(settings, blob_service(settings), datetime.now(UTC) + SAS_LIFETIME)
        return issuer.container(container, "cw")
    except AzureError:
        return None


async def _put_all(
    settings: AzureConnection,
    container: str,
    container_url: str | None,
    paths: Sequence[str],
    name: Name,
    overwrite: bool,
) -> None:
    todo: Iterator[int] = iter(range(len(paths)))
    failures: list[BaseException] = []
    async with async_blob_service(settings) as service, _Puts(settings, container_url, service.api_version) as fast:
        client = service.get_container_client(container)

        async def worker() -> None:
            for i in todo:  # one iterator shared by the workers: each file once
                if failures:
                    return
                try:
                    with open(paths[i], "rb") as f:
                        data = f.read()
                    blob = name(i, data)
                    if not await fast.put(blob, data, overwrite):
                        await client.upload_blob(blob, data, overwrite=overwrite)
                except ResourceExistsError:
                    pass
                except Exception as e:  # the first failure stands, raised below
                    failures.append(e)

        await asyncio.gather(*(worker() for _ in range(min(IN_FLIGHT, len(paths)))))
    if failures:
        raise failures[0]


class _Puts:
    """One PUT of a whole blob (Put Blob) to a SAS-signed container URL, through azure-core's pipeline with
    the transport and proxies of the SDK's clients and no retry: that is upload_blob's, on the way back."""

    def __init__(self, settings: AzureConnection, container_url: str | None, api_version: str) -> None:
        self._base, _, self._sas = (container_url or "").partition("?")
        self._client = None
        self._on = bool(container_url)
        if container_url:
            headers = HeadersPolicy({"x-ms-version": api_version, "x-ms-blob-type": "BlockBlob"})
            policies = [headers, ProxyPolicy(proxies=storage_proxies(settings))]
            self._client = AsyncPipelineClient(self._base, policies=policies, transport=aio_transport(settings))

    async def __aenter__(self) -> _Puts:
        if self._client is not None:
            await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.__aexit__(*exc)

    async def put(self, blob: str, data: bytes, overwrite: bool) -> bool:
        """Whether the blob now holds `data`: put, or (without `overwrite`) there already. False for any
        other answer or failure, which the caller's upload_blob then meets with its retries and errors."""
        if not self._on or self._client is None:
            return False
        headers = {} if overwrite else {"If-None-Match": "*"}  # a content-named blob there has these bytes
        url = f"{self._base}/{quote(blob, safe='/~')}?{self._sas}"
        try:
            response = await self._client.send_request(HttpRequest("PUT", url, headers=headers, content=data))
        except Exception:  # whatever it was, upload_blob meets it again and says what it is
            return False
        if response.status_code == 201:
            return True
        if response.status_code in STAY_AWAY:  # throttled or refused: upload_blob alone from here on, which
            self._on = False  # waits as the service asks (and says so) or says why it is refused
        exists = response.status_code == 409 and response.headers.get("x-ms-error-code") == "BlobAlreadyExists"
        return exists and not overwrite
