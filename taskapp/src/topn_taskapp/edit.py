"""`merge --part PART --edit BASE --drop DROP INPUT...`: a merge of a merge tree's node whose children
changed a little, made from its last output instead of from all its children.

BASE is the node's earlier part file (the merge of children D1..Dm), DROP the parts of the children that
left it (in order), INPUT those that came (in order). The i-th input takes the place of the i-th drop: its
rows where that drop's rows were in BASE, its counts for that drop's (counts add up, so taking a part's
counts out is exact); inputs beyond the drops go at the end, drops beyond the inputs just leave. The part
file written is the one a merge of the node's new children would write, byte for byte, at the cost of
reading BASE and the parts that changed rather than every child.
"""

from __future__ import annotations

import contextlib
from collections import Counter

from topn_taskapp.countsfile import CountsFileError
from topn_taskapp.errors import Failure, shown
from topn_taskapp.inout import open_input, scratch, writing
from topn_taskapp.merge_inputs import input_files, merge_file
from topn_taskapp.partfile import PartFileError, PartReader, PartWriter

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def edit_part(output: Path, base: Path, drops: list[Path], inputs: list[Path]) -> None:
    dropped = list(input_files(drops))
    added = list(input_files(inputs))
    minus: Counter[str] = Counter()
    blocks: list[list[str]] = []
    for path in dropped:
        keys: list[str] = []
        merge_file(path, minus, lambda row, keys=keys: keys.append(row["key"]), rows_needed=True)
        if not keys:
            raise Failure(f"cannot drop {shown(path)!r}: it has no rows to find in the base")
        blocks.append(keys)
    with writing([output]) as (out,), scratch(output) as spool:
        part = PartWriter(spool)
        with _base(base) as reader:
            _place_rows(reader, blocks, added, part, base)
            reader.add_counts(part.counts)
        for path in added[len(blocks) :]:
            merge_file(path, part.counts, part.add_row, rows_needed=True)
        _take_out(part.counts, minus, base)
        part.write(out)


@contextlib.contextmanager
def _base(path: Path) -> Iterator[PartReader]:
    with open_input(path, "utf-8") as lines:
        try:
            yield PartReader(lines)
        except (PartFileError, CountsFileError, UnicodeDecodeError) as e:
            raise Failure(f"cannot edit {shown(path)!r}: {e}") from None
        except OSError as e:
            raise Failure(f"cannot read {shown(path)!r}: {e.strerror or e}") from None


def _place_rows(reader: PartReader, blocks: list[list[str]], added: list[Path], part: PartWriter, base: Path) -> None:
    """BASE's rows into `part`, each drop's block of rows replaced by the rows of the input in its place."""
    starts = {keys[0]: i for i, keys in enumerate(blocks)}
    leaving = {key for keys in blocks for key in keys}
    rest: Iterator[str] | None = None  # the keys still expected of the block being skipped
    for row in reader.rows():
        key = row["key"]
        if rest is not None:
            expected = next(rest, None)
            if expected is not None:
                if key != expected:
                    raise Failure(f"cannot edit {shown(base)!r}: a dropped part's rows are not together in it")
                continue
            rest = None
        if key in starts:
            i = starts.pop(key)
            if i < len(added):
                merge_file(added[i], part.counts, part.add_row, rows_needed=True)
            rest = iter(blocks[i][1:])
        elif key in leaving:
            raise Failure(f"cannot edit {shown(base)!r}: a dropped part's rows are not together in it")
        else:
            part.add_row(row)
    if starts or (rest is not None and next(rest, None) is not None):
        raise Failure(f"cannot edit {shown(base)!r}: it does not hold every row of the parts to drop")


def _take_out(counts: Counter[str], minus: Counter[str], base: Path) -> None:
    for word, n in minus.items():
        left = counts[word] - n
        if left < 0:
            raise Failure(f"cannot edit {shown(base)!r}: it does not hold the counts of the parts to drop")
        if left:
            counts[word] = left
        else:
            del counts[word]
