"""Many small files put as blobs from one event loop (azure-storage-blob's async client over aiohttp).

Threads of the sync client spend their CPU in requests' per-request work and in taking turns at the GIL:
on the project's 2-core machine 1.8-1.9 ms of CPU a small PUT from 16 threads, against 1.3-1.5 ms from one
loop with 16-32 in flight (docs/scale.md: Upload CPU). The loop runs in a thread of its own, so a caller
that already runs one (Prefect's) is not disturbed. Retries are the client's (`AsyncStorageRetry`), as for
every other Storage call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from azure.core.exceptions import ResourceExistsError

from topn.tasks.clients import async_blob_service
from topn.tasks.settings import AzureConnection

IN_FLIGHT = 16  # Azurite answers small PUTs fastest with 16-32 in flight (docs/local-stack.md: Upload rate)

Name = Callable[[int, bytes], str]  # the blob name of the i-th file, from its content


def put_files(
    settings: AzureConnection, container: str, paths: Sequence[str], name: Name, overwrite: bool = False
) -> None:
    """Puts each file, read whole (each is small), as the blob `name(i, data)` names. Without `overwrite`, a
    blob already there is left as it is (content-addressed names: it holds the same bytes). The first
    failure stands, once the puts in flight are done; what was put stays put."""
    if not paths:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="topn-puts") as loop_thread:
        loop_thread.submit(asyncio.run, _put_all(settings, container, paths, name, overwrite)).result()


async def _put_all(
    settings: AzureConnection, container: str, paths: Sequence[str], name: Name, overwrite: bool
) -> None:
    todo: Iterator[int] = iter(range(len(paths)))
    failures: list[BaseException] = []
    async with async_blob_service(settings) as service:
        client = service.get_container_client(container)

        async def worker() -> None:
            for i in todo:  # one iterator shared by the workers: each file once
                if failures:
                    return
                try:
                    with open(paths[i], "rb") as f:
                        data = f.read()
                    await client.upload_blob(name(i, data), data, overwrite=overwrite)
                except ResourceExistsError:
                    pass
                except Exception as e:  # the first failure stands, raised below
                    failures.append(e)

        await asyncio.gather(*(worker() for _ in range(min(IN_FLIGHT, len(paths)))))
    if failures:
        raise failures[0]
