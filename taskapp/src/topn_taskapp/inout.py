"""Opening inputs and outputs with one-line failures that name the file (docs/taskapp.md: Exit status)."""

from __future__ import annotations

import json
from pathlib import Path

from topn_taskapp.atomic import AtomicFiles, Scratch
from topn_taskapp.errors import Failure, shown

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from typing import IO


def open_input(path: Path, encoding: str | None = None, label: str | None = None) -> IO:
    """Opens an input file: binary, or text in `encoding`. `label` names it in messages (default: its path)."""
    label = label or repr(shown(path))
    if path.is_dir():
        raise Failure(f"cannot read {label}: it is a directory, not a file")
    try:
        return open(path, "rb") if encoding is None else open(path, encoding=encoding)
    except FileNotFoundError:
        raise Failure(f"cannot read {label}: no such file") from None
    except OSError as e:
        raise Failure(f"cannot read {label}: {e.strerror or e}") from None


def writing(paths: list[Path]) -> AtomicFiles:
    """The outputs, opened now (so an unwritable one fails before any work), in place when the `with` ends."""
    for path in paths:
        if path.is_dir():
            raise Failure(f"cannot write {shown(path)!r}: it is a directory")
        if not path.parent.is_dir():
            raise Failure(f"cannot write {shown(path)!r}: its folder does not exist")
    try:
        return AtomicFiles(paths)
    except OSError as e:
        raise Failure(f"cannot write {shown(paths[0])!r}: {e.strerror or e}") from None


def scratch(beside: Path) -> Scratch:
    """A scratch file next to the output `beside`, removed when the `with` ends."""
    try:
        return Scratch(beside)
    except OSError as e:
        raise Failure(f"cannot write beside {shown(beside)!r}: {e.strerror or e}") from None


def write_json(out: IO[str], result: dict) -> None:
    """One JSON object on one line, non-ASCII kept as is."""
    json.dump(result, out, ensure_ascii=False)
    out.write("\n")
