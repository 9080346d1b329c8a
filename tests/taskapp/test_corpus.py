"""The corpus figures of docs/word-rules.md section 5, through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.taskapp.oracle import spec_counts


def run(*args: str | Path) -> None:
    subprocess.run([sys.executable, "-m", "topn_taskapp", *map(str, args)], check=True, timeout=300)


def count(path: Path, out: Path, top: int = 5) -> dict:
    run(
        "count",
        "--top",
        str(top),
        "--output",
        out / f"{path.name}.json",
        "--counts",
        out / f"{path.name}.counts",
        path,
    )
    return json.loads((out / f"{path.name}.json").read_text(encoding="utf-8"))


def test_fact_sheet(sample_dir: Path, tmp_path: Path) -> None:
    result = count(sample_dir / "nasa-moon" / "180556main_ETM.Moon.ABCs.Fact.Sheet.txt", tmp_path)
    assert (result["words"], result["distinct"]) == (470, 246)
    assert result["top"] == [["the", 21], ["of", 14], ["moon", 12], ["and", 11], ["by", 9]]


def test_dickens_is_not_utf8_and_still_exact(sample_dir: Path, tmp_path: Path) -> None:
    path = sample_dir / "books" / "a-tale-of-two-cities.txt"
    data = path.read_bytes()
    assert b"prot\xe9g\xe9s" in data
    result = count(path, tmp_path)
    assert result["bytes"] == len(data) == 757223
    assert (result["words"], result["distinct"]) == (137389, 9853)
    assert result["top"] == [["the", 8053], ["and", 4999], ["of", 4015], ["to", 3571], ["a", 2953]]


def test_all_eleven_files_merged(sample_dir: Path, tmp_path: Path) -> None:
    files = sorted(sample_dir.rglob("*.txt"))
    assert len(files) == 11
    for path in files:
        result = count(path, tmp_path, top=10000)
        expected = spec_counts(path.read_bytes())
        assert result["words"] == sum(expected.values())
        assert result["top"] == sorted(([w, n] for w, n in expected.items()), key=lambda x: (-x[1], x[0]))
    run("merge", "--top", "5", "--output", tmp_path / "all.json", *sorted(tmp_path.glob("*.counts")))
    merged = json.loads((tmp_path / "all.json").read_text(encoding="utf-8"))
    assert merged == {
        "files": 11,
        "words": 196715,
        "distinct": 12630,
        "top": [["the", 12495], ["and", 6396], ["of", 5858], ["to", 4678], ["a", 4111]],
    }
