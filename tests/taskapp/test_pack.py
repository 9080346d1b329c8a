"""Packed tasks and merge trees (docs/taskapp.md): `count-many`, part files, `merge` of parts and folders.

Most runs are in-process through `main([...])`: the same code as the command line, without a process each."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from topn_taskapp.cli import main
from topn_taskapp.countsfile import read_counts
from topn_taskapp.partfile import PartReader, PartWriter

from tests.conftest import SAMPLE

SHARED_CORPUS = Path("/work/shared/corpus")
CORPORA = [SAMPLE, *([SHARED_CORPUS] if SHARED_CORPUS.is_dir() else [])]


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """Runs the command line in-process: its exit status and what it printed on stderr."""
    capsys.readouterr()
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def assert_fails(outcome: tuple[int, str], status: int, *needles: str) -> None:
    code, err = outcome
    assert code == status, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("topn-taskapp: "), err
    for needle in needles:
        assert needle in lines[0], err


def read_part(path: Path) -> tuple[dict, list[dict], Counter[str]]:
    with path.open(encoding="utf-8") as lines:
        reader = PartReader(lines)
        rows = list(reader.rows())
        counts: Counter[str] = Counter()
        reader.add_counts(counts)
    return reader.header, rows, counts


def write_list(path: Path, entries: list[tuple[str, Path | str]]) -> Path:
    path.write_text("".join(f"{key}\t{target}\n" for key, target in entries), encoding="utf-8")
    return path


def count_many(capsys: pytest.CaptureFixture[str], out: Path, entries: list[tuple[str, Path]], top: int = 5) -> Path:
    listing = write_list(out.with_name(f".{out.name}.list"), entries)  # hidden: a folder merged skips it
    assert run(capsys, "count-many", "--top", top, "--output", out, "--inputs", listing) == (0, "")
    return out


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    """Both corpora, plus an empty file and a binary one (skipped, not failed)."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "empty.txt").write_bytes(b"")
    (extra / "image.bin").write_bytes(b"\x89PNG\x00\x01 words words")
    return [p for folder in [*CORPORA, extra] for p in sorted(folder.rglob("*")) if p.is_file()]


@pytest.fixture
def counted(inputs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[dict, Path]]:
    """`count --counts` of each input: its output and its counts file."""
    results = []
    for i, path in enumerate(inputs):
        out, counts = tmp_path / f"{i}.json", tmp_path / f"{i}.counts"
        assert run(capsys, "count", "--top", "5", "--output", out, "--counts", counts, path) == (0, "")
        results.append((json.loads(out.read_text(encoding="utf-8")), counts))
    return results


def merged(capsys: pytest.CaptureFixture[str], out: Path, *inputs: Path, files: Path | None = None) -> dict:
    extra = ["--files", files] if files else []
    assert run(capsys, "merge", "--top", "25", "--output", out, *extra, *inputs) == (0, "")
    return json.loads(out.read_text(encoding="utf-8"))


