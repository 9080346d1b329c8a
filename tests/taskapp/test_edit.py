"""`merge --edit`: a merge tree's node made from its last output and the parts that changed is the part file a
merge of all its new children writes, byte for byte."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from tests.taskapp.test_pack import assert_fails, count_many, run

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def parts(capsys: pytest.CaptureFixture[str], folder: Path, names: list[str], seed: int) -> list[Path]:
    """One part file per name, of three small files each with words of its own."""
    rng, out = random.Random(seed), []
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        entries = []
        for k in range(3):
            text = folder / f"{name}-{k}.txt"
            text.write_text(" ".join(rng.choice([*WORDS, name]) for _ in range(rng.randrange(1, 40))))
            entries.append((f"{name}{k}", text))
        out.append(count_many(capsys, folder / f"{name}.part", entries))
    return out


def merged(capsys: pytest.CaptureFixture[str], out: Path, inputs: list[Path]) -> bytes:
    assert run(capsys, "merge", "--top", "3", "--part", out, *inputs) == (0, "")
    return out.read_bytes()


def edited(capsys: pytest.CaptureFixture[str], tmp: Path, base: Path, drops: list[Path], adds: list[Path]) -> bytes:
    folder = tmp / "drop"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for n, path in enumerate(drops, 1):
        shutil.copy(path, folder / f"{n:05}.part")
    out = tmp / "edited.part"
    drop = ["--drop", folder] if drops else []
    assert run(capsys, "merge", "--top", "3", "--part", out, "--edit", base, *drop, *adds) == (0, "")
    return out.read_bytes()


def test_an_edited_node_is_the_merge_of_its_new_children(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c, d, e = parts(capsys, tmp_path / "old", ["a", "b", "c", "d", "e"], 1)
    b2, d2, f, g = parts(capsys, tmp_path / "new", ["b2", "d2", "f", "g"], 2)
    base = tmp_path / "base.part"
    merged(capsys, base, [a, b, c, d, e])
    cases = {
        "two replaced in place": ([b, d], [b2, d2], [a, b2, c, d2, e]),
        "replaced, and two more at the end": ([b], [b2, f, g], [a, b2, c, d, e, f, g]),
        "only more at the end": ([], [f], [a, b, c, d, e, f]),
        "replaced, and the last ones gone": ([c, d, e], [f], [a, b, f]),
        "the first replaced by one with the same words": ([a], [a], [a, b, c, d, e]),
    }
    for case, (drops, adds, children) in cases.items():
        assert edited(capsys, tmp_path, base, drops, adds) == merged(capsys, tmp_path / "fresh.part", children), case


def test_an_edit_that_does_not_fit_its_base_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = parts(capsys, tmp_path / "old", ["a", "b", "c"], 3)
    (x,) = parts(capsys, tmp_path / "new", ["x"], 4)
    base = tmp_path / "base.part"
    merged(capsys, base, [a, b])
    out = tmp_path / "out.part"
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(c, drop / "00001.part")
    edit = ["merge", "--top", "3", "--part", out, "--edit", base]
    assert_fails(run(capsys, *edit, "--drop", drop, x), 1, "does not hold every row of the parts to drop")
    assert_fails(run(capsys, *edit, "--drop", tmp_path / "gone", x), 1, "gone")
    assert_fails(run(capsys, "merge", "--top", "3", "--output", out, "--edit", base, x), 2, "--edit and --drop")
    assert not out.exists()


def test_a_root_writes_its_part_too_and_its_result_from_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--output` with `--part` (the root of a tree that later runs edit): the same result and rows as without,
    and the part file a `--part` merge writes; with `--edit`, the result of the edited part."""
    a, b, c = parts(capsys, tmp_path / "old", ["a", "b", "c"], 5)
    (b2,) = parts(capsys, tmp_path / "new", ["b2"], 6)
    out = {name: tmp_path / name for name in ("top.json", "files.jsonl", "root.part", "top2.json", "files2.jsonl")}
    both = ["--output", out["top.json"], "--files", out["files.jsonl"], "--part", out["root.part"]]
    assert run(capsys, "merge", "--top", "3", *both, a, b, c) == (0, "")
    alone = ["--output", out["top2.json"], "--files", out["files2.jsonl"]]
    assert run(capsys, "merge", "--top", "3", *alone, a, b, c) == (0, "")
    assert out["top.json"].read_bytes() == out["top2.json"].read_bytes()
    assert out["files.jsonl"].read_bytes() == out["files2.jsonl"].read_bytes()
    assert out["root.part"].read_bytes() == merged(capsys, tmp_path / "fresh.part", [a, b, c])
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(b, drop / "00001.part")
    edit = ["--part", tmp_path / "edited.part", "--edit", out["root.part"], "--drop", drop]
    assert run(capsys, "merge", "--top", "3", "--output", out["top.json"], *edit, b2) == (0, "")
    assert run(capsys, "merge", "--top", "3", "--output", out["top2.json"], a, b2, c) == (0, "")
    assert out["top.json"].read_bytes() == out["top2.json"].read_bytes()
    assert_fails(run(capsys, "merge", "--top", "3", a), 2, "give --output, --part or both")
