"""The `merge` command: sums counts files and part files, into the corpus-wide result or into a part file."""

from __future__ import annotations

from collections import Counter

from topn_taskapp.errors import UsageError
from topn_taskapp.inout import scratch, write_json, writing
from topn_taskapp.merge_inputs import input_files, merge_file
from topn_taskapp.partfile import PartWriter, row_line
from topn_taskapp.wordcount import top_n

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from argparse import Namespace
    from pathlib import Path


def run_merge(args: Namespace) -> None:
    """`merge --top N [--output OUT.json [--files FILES.jsonl]] [--part PART [--edit BASE [--drop DROP]]]
    INPUT [INPUT ...]`: with both --output and --part, the part file first, the result read from it."""
    if not (args.output or args.part):
        raise UsageError("give --output, --part or both")
    if args.files and not args.output:
        raise UsageError("--files goes with --output")
    if args.output and args.part and args.output.resolve() == args.part.resolve():
        raise UsageError("--output and --part must name different files")
    if (args.edit or args.drop) and not args.part:
        raise UsageError("--edit and --drop go with --part")
    if args.drop and not args.edit:
        raise UsageError("--drop goes with --edit")
    if args.edit:
        from topn_taskapp.edit import edit_part

        edit_part(args.part, args.edit, [args.drop] if args.drop else [], args.inputs)
    elif args.part:
        _merge_to_part(args.part, args.inputs)
    if args.output:
        _merge_to_output(args.output, args.files, [args.part] if args.part else args.inputs, args.top)


def _merge_to_output(output: Path, files: Path | None, inputs: list[Path], top: int) -> None:
    total: Counter[str] = Counter()
    with writing([output, files] if files else [output]) as outs:
        on_row = (lambda row: outs[1].write(row_line(row))) if files else None
        counted = sum(merge_file(path, total, on_row) for path in input_files(inputs))
        result = {"files": counted, "words": sum(total.values()), "distinct": len(total)}
        write_json(outs[0], {**result, "top": [list(pair) for pair in top_n(total, top)]})


def _merge_to_part(output: Path, inputs: list[Path]) -> None:
    with writing([output]) as (out,), scratch(output) as spool:
        part = PartWriter(spool)
        for path in input_files(inputs):
            merge_file(path, part.counts, part.add_row, rows_needed=True)
        part.write(out)
