"""`count-many --edit BASE --base-members BASE_MEMBERS --drop KEYS`: a pack whose members changed a little,
made from its last output instead of counting every member again.

BASE is the pack's earlier part file and BASE_MEMBERS its members file (`--members`: each member's own
counts); KEYS names, one a line, the members that leave it, and LIST the inputs that come: the i-th input
takes the place of the i-th key, inputs beyond the keys go at the end, keys beyond the inputs just leave.
Only the inputs are counted. The part file (and `--members` file) written is the one `count-many` of the
new members writes, byte for byte: each member is a one-file part, and a pack is their merge, which
`merge --edit` edits exactly (counts add up).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from topn_taskapp.edit import edit_part
from topn_taskapp.errors import Failure, UsageError, shown
from topn_taskapp.inout import open_input, writing
from topn_taskapp.partfile import PartFileError, member_blocks, write_member

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from argparse import Namespace
    from collections import Counter
    from collections.abc import Iterator
    from typing import IO


def recount_pack(args: Namespace, inputs: list[tuple[str, Path]], counted: Iterator[tuple[dict, Counter[str]]]) -> None:
    """Writes args.output (and args.members) from BASE, its members file, the keys leaving and the inputs."""
    if not (args.edit and args.base_members and args.drop):
        raise UsageError("--edit, --base-members and --drop go together")
    drops = read_keys(args.drop)
    with tempfile.TemporaryDirectory(dir=args.output.parent, prefix=".edit-") as tmp:
        added = [_member_file(Path(tmp) / f"add-{n:05}.part", row, counts) for n, (row, counts) in enumerate(counted)]
        with writing([args.members] if args.members else []) as outs:
            out = outs[0] if outs else None
            dropped = _split(args.base_members, drops, added, Path(tmp), out)
            edit_part(args.output, args.edit, dropped, added)


def read_keys(path: Path) -> list[str]:
    """The keys of a `--drop` file, one a line, blank lines skipped; each at most once."""
    with open_input(path, "utf-8-sig") as lines:
        try:
            keys = [line.rstrip("\r\n") for line in lines if line.strip()]
        except UnicodeDecodeError:
            raise UsageError(f"--drop {shown(path)!r}: not UTF-8 text") from None
    if len(set(keys)) != len(keys):
        raise UsageError(f"--drop {shown(path)!r} names a key twice")
    return keys


def _member_file(path: Path, row: dict, counts: Counter[str]) -> Path:
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        write_member(out, row, counts)
    return path


def _split(base_members: Path, drops: list[str], added: list[Path], tmp: Path, out: IO[str] | None) -> list[Path]:
    """The dropped members' one-file parts (in KEYS order), out of the members file; the new members file
    (the others as they were, the i-th added in the place of the i-th dropped, the rest at the end) to `out`."""
    place = {key: i for i, key in enumerate(drops)}
    found: list[Path | None] = [None] * len(drops)
    with open_input(base_members, "utf-8") as lines, _reading(base_members):
        for key, block in member_blocks(lines):
            i = place.get(key)
            if i is not None:
                if found[i] is not None:
                    raise Failure(f"cannot edit with {shown(base_members)!r}: it holds member {key!r} twice")
                found[i] = tmp / f"drop-{i:05}.part"
                found[i].write_text("".join(block), encoding="utf-8")
                block = [added[i].read_text(encoding="utf-8")] if i < len(added) else []
            if out is not None:
                out.writelines(block)
    for path in added[len(drops) :]:
        if out is not None:
            out.write(path.read_text(encoding="utf-8"))
    missing = [key for key, path in zip(drops, found, strict=True) if path is None]
    if missing:
        raise Failure(f"cannot edit with {shown(base_members)!r}: it has no member {missing[0]!r} to drop")
    return [path for path in found if path is not None]


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    try:
        yield
    except (PartFileError, UnicodeDecodeError) as e:
        raise Failure(f"cannot edit with {shown(path)!r}: not a members file ({e})") from None
    except OSError as e:
        raise Failure(f"cannot read {shown(path)!r}: {e.strerror or e}") from None
