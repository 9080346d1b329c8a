"""The plan of a run, without any service: packing files into tasks, the merge tree, what an earlier attempt
finished, and the task specs (no file name on a command line, no request over Batch's 1 MB)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tasks import plan
from tasks.batch import MAX_REQUEST_BYTES, chunks


def blob(name: str, version: str = "v1", size: int = 10) -> plan.InputBlob:
    return plan.InputBlob(name, "in", f"uploads/{version}/{name}", size, version)


def test_job_ids_are_deterministic_per_inputs_n_and_packing() -> None:
    a = [blob("a.txt"), blob("b.txt")]
    assert plan.job_id(a, 10) == plan.job_id(list(reversed(a)), 10)
    assert plan.job_id(a, 10) != plan.job_id(a, 11)
    assert plan.job_id(a, 10) != plan.job_id([blob("a.txt", "v2"), blob("b.txt")], 10)
    assert plan.job_id(a, 10) != plan.job_id(a, 10, packing=plan.Packing(files_per_task=1))
    assert plan.job_id(a, 10, "mine") == "mine"
    assert len(plan.job_id(a, 10)) <= 64


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
    ranges = plan.pack(sizes, files, limit)
    assert [len(r) for r in ranges] == packs
    assert [i for r in ranges for i in r] == list(range(len(sizes)))  # every file once, in order
    assert all(len(r) == 1 or sum(sizes[i] for i in r) <= limit for r in ranges)


def test_a_merge_tree_over_several_levels_covers_every_file_once() -> None:
    run = plan.make_plan([10] * 25, plan.Packing(files_per_task=3, bytes_per_task=1000, fan_in=2))
    assert [len(level) for level in run.levels] == [9, 5, 3, 2, 1]
    assert run.root.id == plan.MERGE_ID and [s.id for s in run.levels[1]][:2] == ["merge-1-1", "merge-1-2"]

    def files(step: plan.Step) -> list[int]:
        return list(step.over) if step.level == 0 else [i for c in run.children(step) for i in files(c)]

    assert files(run.root) == list(range(25))
    for level in run.levels[:-1]:  # each output is read by exactly one merge, the one its blob name says
        for step in level:
            parent = run.levels[step.level + 1][run.parent(step) - 1]
            assert step in run.children(parent)


def test_a_small_run_is_one_count_and_the_root_merge() -> None:
    run = plan.make_plan([100] * 11)
    assert [[s.id for s in level] for level in run.levels] == [["1"], [plan.MERGE_ID]]
    assert [(s.id, [w.id for w in waits]) for s, waits in run.todo(set())] == [("1", []), ("merge", ["1"])]


def test_what_an_earlier_attempt_finished_is_not_planned_again() -> None:
    run = plan.make_plan([10] * 25, plan.Packing(files_per_task=3, bytes_per_task=1000, fan_in=2))
    layout = plan.Layout("job")
    names = [layout.part(run, run.levels[0][0]), layout.part(run, run.levels[1][1]), "job/logs/3/stderr.txt"]
    done = layout.finished(run, names)
    assert done == {(0, 1), (1, 2)}
    todo = dict((s.id, [w.id for w in waits]) for s, waits in run.todo(done))
    assert "1" not in todo and todo["merge-1-1"] == ["2"]  # waits only for what still runs
    assert not {"3", "4", "merge-1-2"} & set(todo)  # merge-1-2's output is there: nothing below it runs
    assert todo["merge-2-1"] == ["merge-1-1"]
    finished = layout.finished(run, [layout.top(), layout.files()])
    assert run.todo(finished) == []


def sources(names: list[str]) -> list[plan.Source]:
    return [plan.Source(i, blob(n), f"http://in/{i}?sig=s") for i, n in enumerate(names, 1)]


def test_file_names_never_reach_a_shell_unquoted(tmp_path: Path) -> None:
    run = plan.make_plan([10, 10])
    nasty = ["$(touch pwned); rm -rf ~ 'x' \"y\".txt", "same.txt"]
    task = plan.count_task(run.levels[0][0], sources(nasty), "http://out?sig=s", plan.Layout("job"), run, 5, "v")
    argv = shlex.split(task.command_line)
    assert argv[:2] == ["/bin/sh", "-c"] and not any("touch" in a or "same" in a for a in argv)
    env = {e.name: e.value for e in task.environment_settings}
    script = argv[2].split(" && ")[0]  # what writes the list of inputs, without starting the task application
    subprocess.run(["/bin/sh", "-c", script], env=env, cwd=tmp_path, check=True)
    listing = (tmp_path / "inputs.tsv").read_text().splitlines()
    assert listing == [f"1\tin/1/{plan.local_name(nasty[0])}", "2\tin/2/same.txt"]
    assert [r.file_path for r in task.resource_files] == [line.split("\t")[1] for line in listing]
    assert not (tmp_path / "pwned").exists()


def test_merges_read_one_prefix_and_wait_by_ranges_or_ids() -> None:
    run = plan.make_plan([10] * 250, plan.Packing(files_per_task=1, bytes_per_task=1000, fan_in=100))
    layout = plan.Layout("job")
    todo = dict((s.id, (s, waits)) for s, waits in run.todo(set()))
    step, waits = todo["merge-1-2"]
    merge = plan.merge_task(step, waits, "http://c?sig=s", "http://out?sig=s", layout, run, 5, "v")
    assert [(r.start, r.end) for r in merge.depends_on.task_id_ranges] == [(101, 200)]
    assert [r.blob_prefix for r in merge.resource_files] == ["job/parts/0/2/"]
    assert merge.output_files[0].destination.container.path == "job/parts/1/1/2.part"
    root = plan.merge_task(*todo["merge"], "http://c?sig=s", "http://out?sig=s", layout, run, 5, "v")
    assert root.depends_on.task_ids == ["merge-1-1", "merge-1-2", "merge-1-3"]
    assert [o.destination.container.path for o in root.output_files][:2] == ["job/top.json", "job/files.jsonl"]
    assert all(o.upload_options.upload_condition == "taskfailure" for o in root.output_files[2:])


def test_100000_files_plan_into_requests_batch_accepts() -> None:
    inputs = [blob(f"folder/file-{i:06}.txt", "v" * 32, 2_000) for i in range(100_000)]
    run = plan.make_plan([i.size for i in inputs])
    assert [len(level) for level in run.levels] == [1000, 10, 1]
    layout, url = plan.Layout("topn-0123456789abcdef"), "http://127.0.0.1:10000/devstoreaccount1/c?" + "s" * 120
    tasks = []
    for step, waits in run.todo(set()):
        if step.level == 0:
            srcs = [plan.Source(i + 1, inputs[i], f"{url}&b={i}") for i in step.over]
            tasks.append(plan.count_task(step, srcs, url, layout, run, 10, "v"))
        else:
            tasks.append(plan.merge_task(step, waits, url, url, layout, run, 10, "v"))
    assert max(len(t.command_line) for t in tasks) < 400  # the same few arguments whatever the number of files
    requests = chunks(tasks)
    assert sum(map(len, requests)) == 1011 and len(requests) < 1011 / 10
    assert all(len(json.dumps({"value": [t.as_dict() for t in c]})) < MAX_REQUEST_BYTES + 1000 for c in requests)
    assert all(len(c) <= 100 for c in requests)


def test_task_specs_are_added_in_groups_each_merge_after_what_it_waits_for() -> None:
    from flows.topn import _groups

    run = plan.make_plan([10] * 250, plan.Packing(files_per_task=10, bytes_per_task=1000, fan_in=5))
    todo = run.todo(set())
    groups = _groups(todo, 60)
    assert [entry for group in groups for entry in group] == todo
    assert all(sum(len(s.over) for s, _ in group if s.level == 0) <= 60 for group in groups) and len(groups) == 5
    added: set[str] = set()
    for group in groups:
        for step, waits in group:
            assert {w.id for w in waits} <= added  # what a merge waits for is in the job before it
            added.add(step.id)


def test_a_result_keeps_the_first_rows_and_counts_every_file() -> None:
    from flows.result import file_results

    def line(key: str, words: int) -> bytes:
        return json.dumps({"key": key, "file": "x", "bytes": 1, "words": words, "distinct": 1, "top": [["w", words]],
                           "skipped": None}).encode()  # fmt: skip

    lines = b"\n".join([line("3", 3), line("1", 1), line("2", 2), line("2", 9), line("zz", 5)])
    files, missing = file_results(lines, ["a", "b", "c", "d"], ["1", "1", "2", "2"], keep=2)
    assert [(f.name, f.words, f.task_id) for f in files] == [("a", 1, "1"), ("b", 2, "1")]
    assert missing == 1  # d has no row; a row given twice counts once
