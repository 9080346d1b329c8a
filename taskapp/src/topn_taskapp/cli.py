"""The `count` and `merge` commands of shared/spec/taskapp.md."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import IO

from topn_taskapp.atomic import AtomicFiles
from topn_taskapp.countsfile import CountsFileError, read_counts, write_counts
from topn_taskapp.wordcount import count_stream, top_n

PROG = "topn-taskapp"
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:/")  # pathlib folds "https://" to "https:/"
MAX_TOP = 10_000


class UsageError(Exception):
    """Bad use of the command line: exit status 2."""


class Failure(Exception):
    """An expected failure such as an unreadable input: exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise UsageError(message)


def _top(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= MAX_TOP:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_TOP}, got {value!r}")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Count words and find the top N (shared/spec/wordcount.md).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    count = commands.add_parser("count", help="count one input file")
    count.add_argument("--top", type=_top, required=True, metavar="N")
    count.add_argument("--output", type=Path, required=True, metavar="OUT.json")
    count.add_argument("--counts", type=Path, metavar="COUNTS", help="also write the full counts here")
    count.add_argument("input", type=Path, metavar="INPUT")
    merge = commands.add_parser("merge", help="sum the full counts of many files")
    merge.add_argument("--top", type=_top, required=True, metavar="N")
    merge.add_argument("--output", type=Path, required=True, metavar="OUT.json")
    merge.add_argument("counts", type=Path, nargs="+", metavar="COUNTS")
    return parser


def shown(path: Path | str) -> str:
    """A path as it may be printed: a URL loses its query string, which may hold a SAS token."""
    text = str(path)
    return text.split("?", 1)[0] if _URL.match(text) else text


def _open_input(path: Path, mode: str = "rb") -> IO:
    if path.is_dir():
        raise Failure(f"cannot read {shown(path)!r}: it is a directory, not a file")
    try:
        return open(path, mode) if mode == "rb" else open(path, encoding="utf-8")
    except FileNotFoundError:
        raise Failure(f"cannot read {shown(path)!r}: no such file") from None
    except OSError as e:
        raise Failure(f"cannot read {shown(path)!r}: {e.strerror or e}") from None


def _writing(paths: list[Path]) -> AtomicFiles:
    for path in paths:
        if path.is_dir():
            raise Failure(f"cannot write {shown(path)!r}: it is a directory")
        if not path.parent.is_dir():
            raise Failure(f"cannot write {shown(path)!r}: its folder does not exist")
    try:
        return AtomicFiles(paths)
    except OSError as e:
        raise Failure(f"cannot write {shown(paths[0])!r}: {e.strerror or e}") from None


def _write_json(out: IO[str], result: dict) -> None:
    json.dump(result, out, ensure_ascii=False)
    out.write("\n")


def run_count(args: argparse.Namespace) -> None:
    targets = [args.output] + ([args.counts] if args.counts else [])
    with _open_input(args.input) as stream, _writing(targets) as outs:
        try:
            result = count_stream(stream)
        except OSError as e:
            raise Failure(f"cannot read {shown(args.input)!r}: {e.strerror or e}") from None
        ranked = top_n(result.counts, len(result.counts))
        _write_json(
            outs[0],
            {
                "file": args.input.name,
                "bytes": result.size,
                "words": result.words,
                "distinct": len(result.counts),
                "top": [list(pair) for pair in ranked[: args.top]],
                "skipped": result.skipped,
            },
        )
        if args.counts:
            write_counts(outs[1], args.input.name, result.skipped, ranked)


def run_merge(args: argparse.Namespace) -> None:
    total: Counter[str] = Counter()
    counted = 0
    with _writing([args.output]) as outs:
        for path in args.counts:
            with _open_input(path, "r") as lines:
                try:
                    header, counts = read_counts(lines)
                except (CountsFileError, UnicodeDecodeError) as e:
                    raise Failure(f"cannot merge {shown(path)!r}: {e}") from None
            counted += header["skipped"] is None
            total.update(counts)
        _write_json(
            outs[0],
            {
                "files": counted,
                "words": sum(total.values()),
                "distinct": len(total),
                "top": [list(pair) for pair in top_n(total, args.top)],
            },
        )


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status of shared/spec/taskapp.md."""
    try:
        args = _parser().parse_args(argv)
        (run_count if args.command == "count" else run_merge)(args)
    except UsageError as e:
        print(f"{PROG}: usage error: {e} (see '{PROG} --help')", file=sys.stderr)
        return 2
    except Failure as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0
