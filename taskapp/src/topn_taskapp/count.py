"""The `count` command (one input) and `count-many` (a list of inputs into one part file)."""

from __future__ import annotations

import os
from pathlib import Path

from topn_taskapp.countsfile import write_counts
from topn_taskapp.errors import Failure, UsageError, shown
from topn_taskapp.inout import open_input, scratch, write_json, writing
from topn_taskapp.partfile import PartWriter, write_member
from topn_taskapp.wordcount import FileCount, count_stream, top_n

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from argparse import Namespace
    from collections import Counter
    from collections.abc import Iterator
    from typing import BinaryIO


def run_count(args: Namespace) -> None:
    """`count --top N --output OUT.json [--counts COUNTS] INPUT`."""
    targets = [args.output] + ([args.counts] if args.counts else [])
    with open_input(args.input) as stream, writing(targets) as outs:
        result = _count(stream, args.input, repr(shown(args.input)), _jobs(args), args.split_bytes)
        ranked = top_n(result.counts, len(result.counts))
        write_json(outs[0], _row(args.input.name, result, ranked[: args.top]))
        if args.counts:
            write_counts(outs[1], args.input.name, result.skipped, ranked)


def run_count_many(args: Namespace) -> None:
    """`count-many --top N --output PART --inputs LIST [--members MEMBERS]`: one part file for all the inputs
    LIST names (and each one's own counts in MEMBERS); with `--edit`, a pack edited (`repack.py`)."""
    editing = bool(args.edit or args.base_members or args.drop)
    inputs = read_list(args.inputs, empty=editing)  # an edited pack may only lose members
    if editing:
        from topn_taskapp.repack import recount_pack  # imported on use: most tasks count whole packs

        recount_pack(args, inputs, counted(inputs, args))
        return
    targets = [args.output] + ([args.members] if args.members else [])
    with writing(targets) as outs, scratch(args.output) as spool:
        part = PartWriter(spool)
        for row, counts in counted(inputs, args):
            part.add_row(row)
            part.counts.update(counts)  # only the sum is kept: memory follows the vocabulary
            if args.members:
                write_member(outs[1], row, counts)
        part.write(outs[0])


def counted(inputs: list[tuple[str, Path]], args: Namespace) -> Iterator[tuple[dict, Counter[str]]]:
    """Each input's row (keyed, with its top N) and full counts, one input after another."""
    jobs = _jobs(args)
    for key, path in inputs:
        label = f"{shown(path)!r} (key {key!r})"
        with open_input(path, label=label) as stream:
            result = _count(stream, path, label, jobs, args.split_bytes)
        yield {"key": key, **_row(path.name, result, top_n(result.counts, args.top))}, result.counts


def read_list(path: Path, empty: bool = False) -> list[tuple[str, Path]]:
    """The `KEY<TAB>PATH` lines of a LIST file, blank lines skipped; anything else (or none, unless
    `empty`) is a usage error."""
    inputs = []
    with open_input(path, "utf-8-sig") as lines:  # -sig: a list saved by a Windows editor may start with a BOM
        try:
            for number, line in enumerate(lines, start=1):
                key, tab, name = line.rstrip("\n").partition("\t")
                if tab and key and name:
                    inputs.append((key, Path(name)))
                elif line.strip():
                    raise UsageError(f"--inputs {shown(path)!r}, line {number}: expected KEY<TAB>PATH")
        except UnicodeDecodeError:
            raise UsageError(f"--inputs {shown(path)!r}: not UTF-8 text") from None
    if not inputs and not empty:
        raise UsageError(f"--inputs {shown(path)!r} lists no input")
    return inputs


def _jobs(args: Namespace) -> int:
    """--jobs: 0 means one per CPU."""
    return args.jobs or os.cpu_count() or 1


def _count(stream: BinaryIO, path: Path, label: str, jobs: int, split_bytes: int) -> FileCount:
    """Counts an input: split over `jobs` processes if it is larger than `split_bytes`, else here."""
    try:
        if jobs > 1:
            from topn_taskapp.parallel import count_split  # imported on use: most runs never split

            result = count_split(stream, path, label, jobs, split_bytes)
            if result is not None:
                return result
        return count_stream(stream)
    except OSError as e:
        raise Failure(f"cannot read {label}: {e.strerror or e}") from None


def _row(name: str, result: FileCount, top: list[tuple[str, int]]) -> dict:
    """A file's result as `count` writes it (docs/taskapp.md: `count` output)."""
    return {
        "file": name,
        "bytes": result.size,
        "words": result.words,
        "distinct": len(result.counts),
        "top": [list(pair) for pair in top],
        "skipped": result.skipped,
    }
