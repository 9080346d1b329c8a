"""`count-many --edit`: a pack whose members changed a little, made from its last part file and members
file, is what `count-many` of its new members writes, byte for byte, both files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.taskapp.test_pack import assert_fails, run, write_list

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "Ünïcode"]


def texts(folder: Path, names: list[str], seed: int) -> dict[str, Path]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        path = folder / f"{name}.txt"
        path.write_text(" ".join(rng.choice([*WORDS, name]) for _ in range(rng.randrange(0, 60))), encoding="utf-8")
        out[name] = path
    return out


def pack(capsys: pytest.CaptureFixture[str], out: Path, entries: list[tuple[str, Path]]) -> tuple[bytes, bytes]:
    listing = write_list(out.with_name(f".{out.name}.list"), entries)
    members = out.with_suffix(".members")
    assert run(capsys, "count-many", "--top", 3, "--output", out, "--members", members, "--inputs", listing) == (0, "")
    return out.read_bytes(), members.read_bytes()


def repack(
    capsys: pytest.CaptureFixture[str], tmp: Path, base: Path, drops: list[str], adds: list[tuple[str, Path]]
) -> tuple[bytes, bytes]:
    listing = write_list(tmp / "adds.tsv", adds)
    (tmp / "drops.txt").write_text("".join(f"{k}\n" for k in drops), encoding="utf-8")
    out, members = tmp / "edited.part", tmp / "edited.members"
    args = ["count-many", "--top", 3, "--output", out, "--members", members, "--inputs", listing]
    args += ["--edit", base, "--base-members", base.with_suffix(".members"), "--drop", tmp / "drops.txt"]
    assert run(capsys, *args) == (0, "")
    return out.read_bytes(), members.read_bytes()


def test_an_edited_pack_is_the_count_of_its_new_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = texts(tmp_path / "old", ["a", "b", "c", "d", "e"], 1)
    new = texts(tmp_path / "new", ["b2", "d2", "f"], 2)
    entries = [(k, old[k]) for k in "abcde"]
    base = tmp_path / "base.part"
    pack(capsys, base, entries)
    cases = {
        "two replaced in place": (["b", "d"], [("b2", new["b2"]), ("d2", new["d2"])], "a b2 c d2 e"),
        "one replaced, one gone": (["d", "a"], [("d2", new["d2"])], "b c d2 e"),
        "two gone": (["a", "e"], [], "b c d"),
        "one replaced, one more at the end": (["c"], [("b2", new["b2"]), ("f", new["f"])], "a b b2 d e f"),
        "only more at the end": ([], [("f", new["f"])], "a b c d e f"),
    }
    files = {**old, **new}
    members_file = base.with_suffix(".members").read_bytes()
    alone = b"".join(pack(capsys, tmp_path / f"{k}.part", [(k, old[k])])[0] for k in "abcde")
    assert members_file == alone  # each member is the part file of that input alone
    for case, (drops, adds, members) in cases.items():
        want = pack(capsys, tmp_path / "fresh.part", [(k, files[k]) for k in members.split()])
        assert repack(capsys, tmp_path, base, drops, adds) == want, case


def test_a_member_not_in_the_base_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = texts(tmp_path / "old", ["a", "b"], 3)
    base = tmp_path / "base.part"
    pack(capsys, base, [(k, old[k]) for k in "ab"])
    listing = write_list(tmp_path / "adds.tsv", [("a2", old["a"])])
    (tmp_path / "drops.txt").write_text("zz\n")
    args = ["count-many", "--top", 3, "--output", tmp_path / "out.part", "--inputs", listing, "--edit", base]
    with_members = [*args, "--base-members", base.with_suffix(".members"), "--drop", tmp_path / "drops.txt"]
    assert_fails(run(capsys, *with_members), 1, "has no member 'zz' to drop")
    assert not (tmp_path / "out.part").exists()
    assert_fails(run(capsys, *args), 2, "go together")
    damaged = tmp_path / "damaged.members"
    damaged.write_bytes(base.with_suffix(".members").read_bytes()[:-3])
    (tmp_path / "drops.txt").write_text("b\n")
    bad = [*args, "--base-members", damaged, "--drop", tmp_path / "drops.txt"]
    assert_fails(run(capsys, *bad), 1, "not a members file", "truncated")
    (tmp_path / "drops.txt").write_text("a\na\n")
    twice = [*args, "--base-members", base.with_suffix(".members"), "--drop", tmp_path / "drops.txt"]
    assert_fails(run(capsys, *twice), 2, "names a key twice")
