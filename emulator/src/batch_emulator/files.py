"""Files in a node's folder as the service lists and serves them: entries with their properties, one file's
headers, byte ranges. A path never leads out of the folder it is asked under."""

from __future__ import annotations

import mimetypes
import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from batch_emulator import wire
from batch_emulator.errors import BatchError


def not_found(path: str) -> BatchError:
    return BatchError(404, "FileNotFound", "The specified file does not exist.", FilePath=path)


def inside(root: Path, path: str) -> Path | None:
    """`root/path`, None if it would lead out of `root`."""
    target = (root / path).resolve()
    return target if target.is_relative_to(root.resolve()) else None


def entries(root: Path, url: str, recursive: bool) -> list[dict]:
    """The list-files items of what is in `root` (everything under it if `recursive`); `url` is the folder's."""
    if not root.is_dir():
        return []
    paths = sorted(root.rglob("*")) if recursive else sorted(root.iterdir())
    return [_entry(root, p, url) for p in paths]


def _entry(root: Path, p: Path, url: str) -> dict:
    name = p.relative_to(root).as_posix()
    entry: dict = {"name": name, "url": f"{url}/{quote(name, safe='')}", "isDirectory": p.is_dir()}
    if not p.is_dir():
        stat = p.stat()
        entry["properties"] = {
            "creationTime": wire.rfc3339(datetime.fromtimestamp(stat.st_ctime, UTC)),
            "lastModified": wire.rfc3339(datetime.fromtimestamp(stat.st_mtime, UTC)),
            "contentLength": str(stat.st_size),
            "contentType": content_type(p),
            "fileMode": f"0{stat.st_mode:o}",
        }
    return entry


def headers(target: Path, stat: os.stat_result, url: str) -> dict[str, str]:
    """The headers of a file's GET or HEAD (get_task_file_properties, ...); `url` is the file's."""
    return {
        "Last-Modified": wire.rfc1123(datetime.fromtimestamp(stat.st_mtime, UTC)),
        "ocp-creation-time": wire.rfc1123(datetime.fromtimestamp(stat.st_ctime, UTC)),
        "ocp-batch-file-isdirectory": str(target.is_dir()).lower(),
        "ocp-batch-file-mode": f"0{stat.st_mode:o}",
        "ocp-batch-file-url": url,
        "Content-Type": content_type(target),
    }


def content_type(path: Path) -> str:
    """What the service tells of a file's type: by its extension (`text/plain` for stdout.txt), else bytes."""
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def byte_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, end) of an `ocp-range: bytes=first-last` (or `-suffix`) header; 416 if it cannot be served."""
    if not header:
        return 0, size
    try:
        first, last = header.removeprefix("bytes=").split("-")
        start = int(first) if first else max(0, size - int(last))
        end = min(size, int(last) + 1) if first and last else size
    except ValueError:
        start, end = -1, -1
    if not 0 <= start <= end:
        raise BatchError(416, "InvalidRange", f"The range {header!r} is not satisfiable.")
    return start, end


def read(target: Path, start: int, end: int) -> bytes:
    with open(target, "rb") as f:
        f.seek(start)
        return f.read(max(0, end - start))
