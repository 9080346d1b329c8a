"""`--jobs`: one large input counted in several processes over line-aligned byte ranges gives exactly the
sequential results (rows, full counts, part files), whatever the bytes; failures stay one line, and no
worker is left behind. Runs in-process through `main([...])` (workers are forked from the test)."""

from __future__ import annotations

import errno
import io
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from topn_taskapp import parallel
from topn_taskapp.cli import main
from topn_taskapp.wordcount import LONG_LINE_BYTES

from tests.conftest import SAMPLE
from tests.taskapp.oracle import spec_counts

SPLIT = 100_000
CORPORA = [Path("/work/shared/corpus"), SAMPLE]
# Lines that decide things if a cut or a range start gets them wrong: a BOM (only dropped at the file's
# start), a cp1252 line, CRLF, a NUL (a separator after the first 8192 bytes), combining marks and ß.
SPECIALS = [
    b"\xef\xbb\xbfbom at a line start\n",
    b"caf\xe9 na\xefve \x93quoted\x94 \x81undefined\n",
    b"crlf line one\r\n",
    b"\r\n",
    b"nul\x00separated words\n",
    "cafe\u0301 STRASSE Stra\u00dfe don\u2019t rock'n'roll\n".encode(),
]


@pytest.fixture(scope="module")
def corpus() -> bytes:
    """Every corpus text, both copies: about 2.2 MB, ending with a line break."""
    texts = [p.read_bytes() for root in CORPORA if root.is_dir() for p in sorted(root.rglob("*.txt"))]
    data = b"\n".join(texts)
    assert len(data) > 20 * SPLIT
    return data if data.endswith(b"\n") else data + b"\n"


def sprinkled(data: bytes, every: int = 9_000) -> bytes:
    """`data` with the special lines put in at the line start after every `every` bytes."""
    out, pos, i = [], 0, 0
    while pos < len(data):
        end = data.find(b"\n", pos + every) + 1 or len(data)
        out += [data[pos:end], SPECIALS[i % len(SPECIALS)]]
        pos, i = end, i + 1
    return b"".join(out)


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    capsys.readouterr()
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def count_outputs(capsys: pytest.CaptureFixture[str], path: Path, jobs: int, split: int = SPLIT) -> tuple[bytes, bytes]:
    """What `count` writes for `path`: its --output and its --counts, as bytes."""
    out = path.parent / f"{path.name}.{jobs}.json"
    counts = path.parent / f"{path.name}.{jobs}.counts"
    args = ["count", "--top", "20", "--output", out, "--counts", counts, "--jobs", jobs, "--split-bytes", split]
    assert run(capsys, *args, path) == (0, "")
    return out.read_bytes(), counts.read_bytes()


