"""The full-counts file that `count --counts` writes and `merge` reads.

A JSON header line, then one `word<TAB>count` line per word in rank order. Words never hold a tab
or a line break (they are letters, digits and apostrophes), so no quoting is needed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from typing import IO

FORMAT = "topn-counts/1"


class CountsFileError(ValueError):
    """The file is not a counts file this version can read."""


def write_counts(out: IO[str], file: str, skipped: str | None, ranked: list[tuple[str, int]]) -> None:
    """Writes a file's full counts, most frequent first."""
    header = {"format": FORMAT, "file": file, "skipped": skipped, "distinct": len(ranked)}
    out.write(json.dumps(header, ensure_ascii=False) + "\n")
    out.writelines(f"{word}\t{n}\n" for word, n in ranked)


def read_counts(lines: IO[str]) -> tuple[dict, Counter[str]]:
    """Reads a counts file: its header and its counts."""
    try:
        header = json.loads(lines.readline())
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CountsFileError(f"not a counts file written by 'count --counts' (expected {FORMAT})")
    counts: Counter[str] = Counter()
    for word, n in _entries(lines):
        counts[word] += n
    if len(counts) != header.get("distinct"):
        raise CountsFileError("truncated: fewer words than its header announces")
    return header, counts


def _entries(lines: IO[str]) -> Iterator[tuple[str, int]]:
    for number, line in enumerate(lines, start=2):
        word, tab, n = line.rstrip("\n").partition("\t")
        if not (word and tab and n.isdigit() and int(n) > 0):
            raise CountsFileError(f"line {number} is not 'word<TAB>count'")
        yield word, int(n)
