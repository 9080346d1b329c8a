"""The inputs of a run: blobs with an identity that changes when their content does, and their names on a node."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


def content_hash(*parts: object, digits: int = 32) -> str:
    """A key derived from `parts` (JSON-encoded): what every content-keyed output is stored under."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:digits]


@dataclass(frozen=True, slots=True)
class InputBlob:
    """One input: its name as users know it, where its bytes are in storage and, for a local file, where it is
    on this machine. Slots, keys computed once:
    a run holds one of these per file (100,000 of them: 40 MB less than with a __dict__ each)."""

    name: str
    container: str
    blob: str
    size: int
    version: str  # content hash or ETag: it changes when the content does
    # The input's identity in 20 hex digits: the key of its row in part files, the same in every run.
    row_key: str = field(init=False, repr=False, compare=False)
    # Its name alone (12 hex digits): a new version of the same name is a changed file, not a new one.
    name_key: str = field(init=False, repr=False, compare=False)
    # A local file's folder, its path less its name (one string shared by a folder's files): where
    # upload_inputs reads it. Empty for a blob already in storage.
    local_base: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        row_key = content_hash(self.name, self.container, self.blob, self.version, digits=20)
        object.__setattr__(self, "row_key", row_key)
        object.__setattr__(self, "name_key", content_hash(self.name, self.container, digits=12))

    @property
    def local_name(self) -> str:
        return local_name(self.name)

    @property
    def local_path(self) -> str:
        return self.local_base + self.name


class InputList(Sequence[InputBlob]):
    """The inputs a step returns: a sequence Prefect does not look into. A task run's returned list has each
    item tracked by the flow run (to link it to the task run, for the rest of the run): 22 MB for 100,000
    inputs. Callers sort it into a list of their own."""

    __slots__ = ("_items",)

    def __init__(self, items: list[InputBlob]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> InputBlob:  # type: ignore[override]  # indexes only, no slices
        return self._items[i]

    def __iter__(self) -> Iterator[InputBlob]:
        return iter(self._items)


def local_name(name: str, limit: int = 150) -> str:
    """A file name for the node: the input's base name, without control characters, and short enough for
    any file system (a long one keeps its start and extension and gains a hash)."""
    base = _UNSAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]) or "input"
    if base in (".", ".."):
        base = "input" + base
    if len(base.encode()) <= limit:
        return base
    stem, dot, ext = base.rpartition(".")
    ext = f".{ext}" if dot and len(ext) <= 16 else ""
    head = (stem if ext else base).encode()[: limit - 30].decode(errors="ignore")
    return f"{head}~{hashlib.sha256(base.encode()).hexdigest()[:8]}{ext}"


def upload_blob_name(relative: str, sha256: str) -> str:
    """Uploads are content-addressed: a file never overwrites another's bytes."""
    return f"uploads/{sha256[:32]}/{local_name(relative)}"


def describe(files: list[str]) -> str:
    """A pack's files as a short label: one name, or the first and last and how many."""
    if len(files) == 1:
        return files[0]
    return f"{files[0]} … {files[-1]} ({len(files)} files)"
