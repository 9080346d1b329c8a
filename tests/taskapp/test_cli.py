"""The command line of docs/taskapp.md: outputs, exit statuses, one-line errors, no leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def taskapp(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topn_taskapp", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def assert_fails(proc: subprocess.CompletedProcess[str], status: int, *needles: str) -> None:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("topn-taskapp: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "in put.txt"
    path.write_text("b a b c b a\n", encoding="utf-8")
    return path


def test_count_writes_spec_json_and_counts(text: Path, tmp_path: Path) -> None:
    proc = taskapp("count", "--top", "2", "--output", tmp_path / "o.json", "--counts", tmp_path / "c", text)
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads((tmp_path / "o.json").read_text()) == {
        "file": "in put.txt",
        "bytes": 12,
        "words": 6,
        "distinct": 3,
        "top": [["b", 3], ["a", 2]],
        "skipped": None,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "in put.txt", "o.json"]


def test_binary_input_is_skipped_not_failed(tmp_path: Path) -> None:
    binary = tmp_path / "x.bin"
    data = b"\x89PNG\x00\x01 words"
    binary.write_bytes(data)
    counts = tmp_path / "x.counts"
    assert taskapp("count", "--top", "3", "--output", tmp_path / "o.json", "--counts", counts, binary).returncode == 0
    out = json.loads((tmp_path / "o.json").read_text())
    assert out == {
        "file": "x.bin",
        "bytes": len(data),
        "words": 0,
        "distinct": 0,
        "top": [],
        "skipped": "binary",
    }
    other = tmp_path / "t.txt"
    other.write_text("one one two")
    assert (
        taskapp(
            "count", "--top", "3", "--output", tmp_path / "t.json", "--counts", tmp_path / "t.counts", other
        ).returncode
        == 0
    )
    assert (
        taskapp("merge", "--top", "1", "--output", tmp_path / "m.json", counts, tmp_path / "t.counts").returncode == 0
    )
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged == {"files": 1, "words": 3, "distinct": 2, "top": [["one", 2]]}


@pytest.mark.parametrize("top", ["0", "-1", "10001", "abc", "1.5", "", " "])
def test_bad_top_is_a_usage_error_before_any_work(top: str, text: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    assert_fails(taskapp("count", "--top", top, "--output", out, text), 2, "--top", "1 to 10000")
    assert not out.exists()
    assert_fails(taskapp("merge", "--top", top, "--output", out, text), 2, "--top")


def test_top_bounds_are_inclusive(text: Path, tmp_path: Path) -> None:
    for top in ("1", "10000"):
        assert taskapp("count", "--top", top, "--output", tmp_path / "o.json", text).returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["count", "--top", "3", "in.txt"],
        ["count", "--output", "o.json", "in.txt"],
        ["count", "--top", "3", "--output", "o.json"],
        ["merge", "--top", "3", "--output", "o.json"],
        ["frobnicate"],
        [],
    ],
)
def test_missing_arguments_are_usage_errors(args: list[str]) -> None:
    assert_fails(taskapp(*args), 2, "usage error")


def test_unreadable_inputs(tmp_path: Path, text: Path) -> None:
    out = tmp_path / "o.json"
    assert_fails(taskapp("count", "--top", "3", "--output", out, tmp_path / "nope.txt"), 1, "nope.txt", "no such file")
    assert_fails(taskapp("count", "--top", "3", "--output", out, tmp_path), 1, "directory")
    assert_fails(taskapp("count", "--top", "3", "--output", out, text / "x"), 1, "cannot read")
    assert not out.exists()


def test_read_failure_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    # Reading /proc/self/mem at offset 0 fails with EIO after the outputs were opened.
    proc = taskapp("count", "--top", "3", "--output", tmp_path / "o.json", "--counts", tmp_path / "c", "/proc/self/mem")
    assert_fails(proc, 1, "cannot read", "mem")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_outputs(tmp_path: Path, text: Path) -> None:
    assert_fails(
        taskapp("count", "--top", "3", "--output", tmp_path / "no" / "o.json", text),
        1,
        "folder does not exist",
    )
    assert_fails(taskapp("count", "--top", "3", "--output", tmp_path, text), 1, "is a directory")
    assert_fails(taskapp("count", "--top", "3", "--output", "/proc/topn.json", text), 1, "cannot write")
    proc = taskapp("count", "--top", "3", "--output", tmp_path / "o.json", "--counts", tmp_path / "no" / "c", text)
    assert_fails(proc, 1, "c'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in put.txt"]


def test_existing_output_is_replaced_whole(text: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    out.write_text("old")
    assert taskapp("count", "--top", "1", "--output", out, text).returncode == 0
    assert json.loads(out.read_text())["top"] == [["b", 3]]
    assert_fails(taskapp("count", "--top", "1", "--output", out, tmp_path / "gone"), 1)
    assert json.loads(out.read_text())["top"] == [["b", 3]]


def test_merge_rejects_foreign_and_truncated_counts(text: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    assert_fails(taskapp("merge", "--top", "3", "--output", out, text), 1, "in put.txt", "not a counts file")
    counts = tmp_path / "c"
    assert taskapp("count", "--top", "3", "--output", tmp_path / "o.json", "--counts", counts, text).returncode == 0
    counts.write_text("\n".join(counts.read_text().splitlines()[:-1]) + "\n")
    assert_fails(taskapp("merge", "--top", "3", "--output", out, counts), 1, "truncated")
    counts.write_text(counts.read_text() + "bad line\n")
    assert_fails(taskapp("merge", "--top", "3", "--output", out, counts), 1, "line 4")
    assert not out.exists()


def test_sas_query_never_printed(tmp_path: Path) -> None:
    url = "https://acct.blob.core.windows.net/c/in.txt?sv=2024&sp=r&sig=SECRETSIGNATURE"
    proc = taskapp("count", "--top", "3", "--output", tmp_path / "o.json", url)
    assert_fails(proc, 1, "in.txt")
    assert "SECRET" not in proc.stderr and "sig=" not in proc.stderr
