"""What a topn run returns: per-file results, the corpus-wide top N, and run statistics."""

from __future__ import annotations

import json
import sys

from pydantic import BaseModel


class FileResult(BaseModel):
    """One input file, as its count task reported it (shared/spec/taskapp.md)."""

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
    reused_job: bool
    polls: int
    seconds: float


class TopnResult(BaseModel):
    """The corpus-wide top N (from every file's full counts), and each file's own result."""

    top: list[tuple[str, int]]
    words: int
    distinct: int
    files_counted: int
    files: list[FileResult]
    stats: RunStats

    def table(self) -> str:
        lines = [f"{self.files_counted} files, {self.words:,} words, {self.distinct:,} distinct words"]
        lines += [f"{rank:>3}  {word:<24} {n:>10,}" for rank, (word, n) in enumerate(self.top, 1)]
        return "\n".join(lines)


def file_results(lines: bytes, names: list[str], task_of: list[str]) -> tuple[list[FileResult], int]:
    """Each input's row from the root merge's JSON lines (`key` is the input's number, from 1), and how many
    inputs have no row. Words are interned: "the" of 10,000 files is then one string, not 10,000."""
    found: list[FileResult | None] = [None] * len(names)
    for line in lines.splitlines():
        row = json.loads(line)
        n = int(row["key"]) - 1 if str(row.get("key", "")).isdigit() else -1
        if 0 <= n < len(names) and found[n] is None:
            top = [(sys.intern(w), c) for w, c in row["top"]]
            found[n] = FileResult(name=names[n], task_id=task_of[n], bytes=row["bytes"], words=row["words"],
                                  distinct=row["distinct"], top=top, skipped=row["skipped"])  # fmt: skip
    files = [f for f in found if f is not None]
    return files, len(names) - len(files)
