"""What `merge` reads: its inputs (files, and folders of them in path order), each a counts file or a part
file, added into a Counter with its rows handed on."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from topn_taskapp.countsfile import FORMAT as COUNTS_FORMAT
from topn_taskapp.countsfile import CountsFileError, read_counts
from topn_taskapp.errors import Failure, shown
from topn_taskapp.inout import open_input
from topn_taskapp.partfile import FORMAT as PART_FORMAT
from topn_taskapp.partfile import PartFileError, PartReader

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable
    from typing import IO

    OnRow = Callable[[dict], object] | None

_HEADER_LIMIT = 1 << 16  # a header is one short line; do not read a whole foreign file looking for its end


def input_files(inputs: list[Path]) -> Iterator[Path]:
    """Each input in turn; for a folder, every regular file below it in path order, hidden names skipped
    (a folder, not a list of names, is how thousands of inputs reach the command: argv has a limit)."""
    for path in inputs:
        if not path.is_dir():
            yield path  # a missing one is reported when opened, in its turn
            continue
        empty = True
        for file in _files_below(path):
            empty = False
            yield file
        if empty:
            raise Failure(f"cannot merge folder {shown(path)!r}: no input files in it (hidden names are skipped)")


def _files_below(folder: Path) -> Iterator[Path]:
    # Sorted name by name at each level, and walked lazily: the order is stable, the memory one folder's names.
    try:
        with os.scandir(folder) as scan:
            entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise Failure(f"cannot read folder {shown(folder)!r}: {e.strerror or e}") from None
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _files_below(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)


def merge_file(path: Path, total: Counter[str], on_row: OnRow, rows_needed: bool = False) -> int:
    """Adds one counts or part file's counts to `total` and hands its rows to `on_row`; returns how many
    files it counted (not skipped)."""
    with open_input(path, "utf-8") as lines:
        try:
            if (kind := _format(lines)) == PART_FORMAT:
                return _merge_part(lines, total, on_row)
            if kind != COUNTS_FORMAT:
                raise _Unmergeable(f"not a counts file or part file (expected {COUNTS_FORMAT} or {PART_FORMAT})")
            if rows_needed:
                raise _Unmergeable("a counts file has no per-file row to put in a part file (merge it with --output)")
            header, counts = read_counts(lines)
            total.update(counts)
            return header["skipped"] is None
        except (_Unmergeable, CountsFileError, PartFileError, UnicodeDecodeError) as e:
            raise Failure(f"cannot merge {shown(path)!r}: {e}") from None
        except OSError as e:
            raise Failure(f"cannot read {shown(path)!r}: {e.strerror or e}") from None


class _Unmergeable(ValueError):
    """A file of neither format, or one that cannot go where it is asked to."""


def _merge_part(lines: IO[str], total: Counter[str], on_row: OnRow) -> int:
    reader = PartReader(lines)
    for row in reader.rows():
        if on_row:
            on_row(row)
    reader.add_counts(total)
    return reader.header["counted"]


def _format(lines: IO[str]) -> str | None:
    """The format its header line names (None for anything else), the file rewound for its reader."""
    try:
        header = json.loads(lines.readline(_HEADER_LIMIT))
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    lines.seek(0)
    return header.get("format") if isinstance(header, dict) else None
