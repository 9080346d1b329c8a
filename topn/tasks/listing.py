"""List Blobs, read lean: names, sizes and ETags straight from the XML answer.

ContainerClient.list_blobs turns each blob into a model object through the SDK's generic XML deserializer,
which costs more than the listing itself: 2.2 s of the 3.2 s it takes to list 10,000 blobs from Azurite,
against 0.2 s to read the same pages with ElementTree (`./dev bench incremental` lists the prefix on
every scheduled run). The request still goes through the container client's own pipeline, so credentials
(Shared Key or Entra ID), retries and the transport are the same as for every other call.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceResponseError
from azure.core.rest import HttpRequest
from azure.storage.blob import ContainerClient


@dataclass(frozen=True, slots=True)
class ListedBlob:
    name: str
    size: int
    etag: str  # without its quotes
    modified: str  # Last-Modified as sent: parsed only by those who need it

    @property
    def last_modified(self) -> datetime:
        return parsedate_to_datetime(self.modified)


# A prefix with folders is listed one folder per request, this many at once: Storage lists a page in one
# go, so a 10,000-blob prefix of ten folders takes one request's time instead of two in a row. Beyond
# MAX_FOLDERS folders, one request per folder costs more than it saves: the prefix is listed whole.
FOLDERS_AT_ONCE, MAX_FOLDERS = 16, 64


def list_blobs(container: ContainerClient, prefix: str = "") -> Iterator[ListedBlob]:
    """The blobs under `prefix`, in name order, 5,000 a request. Raises ResourceNotFoundError when the
    container does not exist, HttpResponseError for any other refusal."""
    marker = ""
    while True:
        page = _page(container, prefix, marker)
        yield from _blobs(page)
        marker = page.findtext("NextMarker") or ""
        if not marker:
            return


def list_tree(container: ContainerClient, prefix: str = "") -> list[ListedBlob]:
    """Every blob under `prefix`, as list_blobs gives them, its folders (up to MAX_FOLDERS) listed at once."""
    top: list[ListedBlob] = []
    folders: list[str] = []
    marker = ""
    while True:
        page = _page(container, prefix, marker, delimiter="/")
        top += _blobs(page)
        folders += [p.findtext("Name", "") for p in page.iter("BlobPrefix")]
        marker = page.findtext("NextMarker") or ""
        if not marker:
            break
    if len(folders) == 1 and not top:  # one folder alone (incoming/2026/): its folders are the ones to split on
        return list_tree(container, folders[0])
    if len(folders) > MAX_FOLDERS:
        return list(list_blobs(container, prefix))
    with ThreadPoolExecutor(FOLDERS_AT_ONCE) as pool:
        below = pool.map(lambda folder: list(list_blobs(container, folder)), folders)
        return sorted([*top, *(blob for listed in below for blob in listed)], key=lambda b: b.name)


def _blobs(page: ET.Element) -> Iterator[ListedBlob]:
    for blob in page.iter("Blob"):
        props = blob.find("Properties")
        if props is None:
            raise ServiceResponseError("a List Blobs answer without a blob's properties")
        yield ListedBlob(
            blob.findtext("Name", ""),
            int(props.findtext("Content-Length", "0")),
            props.findtext("Etag", "").strip('"'),
            props.findtext("Last-Modified", ""),
        )


def _page(container: ContainerClient, prefix: str, marker: str, delimiter: str = "") -> ET.Element:
    params = {"restype": "container", "comp": "list", "prefix": prefix}
    if delimiter:
        params["delimiter"] = delimiter
    if marker:
        params["marker"] = marker
    request = HttpRequest(
        "GET",
        container.url,
        params=params,
        headers={"x-ms-version": container.api_version, "Accept": "application/xml"},
    )
    # The generated client's send_request: its pipeline signs and retries like the SDK's own operations.
    response = container._client._send_request(request)
    if response.status_code == 404:
        raise ResourceNotFoundError(response=response)
    if response.status_code != 200:
        raise HttpResponseError(response=response)
    try:
        return ET.fromstring(response.read())
    except ET.ParseError as e:  # a body cut short on its way: transient, the task's retry lists again
        raise ServiceResponseError(f"an unreadable List Blobs answer ({e})") from None