def test_count_many_rows_and_sum_equal_count_of_each_file(
    inputs: list[Path], counted: list[tuple[dict, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part = count_many(capsys, tmp_path / "part", [(f"key {i}", p) for i, p in enumerate(inputs)])
    header, rows, counts = read_part(part)
    assert [row.pop("key") for row in rows] == [f"key {i}" for i in range(len(inputs))]
    assert rows == [result for result, _ in counted]
    expected: Counter[str] = Counter()
    for _, path in counted:
        with path.open(encoding="utf-8") as lines:
            expected.update(read_counts(lines)[1])
    assert counts == expected
    skipped = sum(row["skipped"] is not None for row in rows)
    assert skipped == 1 and rows[-1]["skipped"] == "binary" and rows[-2]["words"] == 0
    assert header == {
        "format": "topn-part/1",
        "files": len(inputs),
        "counted": len(inputs) - skipped,
        "words": sum(expected.values()),
        "distinct": len(expected),
    }
    lines = part.read_text(encoding="utf-8").splitlines()
    assert lines[1 + len(rows)].split("\t") == ["the", str(expected["the"])]  # most frequent first


def test_sample_corpus_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(SAMPLE.rglob("*.txt"))
    part = count_many(capsys, tmp_path / "part", [(p.name, p) for p in files])
    assert merged(capsys, tmp_path / "top.json", part)["top"][:5] == [
        ["the", 12495],
        ["and", 6396],
        ["of", 5858],
        ["to", 4678],
        ["a", 4111],
    ]
    assert read_part(part)[0] == {
        "format": "topn-part/1",
        "files": 11,
        "counted": 11,
        "words": 196715,
        "distinct": 12630,
    }


def test_merge_of_parts_equals_merge_of_counts_and_a_tree_too(
    inputs: list[Path], counted: list[tuple[dict, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyed = [(f"k{i}", p) for i, p in enumerate(inputs)]
    packs = [keyed[:5], keyed[5:6], keyed[6:15], keyed[15:]]
    parts = [count_many(capsys, tmp_path / f"p{i}", pack) for i, pack in enumerate(packs)]
    flat = merged(capsys, tmp_path / "flat.json", *(counts for _, counts in counted))
    assert flat["files"] == len(inputs) - 1
    assert merged(capsys, tmp_path / "of-parts.json", *parts) == flat

    level1 = tmp_path / "level1"
    (level1 / "b").mkdir(parents=True)
    assert run(capsys, "merge", "--top", "1", "--part", level1 / "a", parts[0], parts[1]) == (0, "")
    assert run(capsys, "merge", "--top", "1", "--part", level1 / "b" / "c", parts[2], parts[3]) == (0, "")
    files = tmp_path / "files.jsonl"
    assert merged(capsys, tmp_path / "tree.json", level1, files=files) == flat
    rows = [json.loads(line) for line in files.read_text(encoding="utf-8").splitlines()]
    assert [row.pop("key") for row in rows] == [key for key, _ in keyed]  # a, then b/c: path order
    assert rows == [result for result, _ in counted]


def test_folder_inputs_in_path_order_hidden_names_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = tmp_path / "texts"
    texts.mkdir()
    for name, text in [("a.txt", "one two two"), ("b.txt", "two three"), ("c.txt", "three")]:
        (texts / name).write_text(text)
    parts = tmp_path / "parts"
    (parts / "sub").mkdir(parents=True)
    (parts / ".hidden").mkdir()
    count_many(capsys, parts / "y", [("B", texts / "b.txt")])
    count_many(capsys, parts / "sub" / "z", [("A", texts / "a.txt")])  # made last, read first
    counts = ["--counts", parts / "x"]
    assert run(capsys, "count", "--top", "1", "--output", tmp_path / "c.json", *counts, texts / "c.txt")[0] == 0
    (parts / ".y.part").write_text("a partial download")
    (parts / ".hidden" / "junk").write_text("junk")
    files = tmp_path / "files.jsonl"
    result = merged(capsys, tmp_path / "top.json", parts, files=files)
    assert result == {"files": 3, "words": 6, "distinct": 3, "top": [["two", 3], ["three", 2], ["one", 1]]}
    # sub/z, x (a counts file: no row), y: sorted name by name at each level
    assert [json.loads(line)["key"] for line in files.read_text().splitlines()] == ["A", "B"]


def test_empty_folder_and_no_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "parts"
    empty.mkdir()
    (empty / ".only-hidden").write_text("x")
    out = tmp_path / "top.json"
    assert_fails(run(capsys, "merge", "--top", "3", "--output", out, empty), 1, "parts", "no input files")
    assert_fails(run(capsys, "merge", "--top", "3", "--part", out), 2, "usage error")
    assert_fails(run(capsys, "merge", "--top", "3", "--output", out, "--part", out, empty), 2, "different files")
    assert_fails(run(capsys, "merge", "--top", "3", "--part", out, "--files", tmp_path / "f", empty), 2, "--files")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts"]


@pytest.mark.parametrize("bad", ["missing.txt", "folder"])
def test_failing_input_is_named_with_its_key_and_nothing_is_written(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("good.txt").write_text("fine words")
    Path("folder").mkdir()
    out = Path("out")
    out.mkdir()
    listing = write_list(Path("list"), [("k1", "good.txt"), ("the key", bad), ("k3", "good.txt")])
    outcome = run(capsys, "count-many", "--top", "3", "--output", out / "part", "--inputs", listing)
    assert_fails(outcome, 1, f"'{bad}'", "(key 'the key')", "no such file" if bad == "missing.txt" else "directory")
    assert list(out.iterdir()) == []  # neither the part file nor its temporary or spool files


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("k1\ta.txt\n\nno tab here\n", "line 3"),
        ("k1\ta.txt\n\tno key\n", "line 2"),
        ("k1\ta.txt\nk2\t\n", "line 2"),
        ("", "lists no input"),
        ("\n \n\t\n", "lists no input"),
    ],
)
def test_bad_lists_are_usage_errors(text: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "list").write_text(text)
    out = tmp_path / "part"
    assert_fails(run(capsys, "count-many", "--top", "3", "--output", out, "--inputs", tmp_path / "list"), 2, needle)
    assert not out.exists()


def test_list_details(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a b.txt").write_text("x y")
    listing = tmp_path / "list"
    listing.write_bytes(f"\ufeffk\t{tmp_path / 'a b.txt'}\r\n\r\n".encode())  # BOM, CRLF, absolute path
    out = tmp_path / "part"
    assert run(capsys, "count-many", "--top", "1", "--output", out, "--inputs", listing) == (0, "")
    assert [(r["key"], r["file"], r["top"]) for r in read_part(out)[1]] == [("k", "a b.txt", [["x", 1]])]
    assert_fails(run(capsys, "count-many", "--top", "1", "--output", out, "--inputs", tmp_path / "nope"), 1, "nope")
    listing.write_bytes(b"k\t\xff\n")
    assert_fails(run(capsys, "count-many", "--top", "1", "--output", out, "--inputs", listing), 2, "UTF-8")


def test_damaged_or_foreign_inputs_fail_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.txt").write_text("b a b c b a\nc d\n")
    part = count_many(capsys, tmp_path / "part", [("k", tmp_path / "a.txt"), ("k2", tmp_path / "a.txt")])
    good = part.read_text(encoding="utf-8")
    lines = good.splitlines(keepends=True)
    out = tmp_path / "top.json"
    damaged = {
        "truncated": good[:-1],
        "fewer words": "".join(lines[:-1]),
        "fewer rows": lines[0],
        "line 2 is not a per-file row": lines[0] + '{"key": "k"}\n' + "".join(lines[2:]),
        "line 4 is not 'word<TAB>count'": "".join(lines[:3]) + "b 6\n" + "".join(lines[4:]),
        "line 5 is out of order": "".join([*lines[:3], lines[4], lines[3], *lines[5:]]),
        "more lines": good + "e\t1\n",
        "do not add up": good.replace("b\t6", "b\t7"),
        "not a counts file or part file": "just some text\n",
    }
    for needle, text in damaged.items():
        part.write_text(text, encoding="utf-8")
        assert_fails(run(capsys, "merge", "--top", "3", "--output", out, part), 1, "'" + str(part), needle)
    part.write_bytes(b"\x89PNG\x00\x01")
    assert_fails(run(capsys, "merge", "--top", "3", "--output", out, part), 1, "not a counts file")
    assert run(capsys, "count", "--top", "1", "--output", tmp_path / "o", "--counts", tmp_path / "c", part)[0] == 0
    assert_fails(run(capsys, "merge", "--top", "3", "--part", out, tmp_path / "c"), 1, "no per-file row")
    assert_fails(run(capsys, "merge", "--top", "3", "--output", out, tmp_path / "gone"), 1, "gone", "no such file")
    assert not out.exists()


# The child's own high-water mark: ru_maxrss would include the pytest process it was forked from.
PEAK = """import sys
from topn_taskapp.cli import main
status = main(sys.argv[1:])
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
sys.exit(status)
"""


def peak_rss_mb(args: list[str | Path]) -> float:
    """Runs the command line in a process of its own; its peak resident memory."""
    cmd = [sys.executable, "-c", PEAK, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": ":".join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout) / 1024


def test_hundred_thousand_rows_in_a_thousand_parts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No argv limit (one folder argument) and memory that follows the vocabulary, not the number of rows."""
    parts = tmp_path / "parts"
    parts.mkdir()
    for p in range(1000):
        writer = PartWriter(io.StringIO())
        for f in range(100):
            word = f"w{(p * 100 + f) % 997}"
            row = {"key": f"{p}/{f}", "file": f"{p:04}-{f:03}.txt", "bytes": 9, "words": 2, "distinct": 2}
            writer.add_row({**row, "top": [["x", 1], [word, 1]], "skipped": None})
            writer.counts.update(["x", word])
        with (parts / f"part-{p:04}").open("w", encoding="utf-8") as out:
            writer.write(out)
    files = tmp_path / "files.jsonl"
    top = tmp_path / "top.json"
    # Holding the 100,000 rows would take over 100 MB; the interpreter itself takes about 10.
    assert peak_rss_mb(["merge", "--top", "2", "--output", top, "--files", files, parts]) < 40
    result = json.loads(top.read_text())
    assert result == {"files": 100_000, "words": 200_000, "distinct": 998, "top": [["x", 100_000], ["w0", 101]]}
    with files.open(encoding="utf-8") as rows:
        first, count = json.loads(next(rows)), 1 + sum(1 for _ in rows)
    assert (first["key"], count) == ("0/0", 100_000)
    assert run(capsys, "merge", "--top", "3", "--part", tmp_path / "all", parts) == (0, "")
    header = read_part(tmp_path / "all")[0]
    assert (header["files"], header["counted"], header["words"], header["distinct"]) == (100_000, 100_000, 200_000, 998)


def test_command_line_and_lean_start(tmp_path: Path) -> None:
    """Through a real process: the part file is written, and each command imports only what it needs."""
    (tmp_path / "a.txt").write_text("b a b")
    write_list(tmp_path / "list", [("k", tmp_path / "a.txt")])
    imports = {}
    for name, args in {
        "help": ["--help"],
        "count-many": ["count-many", "--top", "2", "--output", tmp_path / "part", "--inputs", tmp_path / "list"],
        "merge": ["merge", "--top", "2", "--output", tmp_path / "top.json", tmp_path / "part"],
    }.items():
        cmd = [sys.executable, "-S", "-X", "importtime", "-m", "topn_taskapp", *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": ":".join(sys.path)})
        assert proc.returncode == 0, proc.stderr
        imports[name] = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert json.loads((tmp_path / "top.json").read_text())["top"] == [["b", 2], ["a", 1]]
    for name, modules in imports.items():
        assert not modules & {"dataclasses", "inspect", "tempfile", "shutil", "typing"}, name
    assert not imports["help"] & {"json", "topn_taskapp.wordcount", "topn_taskapp.count", "topn_taskapp.merge"}
