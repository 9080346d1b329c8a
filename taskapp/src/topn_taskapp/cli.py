"""The command line of docs/taskapp.md: `count`, `merge` and the packed workload's `count-many`, `merge` of
part files and folders, `--part`, `--edit`/`--drop`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from topn_taskapp.errors import Failure, UsageError

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from collections.abc import Callable

PROG = "topn-taskapp"
MAX_TOP = 10_000
SPLIT_BYTES = 64 << 20


class _Formatter(argparse.HelpFormatter):
    # argparse asks shutil for the terminal width, and shutil imports bz2 and lzma: milliseconds at every
    # start, since a formatter is made for each argument added, though only --help prints anything.
    def __init__(self, prog: str, **kwargs: object) -> None:
        try:
            columns = os.get_terminal_size().columns
        except OSError:  # not a terminal
            columns = 80
        kwargs.setdefault("width", columns - 2)
        super().__init__(prog, **kwargs)  # type: ignore[arg-type]


class _Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise UsageError(message)


def _top(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= MAX_TOP:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_TOP}, got {value!r}")
    return int(value)


def _whole(value: str) -> int:
    if not (value.isascii() and value.strip().isdigit()):
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}")
    return int(value)


def _add_parallel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs", type=_whole, default=1, metavar="N", help="count each large input in N processes (0: one per CPU)"
    )
    parser.add_argument(
        "--split-bytes",
        type=_whole,
        default=SPLIT_BYTES,
        metavar="BYTES",
        help=f"with --jobs: split inputs larger than this (default {SPLIT_BYTES})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Count words and find the top N (word rules: docs/word-rules.md of topn).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    count = commands.add_parser("count", help="count one input file")
    count.add_argument("--top", type=_top, required=True, metavar="N")
    count.add_argument("--output", type=Path, required=True, metavar="OUT.json")
    count.add_argument("--counts", type=Path, metavar="COUNTS", help="also write the full counts here")
    _add_parallel(count)
    count.add_argument("input", type=Path, metavar="INPUT")
    many = commands.add_parser("count-many", help="count the files a list names into one part file")
    many.add_argument("--top", type=_top, required=True, metavar="N")
    many.add_argument("--output", type=Path, required=True, metavar="PART")
    many.add_argument("--inputs", type=Path, required=True, metavar="LIST", help="lines of KEY<TAB>PATH")
    many.add_argument("--members", type=Path, metavar="MEMBERS", help="also write each input's own counts here")
    many.add_argument("--edit", type=Path, metavar="BASE", help="edit BASE, a pack's part file (see --drop)")
    many.add_argument("--base-members", type=Path, metavar="BASE_MEMBERS", help="with --edit: BASE's members file")
    many.add_argument(
        "--drop",
        type=Path,
        metavar="KEYS",
        help="with --edit: the keys (one a line) of BASE's members that leave it, the i-th input of LIST "
        "taking the place of the i-th; inputs beyond them go at the end",
    )
    _add_parallel(many)
    merge = commands.add_parser("merge", help="sum the counts of counts files, part files and folders of them")
    merge.add_argument("--top", type=_top, required=True, metavar="N")
    merge.add_argument("--output", type=Path, metavar="OUT.json", help="write the corpus-wide result")
    merge.add_argument("--part", type=Path, metavar="PART", help="write a part file (a level of a merge tree)")
    merge.add_argument("--files", type=Path, metavar="FILES.jsonl", help="with --output: also every file's row")
    merge.add_argument("--edit", type=Path, metavar="BASE", help="with --part: BASE, a part file, edited (see --drop)")
    merge.add_argument(
        "--drop",
        type=Path,
        metavar="DROP",
        help="with --edit: parts (a file or folder) whose rows and counts leave "
        "BASE, the i-th INPUT's rows taking the place of the i-th's; INPUTs beyond them go at the end",
    )
    merge.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="a counts file, part file or folder")
    return parser


def _command(name: str) -> Callable[[argparse.Namespace], None]:
    # Imported on use: a task runs one command once, and pays at start for what is imported.
    if name == "merge":
        from topn_taskapp.merge import run_merge

        return run_merge
    from topn_taskapp.count import run_count, run_count_many

    return run_count if name == "count" else run_count_many


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns its exit status (docs/taskapp.md: Exit status)."""
    try:
        args = _parser().parse_args(argv)
        _command(args.command)(args)
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
