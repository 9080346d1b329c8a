"""What a run keeps and what it leaves alone: finished work is never redone, and never is a pool not topn's."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from batch_emulator.server import Emulator

from tests.emulator.conftest import vm_config
from tests.flow.test_flow import poison
from tests.stack import wait_for
from tests.taskapp.oracle import spec_top
from topn.flows.topn import TopnFailed, topn
from topn.tasks.batch import PoolConflict, RunConflict


def test_a_pool_topn_did_not_create_is_left_untouched(settings_env, tmp_path: Path, emulator: Emulator) -> None:
    client = BatchClient(emulator.endpoint, emulator.credential())
    client.create_pool(m.BatchPoolCreateOptions(
        id="someone-elses", vm_size="standard_d2s_v3", virtual_machine_configuration=vm_config(),
        target_dedicated_nodes=0, metadata=[m.BatchMetadataItem(name="owner", value="data-science")]))  # fmt: skip
    before = wait_for(lambda: (p := client.get_pool("someone-elses")).allocation_state == "steady" and p)
    settings_env.setenv("TOPN_POOL_ID", "someone-elses")
    (tmp_path / "a.txt").write_text("some words")
    with pytest.raises(PoolConflict, match=r"'someone-elses' exists and was not created by topn.*TOPN_POOL_ID"):
        topn(paths=[str(tmp_path / "a.txt")], delete_pool=True)
    after = client.get_pool("someone-elses")
    assert (after.state, after.etag, after.metadata) == ("active", before.etag, before.metadata)
    assert not [j for j in client.list_jobs() if j.pool_info.pool_id == "someone-elses"]
    client.begin_delete_pool("someone-elses", polling_interval=0.1).result()


def test_a_rerun_after_a_failure_counts_only_what_did_not_finish(
    settings_env, tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(6):
        (folder / f"good-{i}.txt").write_text(f"alpha beta gamma{i} " * (i + 1))
    (folder / "poison.txt").write_text("delta epsilon delta")
    with pytest.MonkeyPatch.context() as patch:
        poison(patch, "/bin/sh -c 'echo \"transient trouble\" >&2; exit 3'")
        with pytest.raises(TopnFailed) as failed:
            topn(paths=[str(folder)], top=4, files_per_task=1)
    assert "poison.txt" in str(failed.value) and "counts only the others" in str(failed.value)

    started = emulator.service.scheduled
    result = topn(paths=[str(folder)], top=4, files_per_task=1)
    assert emulator.service.scheduled - started == 2  # the file that failed, and the merge: nothing else again
    assert [list(p) for p in result.top] == spec_top(folder, 4) and result.files_counted == 7
    assert {f.name.rsplit("/", 1)[-1]: f.words for f in result.files}["poison.txt"] == 3


def test_the_same_files_in_another_order_reuse_every_output(settings_env, tmp_path: Path, emulator: Emulator) -> None:
    (tmp_path / "a.txt").write_text("apple " * 3)
    (tmp_path / "b.txt").write_text("banana " * 5 + "cherry")
    first = topn(paths=[str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], top=2)
    started = emulator.service.scheduled
    second = topn(paths=[str(tmp_path / "b.txt"), str(tmp_path / "a.txt")], top=2)
    assert emulator.service.scheduled - started == 0  # every output is in storage: nothing runs
    assert {f.name: f.words for f in second.files} == {f.name: f.words for f in first.files} == {"a.txt": 3, "b.txt": 6}
    assert second.top == [("banana", 5), ("apple", 3)]


def test_an_explicit_run_id_used_again_for_other_inputs(settings_env, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("one one one")
    (tmp_path / "six.txt").write_text("six " * 6)
    (tmp_path / "two.txt").write_text("two two")
    first = [str(tmp_path / "one.txt"), str(tmp_path / "six.txt")]
    topn(paths=first, top=1, run_id="same-id", delete_job=False)
    with pytest.raises(RunConflict, match="'same-id' was made for other inputs"):
        topn(paths=[str(tmp_path / "two.txt")], top=1, run_id="same-id")
    topn(paths=first, top=1, run_id="same-id")  # the same inputs: reused, then the job is deleted
    # A clean start: the outputs the first inputs left under that id (two files' counts) are not merged in.
    result = topn(paths=[str(tmp_path / "two.txt")], top=1, run_id="same-id")
    assert result.top == [("two", 2)] and result.files_counted == 1
