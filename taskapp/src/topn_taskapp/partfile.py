"""The part file, `topn-part/1`: what `count-many` writes, and what `merge` reads and can write again.

    {"format": "topn-part/1", "files": F, "counted": C, "words": W, "distinct": D}   (line 1: the header)
    F lines: one compact JSON object per input file, the fields of `count`'s output and its `key`
    D lines: word<TAB>count, the files' full counts summed, most frequent first, ties by word

C is the number of rows not skipped, W the sum of the counts. Every line ends with a newline and the
header announces every number, so a file cut short anywhere is caught on reading.

A *members file* (`count-many --members`) is one one-file part file after another, one per input in order:
each input's own full counts, so that a pack can later be edited rather than counted again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from operator import itemgetter

from topn_taskapp.wordcount import top_n

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from typing import IO

FORMAT = "topn-part/1"
ROW_FIELDS = ("key", "file", "bytes", "words", "distinct", "top", "skipped")
_ROW_KEYS = frozenset(ROW_FIELDS)
_HEADER_NUMBERS = ("files", "counted", "words", "distinct")
_HEADER_LIMIT = 1 << 16  # a header is one short line; do not read a whole foreign file looking for its end


class PartFileError(ValueError):
    """The file is not a part file this version can read."""


def row_line(row: dict) -> str:
    """One per-file row as a line of a part file (and of `merge --files`)."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


class PartWriter:
    """Builds a part file. The header comes first but needs the rows' totals, so rows go to `spool` as they
    come (never all in memory); `counts` is summed by the caller; `write` then puts the file together."""

    def __init__(self, spool: IO[str]) -> None:
        self._spool = spool
        self.files = 0
        self.counted = 0
        self.counts: Counter[str] = Counter()

    def add_row(self, row: dict) -> None:
        """Adds one file's row (its counts go to `counts` separately: a row only has its top N)."""
        self._spool.write(row_line(row))
        self.files += 1
        self.counted += row["skipped"] is None

    def write(self, out: IO[str]) -> None:
        """Writes the whole part file to `out`."""
        ranked = top_n(self.counts, len(self.counts))
        header = {
            "format": FORMAT,
            "files": self.files,
            "counted": self.counted,
            "words": sum(n for _, n in ranked),
            "distinct": len(ranked),
        }
        out.write(json.dumps(header) + "\n")
        self._spool.seek(0)
        while chunk := self._spool.read(1 << 20):
            out.write(chunk)
        out.writelines(f"{word}\t{n}\n" for word, n in ranked)


def write_member(out: IO[str], row: dict, counts: Counter[str]) -> None:
    """One input's one-file part file, as a members file holds it: what `PartWriter` writes for that input
    alone, byte for byte, made here without its spool and copies (every count task pays for it)."""
    ranked = sorted(counts.items())  # by word, then (stable) most frequent first: the part file's order
    ranked.sort(key=itemgetter(1), reverse=True)
    header = {
        "format": FORMAT,
        "files": 1,
        "counted": int(row["skipped"] is None),
        "words": sum(counts.values()),
        "distinct": len(ranked),
    }
    out.write(json.dumps(header) + "\n" + row_line(row))
    out.write("".join([f"{word}\t{n}\n" for word, n in ranked]))


def member_blocks(lines: IO[str]) -> Iterator[tuple[str, list[str]]]:
    """A members file's one-file part files in order: each its row's key and its lines (checked for shape
    and length only: a member's counts are checked when it is read as a part)."""
    number = 0
    while header_line := lines.readline(_HEADER_LIMIT):
        number += 1
        header = _header(header_line)
        if header["files"] != 1 or not header_line.endswith("\n"):
            raise PartFileError(f"line {number} does not start a one-file part")
        block = [header_line]
        for _ in range(1 + header["distinct"]):
            line = lines.readline()
            number += 1
            if not line.endswith("\n"):
                raise PartFileError(f"truncated at line {number}")
            block.append(line)
        try:
            key = json.loads(block[1])["key"]
        except (ValueError, KeyError, TypeError):
            raise PartFileError(f"line {number - header['distinct']} is not a per-file row") from None
        yield str(key), block


class PartReader:
    """Reads a part file in one pass: `header` on construction, then `rows()` one at a time, then
    `add_counts()`, which also checks the file against its header."""

    def __init__(self, lines: IO[str]) -> None:
        self._lines = lines
        self._number = 1  # of the line last read, for messages
        self.header = _header(lines.readline(_HEADER_LIMIT))
        self._rows_left = self.header["files"]
        self._counted = self._words = 0

    def rows(self) -> Iterator[dict]:
        """The per-file rows not read yet, each checked."""
        while self._rows_left:
            row = self._row(self._read("rows"))
            self._rows_left -= 1
            self._counted += row["skipped"] is None
            self._words += row["words"]
            yield row

    def add_counts(self, into: Counter[str]) -> None:
        """Adds the summed counts to `into` (skipping any rows not read) and checks the totals."""
        for _ in self.rows():
            pass
        if (self._counted, self._words) != (self.header["counted"], self.header["words"]):
            raise PartFileError("its rows do not add up to its header's counted files and words")
        words, previous = 0, None
        for _ in range(self.header["distinct"]):
            word, n = self._entry(self._read("words"))
            if previous is not None and (-n, word) <= previous:  # also rules out a word listed twice
                raise PartFileError(f"line {self._number} is out of order (most frequent first, ties by word)")
            previous = (-n, word)
            into[word] += n
            words += n
        if words != self.header["words"]:
            raise PartFileError("its counts do not add up to its header's words")
        if self._lines.readline(1):
            raise PartFileError(f"more lines than its header announces (line {self._number + 1})")

    def _read(self, what: str) -> str:
        line = self._lines.readline()
        self._number += 1
        if not line.endswith("\n"):
            raise PartFileError(f"truncated: fewer {what} than its header announces (line {self._number})")
        return line[:-1]

    def _row(self, line: str) -> dict:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not (
            isinstance(row, dict)
            and row.keys() == _ROW_KEYS
            and all(type(row[k]) is int for k in ("bytes", "words", "distinct"))
            and isinstance(row["top"], list)
            and (row["skipped"] is None or isinstance(row["skipped"], str))
        ):
            raise PartFileError(f"line {self._number} is not a per-file row")
        return row

    def _entry(self, line: str) -> tuple[str, int]:
        word, tab, n = line.partition("\t")
        if not (word and tab and n.isascii() and n.isdigit() and int(n) > 0):
            raise PartFileError(f"line {self._number} is not 'word<TAB>count'")
        return word, int(n)


def _header(line: str) -> dict:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PartFileError(f"not a part file (expected {FORMAT})")
    if not all(type(header.get(k)) is int and header[k] >= 0 for k in _HEADER_NUMBERS):
        raise PartFileError(f"its header lacks one of {', '.join(_HEADER_NUMBERS)}")
    return header
