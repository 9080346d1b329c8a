"""What a topn run returns: per-file results, the corpus-wide top N, and run statistics."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

from pydantic import BaseModel


class FileResult(BaseModel):
    """One input file, as its count task reported it (docs/taskapp.md: `count` output)."""

    name: str
    task_id: str
    bytes: int
    words: int
    distinct: int
    top: list[tuple[str, int]]
    skipped: str | None = None


class RunStats(BaseModel):
    job_id: str
    pool_id: str
    files: int
    bytes: int
    tasks_added: int
    reused_job: bool  # no task ran: every output was in storage, or a finished job had them
    polls: int
    seconds: float
    # Against the lineage's last run (the same prefix or paths, N and packing): files by name...
    new: int = 0
    changed: int = 0
    deleted: int = 0
    # ...and what this run did with them: read from outputs in storage, or counted by its tasks.
    reused: int = 0
    counted: int = 0
    count_tasks: int = 0
    merge_tasks: int = 0

    def reuse_line(self) -> str:
        """E.g. "20 new, 1 changed, 2 deleted: 21 counted, 2,000 reused"."""
        return (
            f"{self.new:,} new, {self.changed:,} changed, {self.deleted:,} deleted: "
            f"{self.counted:,} counted, {self.reused:,} reused"
        )


MAX_FILE_ROWS = 1_000  # per-file rows a result holds: beyond, memory (and the persisted result) would grow


class TopnResult(BaseModel):
    """The corpus-wide top N (from every file's full counts), and each file's own result: every file's up to
    MAX_FILE_ROWS files, else the first MAX_FILE_ROWS (all are in `files_blob`, JSON lines, unless the
    run's outputs were deleted)."""

    top: list[tuple[str, int]]
    words: int
    distinct: int
    files_counted: int
    files: list[FileResult]
    files_blob: str = ""  # container/blob of every file's row
    stats: RunStats

    def table(self) -> str:
        if not self.stats.files:
            return "nothing to count"
        lines = [f"{self.files_counted} files, {self.words:,} words, {self.distinct:,} distinct words"]
        lines += [f"{rank:>3}  {word:<24} {n:>10,}" for rank, (word, n) in enumerate(self.top, 1)]
        return "\n".join(lines)


def file_results(
    lines: Iterable[bytes], keys: list[str], names: list[str], task_of: list[str], keep: int = MAX_FILE_ROWS
) -> tuple[list[FileResult], int]:
    """The rows of the first `keep` inputs from the root merge's JSON lines, read one at a time (`key` is the
    input's row key, `keys[n]` that of input n), and how many inputs have no row at all. Words are interned:
    "the" of 10,000 files is one string."""
    seen = bytearray(len(names))
    kept: dict[int, FileResult] = {}
    where = {key: n for n, key in enumerate(keys)}
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        n = where.get(str(row.get("key", "")), -1)
        if n < 0 or seen[n]:
            continue
        seen[n] = 1
        if n < keep:
            top = [(sys.intern(w), c) for w, c in row["top"]]
            kept[n] = FileResult(
                name=names[n],
                task_id=task_of[n],
                bytes=row["bytes"],
                words=row["words"],
                distinct=row["distinct"],
                top=top,
                skipped=row["skipped"],
            )
    return [kept[n] for n in sorted(kept)], len(names) - sum(seen)