@pytest.fixture
def splits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many ranges each split input was cut into (no entry for inputs counted whole)."""
    seen: list[int] = []
    real = parallel._count_ranges

    def spy(path: str, ranges: list[tuple[int, int | None]], label: str) -> object:
        seen.append(len(ranges))
        return real(path, ranges, label)

    monkeypatch.setattr(parallel, "_count_ranges", spy)
    return seen


def no_workers_left() -> bool:
    return multiprocessing.active_children() == []


def inputs(corpus: bytes) -> dict[str, bytes]:
    long_line = b" ".join([b"word", "m\u00e4rchen".encode(), b"caf\xc3\xa9"] * 40_000)  # 650 KB, > SPLIT
    return {
        "plain.txt": corpus,
        "sprinkled.txt": sprinkled(corpus),
        "bom.txt": b"\xef\xbb\xbf" + "\u0301Zo\u00eb\n".encode() + corpus,
        "crlf.txt": corpus.replace(b"\n", b"\r\n"),
        "cp1252.txt": corpus.replace(b"\n\n", b"\nna\xefve caf\xe9 \x81\n"),
        "long-line.txt": corpus[:150_000] + long_line + b"\n" + corpus[:400_000] + long_line + b" caf\xe9",
        "no-newline.txt": corpus.replace(b"\n", b" ")[:500_000],
        "no-final-newline.txt": corpus + b"last line",
        "nul-late.txt": corpus[:500_000] + b"a\x00b\n" + corpus[:500_000],
        "empty.txt": b"",
        "binary.bin": corpus[:100] + b"\x00" + corpus,
    }


def test_every_input_counts_the_same_with_jobs(
    corpus: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str], splits: list[int]
) -> None:
    for name, data in inputs(corpus).items():
        path = tmp_path / name
        path.write_bytes(data)
        splits.clear()
        sequential = count_outputs(capsys, path, 1)
        assert count_outputs(capsys, path, 3) == sequential, name
        if name == "long-line.txt":
            assert splits == [2], name  # a line longer than a range takes the next cut past it
        elif name not in {"no-newline.txt", "empty.txt", "binary.bin"}:
            assert splits == [3], name  # it really was split
        else:
            assert splits == [], name  # no line break to cut at, nothing to cut, or skipped whole
        expected = spec_counts(data)
        if expected is not None:
            assert f'"words": {sum(expected.values())},'.encode() in sequential[0], name
    assert b'"skipped": "binary"' in (tmp_path / "binary.bin.3.json").read_bytes()
    assert no_workers_left()


def test_many_cuts_through_special_lines(corpus: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 40 ranges of ~60 KB through a file with a special line every 2 KB: cuts land next to all of them.
    path = tmp_path / "dense.txt"
    path.write_bytes(b"\xef\xbb\xbf" + sprinkled(corpus, every=2_000))
    assert count_outputs(capsys, path, 40) == count_outputs(capsys, path, 1)
    assert no_workers_left()


def test_split_size_is_a_strict_limit(
    corpus: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str], splits: list[int]
) -> None:
    path = tmp_path / "exact.txt"
    path.write_bytes(corpus[: corpus.rfind(b"\n", 0, SPLIT) + 1])
    size = path.stat().st_size
    sequential = count_outputs(capsys, path, 1, size)
    assert count_outputs(capsys, path, 3, size) == sequential
    assert splits == []  # exactly at the split size: counted whole
    assert count_outputs(capsys, path, 3, size - 1) == sequential
    assert splits == [3]  # one byte over
    assert count_outputs(capsys, path, 0, size - 1) == sequential  # 0: one job per CPU


def test_a_line_longer_than_long_line_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], splits: list[int]
) -> None:
    # Counted piecewise by count_stream's long-line path, in the 2nd of 4 ranges (40 jobs: ~230 KB targets, the
    # ones inside the line skipped); it turns out not to be UTF-8 at its very end, so it is recounted as
    # cp1252, exactly as the sequential count does.
    line = "caf\u00e9 m\u00e4rchen ".encode() * (LONG_LINE_BYTES // 14 + 1000) + b"caf\xe9\n"
    assert len(line) > LONG_LINE_BYTES
    text = b"short words here\n" * 20_000
    path = tmp_path / "very-long.txt"
    path.write_bytes(text + line + text)
    assert count_outputs(capsys, path, 40) == count_outputs(capsys, path, 1)
    assert splits == [4]


def test_count_many_part_file_is_the_same(corpus: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = []
    for i, (name, data) in enumerate(inputs(corpus).items()):
        (tmp_path / name).write_bytes(data)
        listing.append(f"{i}\t{tmp_path / name}\n")
    (tmp_path / "small.txt").write_bytes(b"a small file, counted in the main process\n")
    listing.append(f"small\t{tmp_path / 'small.txt'}\n")
    (tmp_path / "list").write_text("".join(listing), encoding="utf-8")
    parts = {}
    for jobs in (1, 3):
        parts[jobs] = tmp_path / f"part{jobs}"
        args = ["count-many", "--top", "10", "--output", parts[jobs], "--inputs", tmp_path / "list"]
        assert run(capsys, *args, "--jobs", jobs, "--split-bytes", SPLIT) == (0, "")
    assert parts[3].read_bytes() == parts[1].read_bytes()
    assert no_workers_left()


SPAWNED = """import sys
from topn_taskapp import parallel
from topn_taskapp.cli import main
parallel._start_method = lambda: "spawn"
sys.exit(main(sys.argv[1:]))
"""


def test_spawn_start_method_too(corpus: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What macOS and Windows use. In a process of its own: spawn starts multiprocessing's resource tracker,
    # which lives as long as the process that started it.
    path = tmp_path / "spawned.txt"
    path.write_bytes(sprinkled(corpus[:600_000]))
    sequential = count_outputs(capsys, path, 1)
    out, counts = tmp_path / "spawned.json", tmp_path / "spawned.counts"
    args = ["count", "--top", "20", "--output", out, "--counts", counts, "--jobs", "2", "--split-bytes", SPLIT, path]
    proc = subprocess.run([sys.executable, "-c", SPAWNED, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert (out.read_bytes(), counts.read_bytes()) == sequential


@pytest.mark.parametrize(
    ("ranges", "starts"),
    [
        (b"aaaa\nbbbb\ncccc\ndddd\n", [0, 5, 10, 15]),  # targets at line starts cut there
        (b"aaa\nbbbbbbbbbbbbbbbb\nc\nd\n", [0, 21]),  # a long line swallows targets
        (b"aaaaaaaaaaaaaaaaaaaa\n", [0]),  # the only line break ends the file
        (b"aaaaaaaaaaaaaaaaaaaa", [0]),  # none at all
        (b"a\n" * 10, [0, 6, 10, 16]),
    ],
)
def test_line_ranges(ranges: bytes, starts: list[int]) -> None:
    got = parallel.line_ranges(io.BytesIO(ranges), len(ranges), 4)
    assert [start for start, _ in got] == starts
    for (start, length), (after, _) in itertools.pairwise(got):
        assert start + length == after and ranges[after - 1 : after] == b"\n"
    assert got[-1][1] is None


def test_range_reader_is_limited_and_seeks_relative() -> None:
    reader = parallel.RangeReader(io.BytesIO(b"0123456789"), 3, 4)
    assert (reader.read(2), reader.read(10), reader.read(1)) == (b"34", b"56", b"")
    reader.seek(1)
    assert (reader.tell(), reader.read()) == (1, b"456")
    assert parallel.RangeReader(io.BytesIO(b"0123456789"), 7, None).read() == b"789"


# Failures. The fakes replace count_stream in the forked workers (the parent never calls it when it splits).


def failing_in_later_ranges(action: str) -> object:
    real = parallel.count_stream

    def fake(stream: object, *, file_start: bool = True) -> object:
        if action == "sleep" and file_start:
            time.sleep(60)
        elif not file_start and action == "oserror":
            raise OSError(errno.EIO, "Input/output error")
        elif not file_start and action == "error":
            raise ValueError("boom")
        elif not file_start and action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif not file_start and action == "sleep":
            raise OSError(errno.EIO, "Input/output error")
        return real(stream, file_start=file_start)

    return fake


@pytest.mark.parametrize(
    ("action", "needle"),
    [
        ("oserror", "cannot read {path!r}: Input/output error"),
        ("error", "cannot count {path!r}: ValueError: boom (in a worker process)"),
        ("kill", "cannot count {path!r}: a worker process was killed by signal 9"),
        ("sleep", "cannot read {path!r}: Input/output error"),  # the sleeping worker is stopped at once
    ],
)
def test_worker_failures_are_one_line_and_leave_nothing(
    action: str,
    needle: str,
    corpus: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(corpus)
    monkeypatch.setattr(parallel, "count_stream", failing_in_later_ranges(action))
    started = time.monotonic()
    args = ["--top", "3", "--output", tmp_path / "o.json", "--jobs", "3", "--split-bytes", SPLIT]
    status, err = run(capsys, "count", *args, path)
    assert time.monotonic() - started < 30
    assert status == 1 and err == f"topn-taskapp: {needle.format(path=str(path))}\n"
    assert no_workers_left()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # nothing written, no temporary left

    (tmp_path / "list").write_text(f"k7\t{path}\n", encoding="utf-8")
    args = ["--top", "3", "--output", tmp_path / "part", "--inputs", tmp_path / "list", "--jobs", "2"]
    status, err = run(capsys, "count-many", *args, "--split-bytes", SPLIT)
    assert status == 1 and err.count("\n") == 1 and f"{str(path)!r} (key 'k7')" in err
    assert no_workers_left()
    assert not (tmp_path / "part").exists()


def test_missing_input_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.json"
    missing = tmp_path / "missing.txt"
    assert run(capsys, "count", "--top", "3", "--output", out, "--jobs", "3", missing) == (
        1,
        f"topn-taskapp: cannot read {str(missing)!r}: no such file\n",
    )
    for option, value in [("--jobs", "-1"), ("--jobs", "two"), ("--split-bytes", "64MiB"), ("--split-bytes", "1e6")]:
        status, err = run(capsys, "count", "--top", "3", "--output", out, option, value, missing)
        assert status == 2 and option in err and value in err


def test_multiprocessing_is_imported_only_when_a_file_is_split(tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("a b c\n" * 10)
    cmd = [sys.executable, "-X", "importtime", "-m", "topn_taskapp", "count", "--top", "2", "--jobs", "4"]
    for split, imported in (("1000", False), ("10", True)):
        proc = subprocess.run(
            [*cmd, "--output", tmp_path / "o.json", "--split-bytes", split, small],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        modules = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
        assert ("multiprocessing" in modules) is imported
