"""Counts a folder of texts with the task application, file by file then merged, as the Batch
nodes will; prints the corpus-wide top N. Stands in for the `topn` flow until it exists."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def taskapp(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "topn_taskapp", *args], check=True)


def main(folder: str = "data/sample", top: str = "10") -> None:
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix == ".txt")
    with tempfile.TemporaryDirectory() as work:
        out = Path(work)
        for i, file in enumerate(files):
            taskapp(
                "count",
                "--top",
                top,
                "--output",
                str(out / f"{i}.json"),
                "--counts",
                str(out / f"{i}.counts"),
                str(file),
            )
        taskapp(
            "merge",
            "--top",
            top,
            "--output",
            str(out / "all.json"),
            *(str(out / f"{i}.counts") for i in range(len(files))),
        )
        result = json.loads((out / "all.json").read_text(encoding="utf-8"))
    print(f"{result['files']} files, {result['words']:,} words, {result['distinct']:,} distinct words")
    for rank, (word, n) in enumerate(result["top"], 1):
        print(f"{rank:>3}  {word:<20} {n:>8,}")


if __name__ == "__main__":
    main(*sys.argv[1:])
