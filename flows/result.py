"""What a topn run returns: per-file results, the corpus-wide top N, and run statistics."""

from __future__ import annotations

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
