"""The plan of a run, without any service: packing files into tasks, the merge tree, what an earlier attempt
finished, and the task specs (no file name on a command line, no request over Batch's 1 MB)."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from topn.flows import wordcount
from topn.tasks import layout, lineage
from topn.tasks.batch import MAX_REQUEST_BYTES, chunks
from topn.tasks.inputs import InputBlob, local_name
from topn.tasks.packing import Packing, PackSpec, pack


def blob(name: str, version: str = "v1", size: int = 10) -> InputBlob:
    return InputBlob(name, "in", f"uploads/{version}/{name}", size, version)


DEFAULT = Packing()


def packed(n: int, packing: Packing = DEFAULT, size: int = 10, top: int = 5) -> tuple[list, wordcount.Plan]:
    """n inputs of `size` bytes, planned as a first run of their lineage packs them."""
    inputs = [blob(f"file-{i:06}.txt", size=size) for i in range(n)]
    packs, _ = lineage.arrange(inputs, lineage.Catalog(), packing)
    return inputs, wordcount.make_plan(inputs, packs, top, "v", packing)


def test_output_keys_follow_content_n_and_version_not_runs() -> None:
    inputs, run = packed(3)
    assert packed(3)[1].root.key == run.root.key  # the same inputs: the same keys, whatever the run
    changed = [blob("file-000000.txt", "v2"), *inputs[1:]]
    assert wordcount.make_plan(changed, [PackSpec((0, 1, 2))], 5, "v", Packing()).root.key != run.root.key
    assert packed(3, top=6)[1].root.key != run.root.key
    assert wordcount.make_plan(inputs, [PackSpec((0, 1, 2))], 5, "v2", Packing()).root.key != run.root.key
    keys = [s.key for s in run.steps()]
    assert len(set(keys)) == len(keys) and all(len(k) == 32 for k in keys)
    assert len({i.row_key for i in inputs}) == 3 and inputs[0].row_key == blob("file-000000.txt").row_key


@pytest.mark.parametrize(("sizes", "files", "limit", "packs"), [
    ([], 100, 50, []),
    ([0] * 250, 100, 50, [100, 100, 50]),  # empty files count as files, not bytes
    ([25, 25], 100, 50, [2]),  # exactly at the byte limit: one task
    ([25, 25, 1], 100, 50, [2, 1]),
    ([1] * 100, 100, 500, [100]),  # exactly at the file limit
    ([1] * 101, 100, 500, [100, 1]),
    ([10, 100, 10], 100, 50, [1, 1, 1]),  # a file larger than the target is a task of its own
    ([100, 1, 1], 100, 50, [1, 2]),
    ([5] * 7, 1, 1000, [1] * 7),  # one file per task stays possible
])  # fmt: skip
def test_packing_boundaries(sizes: list[int], files: int, limit: int, packs: list[int]) -> None:
    ranges = pack(sizes, files, limit)
    assert [len(r) for r in ranges] == packs
    assert [i for r in ranges for i in r] == list(range(len(sizes)))  # every file once, in order
    assert all(len(r) == 1 or sum(sizes[i] for i in r) <= limit for r in ranges)


def test_a_merge_tree_over_several_levels_covers_every_file_once() -> None:
    _, run = packed(25, Packing(files_per_task=3, bytes_per_task=1000, fan_in=2))
    assert [s.id for s in run.counts] == [str(i) for i in range(1, 10)]
    assert run.root.id == wordcount.MERGE_ID and [c.id for c in run.root.children] == ["merge-3-1", "merge-3-2"]

    def files(step: wordcount.Step) -> list[int]:
        return list(step.inputs) if step.kind == wordcount.COUNT else [i for c in step.children for i in files(c)]

    assert files(run.root) == list(range(25))
    assert all(len(s.children) <= 2 for s in run.steps())
    readers = [c for s in run.steps() for c in s.children]  # each output is read by exactly one merge
    assert len(readers) == len(set(map(id, readers))) == len(run.steps()) - 1


def test_a_small_run_is_one_count_and_the_root_merge() -> None:
    _, run = packed(11, size=100)
    assert [s.id for s in run.steps()] == ["1", wordcount.MERGE_ID]
    assert [(s.id, [w.id for w in waits]) for s, waits in run.todo(set())] == [("1", []), ("merge", ["1"])]


def test_what_any_earlier_run_left_is_not_planned_again() -> None:
    _, run = packed(25, Packing(files_per_task=3, bytes_per_task=1000, fan_in=2))
    by_id = {s.id: s for s in run.steps()}
    names = [layout.part_blob(by_id["1"].key), layout.part_blob(by_id["merge-1-2"].key), "job/logs/3/stderr.txt",
             wordcount.result_blobs(run.root.key)[0]]  # fmt: skip
    done = wordcount.finished(names)
    assert done == {by_id["1"].key, by_id["merge-1-2"].key}  # a root with one of its two blobs is not done
    todo = dict((s.id, [w.id for w in waits]) for s, waits in run.todo(done))
    assert "1" not in todo and todo["merge-1-1"] == ["2"]  # waits only for what still runs
    assert not {"3", "4", "merge-1-2"} & set(todo)  # merge-1-2's output is there: nothing below it runs
    assert todo["merge-2-1"] == ["merge-1-1"]
    assert run.todo(wordcount.finished(list(wordcount.result_blobs(run.root.key)))) == []


def sources(names: list[str]) -> list[wordcount.Source]:
    return [wordcount.Source(blob(n), f"http://in/{i}?sig=s") for i, n in enumerate(names, 1)]


def test_file_names_never_reach_a_shell_unquoted(tmp_path: Path) -> None:
    _, run = packed(2)
    nasty = ["$(touch pwned); rm -rf ~ 'x' \"y\".txt", "same.txt"]
    task = wordcount.count_task(
        run.counts[0], sources(nasty), ("http://out?sig=s", "http://out?sig=r"), "job", run, 5, "v"
    )
    argv = shlex.split(task.command_line)
    assert argv[:2] == ["/bin/sh", "-c"] and not any("touch" in a or "same" in a for a in argv)
    env = {e.name: e.value for e in task.environment_settings}
    script = argv[2].split(" && ")[0]  # what writes the list of inputs, without starting the task application
    subprocess.run(["/bin/sh", "-c", script], env=env, cwd=tmp_path, check=True)
    listing = (tmp_path / "inputs.tsv").read_text().splitlines()
    keys = [blob(n).row_key for n in nasty]
    assert listing == [f"{keys[0]}\tin/1/{local_name(nasty[0])}", f"{keys[1]}\tin/2/same.txt"]
    assert [r.file_path for r in task.resource_files] == [line.split("\t")[1] for line in listing]
    assert not (tmp_path / "pwned").exists()


def test_merges_read_their_parts_by_key_in_order_and_wait_by_ranges_or_ids() -> None:
    _, run = packed(250, Packing(files_per_task=1, bytes_per_task=1000, fan_in=100))
    todo = dict((s.id, (s, waits)) for s, waits in run.todo(set()))
    step, waits = todo["merge-1-2"]
    merge = wordcount.merge_task(step, waits, "http://c/out?sig=s", "http://c/out?sig=w", "job", 5, "v")
    assert [(r.start, r.end) for r in merge.depends_on.task_id_ranges] == [(101, 200)]
    assert [r.http_url for r in merge.resource_files][:2] == [
        f"http://c/out/parts/{c.key}.part?sig=s" for c in step.children[:2]]  # fmt: skip
    assert [r.file_path for r in merge.resource_files][-1] == "parts/00100.part"  # read in order
    assert merge.output_files[0].destination.container.path == f"parts/{step.key}.part"
    root = wordcount.merge_task(*todo["merge"], "http://c/out?sig=s", "http://c/out?sig=w", "job", 5, "v")
    assert root.depends_on.task_ids == ["merge-1-1", "merge-1-2", "merge-1-3"]
    assert [o.destination.container.path for o in root.output_files][:2] == list(wordcount.result_blobs(run.root.key))
    assert root.output_files[2].destination.container.path == f"parts/{wordcount.root_part_key(run.root.key)}.part"
    assert root.output_files[3].destination.container.path == "job/logs/merge/stdout.txt"


def test_a_merge_waits_on_counts_and_merges_together() -> None:
    inputs = [blob(f"f{i}") for i in range(4)]
    packs = [PackSpec((0, 1, 2), ((0,), (1,), (2,))), PackSpec((3,))]  # a combined pack, then a count
    run = wordcount.make_plan(inputs, packs, 5, "v", Packing(files_per_task=4))
    assert [s.id for s in run.steps()] == ["1", "2", "3", "combine-1", "4", "merge"]
    assert run.root.children[0].key == wordcount.pack_key(inputs, (0, 1, 2), 5, "v")  # as if counted whole
    root = wordcount.merge_task(run.root, list(run.root.children), "http://c/o?s", "http://c/o?w", "job", 5, "v")
    assert [(r.start, r.end) for r in root.depends_on.task_id_ranges] == [(4, 4)]
    assert root.depends_on.task_ids == ["combine-1"]


def test_100000_files_plan_into_requests_batch_accepts() -> None:
    inputs = [blob(f"folder/file-{i:06}.txt", "v" * 32, 2_000) for i in range(100_000)]
    packs, _ = lineage.arrange(inputs, lineage.Catalog(), Packing())
    run = wordcount.make_plan(inputs, packs, 10, "v" * 16, Packing())
    assert (len(run.counts), len(run.root.children)) == (1000, 10)
    job, url = "topn-0123456789abcdef", "http://127.0.0.1:10000/devstoreaccount1/c?" + "s" * 120
    tasks = []
    for step, waits in run.todo(set()):
        if step.kind == wordcount.COUNT:
            srcs = [wordcount.Source(inputs[i], f"{url}&b={i}") for i in step.inputs]
            tasks.append(wordcount.count_task(step, srcs, (url, url), job, run, 10, "v" * 16))
        else:
            tasks.append(wordcount.merge_task(step, waits, url, url, job, 10, "v" * 16))
    assert max(len(t.command_line) for t in tasks) < 400  # the same few arguments whatever the number of files
    requests = chunks(tasks)
    assert sum(map(len, requests)) == 1011 and len(requests) < 1011 / 10
    assert all(len(json.dumps({"value": [t.as_dict() for t in c]})) < MAX_REQUEST_BYTES + 1000 for c in requests)
    assert all(len(c) <= 100 for c in requests)


def test_task_specs_are_added_in_groups_each_merge_after_what_it_waits_for() -> None:
    from topn.flows.topn import _groups

    _, run = packed(250, Packing(files_per_task=10, bytes_per_task=1000, fan_in=5))
    todo = run.todo(set())
    groups = _groups(todo, 60)
    assert [entry for group in groups for entry in group] == todo
    assert all(sum(len(s.inputs) for s, _ in group if s.kind == wordcount.COUNT) <= 60 for group in groups)
    assert len(groups) == 5
    added: set[str] = set()
    for group in groups:
        for step, waits in group:
            assert {w.id for w in waits} <= added  # what a merge waits for is in the job before it
            added.add(step.id)


def test_a_result_keeps_the_first_rows_and_counts_every_file() -> None:
    from topn.flows.result import file_results

    def line(key: str, words: int) -> bytes:
        return json.dumps({"key": key, "file": "x", "bytes": 1, "words": words, "distinct": 1, "top": [["w", words]],
                           "skipped": None}).encode()  # fmt: skip

    lines = b"\n".join([line("k3", 3), line("k1", 1), line("k2", 2), line("k2", 9), line("zz", 5)])
    rows = io.BytesIO(lines + b"\n")  # read line by line from a file, as the flow does
    files, missing = file_results(rows, ["k1", "k2", "k3", "k4"], ["a", "b", "c", "d"], ["1", "1", "2", "2"], keep=2)
    assert [(f.name, f.words, f.task_id) for f in files] == [("a", 1, "1"), ("b", 2, "1")]
    assert missing == 1  # d has no row; a row given twice counts once


def test_a_merge_whose_children_changed_a_little_is_an_edit_of_its_last_output() -> None:
    """12 packs of 2, 8 outputs a merge (two merges, then the root): a changed pack makes its merge an edit
    of the last one (its part out, the new one in), and new packs at the end edit the last merge."""
    packing = Packing(files_per_task=2, fan_in=8)
    inputs = [blob(f"f{i:03}.txt") for i in range(24)]
    packs, _ = lineage.arrange(inputs, lineage.Catalog(), packing)
    day1 = wordcount.make_plan(inputs, packs, 5, "v", packing)
    catalog = lineage.catalog_of("s", inputs, packs, wordcount.output_keys(day1))
    assert (
        wordcount.earlier_tree(catalog, 5, "v", packing).key == day1.root.key
    )  # the catalog rebuilds the tree it came from
    inputs2 = [*inputs[:5], blob("f005.txt", "v2"), *inputs[6:], blob("f100.txt"), blob("f101.txt")]
    packs2, _ = lineage.arrange(inputs2, catalog, packing)
    day2 = wordcount.make_plan(inputs2, packs2, 5, "v", packing)
    done = {s.key for s in day1.steps()} - {day1.root.key}
    edits = wordcount.edits(day2, wordcount.earlier_tree(catalog, 5, "v", packing), done)
    old = {s.id: s for s in day1.steps() if s.kind == wordcount.MERGE}
    # f005 changed: its pack (3) is recounted with its new version; f100 and f101 make a new pack at the end.
    assert set(edits) == {"merge-1-1", "merge-1-2"}, edits
    first, last = edits["merge-1-1"], edits["merge-1-2"]
    assert (first.base, first.drops, [a.id for a in first.adds]) == (old["merge-1-1"].key, (day1.counts[2].key,), ["3"])
    assert (last.base, last.drops, [a.id for a in last.adds]) == (old["merge-1-2"].key, (), ["13"])
    todo = dict((s.id, [w.id for w in waits]) for s, waits in day2.todo(done, edits))
    assert todo == {"3": [], "merge-1-1": ["3"], "13": [], "merge-1-2": ["13"], "merge": ["merge-1-1", "merge-1-2"]}
    merge = next(s for s in day2.steps() if s.id == "merge-1-1")
    task = wordcount.merge_task(merge, [], "https://a/c?sig=x", "https://a/c?sig=y", "j", 5, "v", first)
    assert "--edit base.part --drop drop parts" in task.command_line
    assert sorted(f.file_path for f in task.resource_files) == ["base.part", "drop/00001.part", "parts/00001.part"]
    # Nothing to edit from: no earlier tree, or its outputs gone from storage.
    assert (
        wordcount.edits(day2, None, done) == {}
        and wordcount.edits(day2, wordcount.earlier_tree(catalog, 5, "v", packing), set()) == {}
    )
    assert lineage.catalog_of("s", inputs2, packs2, wordcount.output_keys(day2, edits)).keys >= {
        first.base,
        *first.drops,
        last.base,
    }


def test_a_root_is_edited_from_its_own_part_and_a_grown_tree_from_the_old_root() -> None:
    """A tree of one root (no more packs than the fan-in): a changed pack makes the next root an edit of the
    last root's part file; when the packs outgrow the fan-in, the first new merge edits that part."""
    packing = Packing(files_per_task=2, fan_in=8)
    inputs = [blob(f"f{i:03}.txt") for i in range(16)]  # 8 packs: the root alone
    packs, _ = lineage.arrange(inputs, lineage.Catalog(), packing)
    day1 = wordcount.make_plan(inputs, packs, 5, "v", packing)
    catalog = lineage.catalog_of("s", inputs, packs, wordcount.output_keys(day1))
    root_part = wordcount.root_part_key(day1.root.key)
    assert root_part in catalog.keys
    done = {s.key for s in day1.steps()} | {root_part}
    changed = [blob("f000.txt", "v2"), *inputs[1:]]
    packs2, _ = lineage.arrange(changed, catalog, packing)
    day2 = wordcount.make_plan(changed, packs2, 5, "v", packing)
    edit = wordcount.edits(day2, wordcount.earlier_tree(catalog, 5, "v", packing), done)["merge"]
    assert (edit.base, edit.drops, [a.id for a in edit.adds]) == (root_part, (day1.counts[0].key,), ["1"])
    root = wordcount.merge_task(day2.root, [], "https://a/c?sig=x", "https://a/c?sig=y", "j", 5, "v", edit)
    assert "--output top.json --files files.jsonl --part part --edit base.part --drop drop parts" in root.command_line
    grown = [*changed, blob("f900.txt"), blob("f901.txt")]  # a ninth pack: merge-1-1 over the first eight
    packs3, _ = lineage.arrange(grown, catalog, packing)
    day3 = wordcount.make_plan(grown, packs3, 5, "v", packing)
    edits = wordcount.edits(day3, wordcount.earlier_tree(catalog, 5, "v", packing), done)
    assert set(edits) == {"merge-1-1"} and edits["merge-1-1"].base == root_part


