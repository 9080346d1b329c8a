"""Files packed into tasks, and merge trees, end to end on the real local stack."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from topn.flows import wordcount
from topn.flows.topn import TopnFailed, topn


def rows(result) -> list[tuple]:
    return sorted((f.name, f.bytes, f.words, f.distinct, f.top, f.skipped) for f in result.files)


def test_packed_and_one_file_per_task_give_the_same_results(settings_env: pytest.MonkeyPatch) -> None:
    packed = topn(paths=[str(SAMPLE)], top=5, run_id="packed-default")
    assert len({f.task_id for f in packed.files}) == 1 and packed.stats.tasks_added == 2  # one count, the merge
    settings_env.setenv("TOPN_MERGE_FAN_IN", "2")  # 11 outputs, merged 2 by 2: a tree of four levels
    single = topn(paths=[str(SAMPLE)], top=5, files_per_task=1, run_id="one-per-task")
    assert single.stats.tasks_added == 11 + 6 + 3 + 2 + 1
    by_size = topn(paths=[str(SAMPLE)], top=5, files_per_task=4, bytes_per_task=200_000, run_id="by-size")
    dickens = next(f for f in by_size.files if f.name.endswith("a-tale-of-two-cities.txt"))
    assert [f.task_id for f in by_size.files].count(dickens.task_id) == 1  # larger than the target: alone
    for other in (single, by_size):
        assert rows(other) == rows(packed)
        assert (other.top, other.words, other.distinct, other.files_counted) == (
            packed.top, packed.words, packed.distinct, packed.files_counted)  # fmt: skip
    assert (packed.files_counted, packed.words, packed.distinct) == (11, 196715, 12630)


def test_a_failed_file_inside_a_packed_task_is_named(settings_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("a.txt", "poison.txt", "z.txt"):
        (tmp_path / name).write_text(f"words of {name}")
    original = wordcount.count_task

    def count_task(*args, **kwargs):  # the file is gone when the task application looks for it
        task = original(*args, **kwargs)
        argv = shlex.split(task.command_line)
        argv[2] = "rm in/*/poison.txt && " + argv[2]
        task.command_line = shlex.join(argv)
        return task

    settings_env.setattr(wordcount, "count_task", count_task)
    with pytest.raises(TopnFailed) as e:
        topn(paths=[str(tmp_path)], top=3)
    message = str(e.value)
    assert "(3 files)" in message and "exit code 1" in message
    assert re.search(r"cannot read 'in/2/poison.txt' \(key '[0-9a-f]{20}'\): no such file", message), message
