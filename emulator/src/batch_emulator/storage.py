"""Blob Storage over plain HTTP with SAS URLs, as a node agent uses it (Azurite or Azure alike)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

TIMEOUT = 60


def shown(url: str) -> str:
    """A URL as it may be printed: never its query string, which holds the SAS signature."""
    return url.split("?", 1)[0]


def blob_url(container_url: str, name: str) -> str:
    parts = urlsplit(container_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + quote(name, safe="/~")))


def download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def list_blobs(container_url: str, prefix: str = "") -> list[str]:
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
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            root = ET.fromstring(response.read())
        names += [n.text or "" for n in root.iter("Name")]
        marker = root.findtext("NextMarker") or ""
        if not marker:
            return names


def upload(container_url: str, name: str, source: Path) -> None:
    with open(source, "rb") as body:
        request = urllib.request.Request(
            blob_url(container_url, name), data=body, method="PUT",
            headers={"x-ms-blob-type": "BlockBlob", "Content-Length": str(source.stat().st_size),
                     "Content-Type": "application/octet-stream"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=TIMEOUT).close()


def http_status(error: BaseException) -> int | None:
    return error.code if isinstance(error, urllib.error.HTTPError) else None