def test_a_pack_with_members_changed_or_gone_is_an_edit_of_its_last_output() -> None:
    """A pack of 10 with one member rewritten and one deleted is made from its last part and members files:
    the new version in the old one's place, the deleted one dropped; too small a pack, or one whose outputs
    are not all in storage, is counted whole."""
    packing = Packing(files_per_task=10)
    inputs = [blob(f"f{i:03}.txt") for i in range(20)]
    packs, _ = lineage.arrange(inputs, lineage.Catalog(), packing)
    day1 = wordcount.make_plan(inputs, packs, 5, "v", packing)
    catalog = lineage.catalog_of("s", inputs, packs, wordcount.output_keys(day1))
    done = {s.key for s in day1.steps()} | {layout.members_blob(s.key) for s in day1.counts}
    inputs2 = [*inputs[:3], blob("f003.txt", "v2"), *inputs[4:7], *inputs[8:]]  # f003 rewritten, f007 gone
    packs2, _ = lineage.arrange(inputs2, catalog, packing)
    day2 = wordcount.make_plan(inputs2, packs2, 5, "v", packing)
    edits = wordcount.pack_edits(day2, inputs2, catalog, done, 5, "v")
    assert set(edits) == {"1"}, edits
    edit = edits["1"]
    assert (edit.base, edit.drops, edit.adds) == (day1.counts[0].key, (inputs[3].row_key, inputs[7].row_key), (3,))
    task = wordcount.count_task(
        day2.counts[0], sources(["f003.txt"]), ("https://a/c?sig=w", "https://a/c?sig=r"), "j", day2, 5, "v", edit
    )
    assert "--edit base.part --base-members base.members --drop drops.txt" in task.command_line
    assert sorted(f.file_path for f in task.resource_files) == ["base.members", "base.part", "in/1/f003.txt"]
    assert {e.name: e.value for e in task.environment_settings}[
        "TOPN_DROPS"
    ] == f"{inputs[3].row_key}\n{inputs[7].row_key}"
    assert [f.destination.container.path for f in task.output_files][:2] == [
        layout.part_blob(day2.counts[0].key),
        layout.members_blob(day2.counts[0].key),
    ]
    assert edit.base in wordcount.output_keys(day2, {}, edits)  # kept while the job reads it
    # Without its members file in storage, or as a pack of 3 with 2 changes, it is counted whole.
    assert wordcount.pack_edits(day2, inputs2, catalog, done - {layout.members_blob(edit.base)}, 5, "v") == {}
    small = Packing(files_per_task=3)
    three = inputs[:3]
    packs3, _ = lineage.arrange(three, lineage.Catalog(), small)
    plan3 = wordcount.make_plan(three, packs3, 5, "v", small)
    catalog3 = lineage.catalog_of("s", three, packs3, wordcount.output_keys(plan3))
    done3 = {s.key for s in plan3.steps()} | {layout.members_blob(s.key) for s in plan3.counts}
    changed = [blob("f000.txt", "v2"), three[1], blob("f002.txt", "v2")]
    packs4, _ = lineage.arrange(changed, catalog3, small)
    assert (
        wordcount.pack_edits(wordcount.make_plan(changed, packs4, 5, "v", small), changed, catalog3, done3, 5, "v")
        == {}
    )
