"""Scheduled runs pay only for what is new: a prefix counted day after day on the real local stack, the nodes'
input downloads counted on the wire (a proxy in front of Azurite), every day's result checked against a fresh
count of the same blobs."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from batch_emulator.server import Emulator

from tests.faults import FaultProxy
from tests.stack import Azurite
from tests.taskapp.oracle import spec_counts
from topn.flows.topn import topn
from topn.tasks import layout, lineage, storage
from topn.tasks.inputs import InputBlob
from topn.tasks.settings import load_settings

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu")
FILES_PER_TASK = 10


class Drop:
    """A drop folder under a prefix of the input container, as users fill it, with what a fresh count gives."""

    def __init__(self, azurite: Azurite, proxy: FaultProxy, seed: int = 0) -> None:
        self.prefix = f"incoming-{uuid.uuid4().hex[:8]}/"
        self.container = azurite.client().get_container_client("topn-input")
        if not self.container.exists():
            self.container.create_container()
        self.proxy, self.rng, self.texts = proxy, random.Random(seed), {}

    def put(self, name: str, text: str | None = None) -> None:
        text = text or " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randrange(1, 60)))
        self.container.upload_blob(self.prefix + name, text.encode(), overwrite=True)
        self.texts[name] = text

    def delete(self, name: str) -> None:
        self.container.delete_blob(self.prefix + name)
        del self.texts[name]

    def run(self, **parameters: object):
        """The scheduled run: returns its result and the input blobs the nodes downloaded."""
        self.proxy.reset_counts()
        result = topn(blob_prefix=self.prefix, top=5, files_per_task=FILES_PER_TASK, **parameters)
        inputs = f"/devstoreaccount1/topn-input/{self.prefix}"
        downloads = [
            p for method, p, fault in self.proxy.events if method == "GET" and not fault and p.startswith(inputs)
        ]
        return result, len(downloads)

    def check(self, result) -> None:
        """The result is exactly a fresh count of the blobs there now."""
        counts = {name: spec_counts(text.encode()) for name, text in self.texts.items()}
        total = sum(counts.values(), Counter())
        expected = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        assert (result.top, result.words, result.distinct) == (expected, total.total(), len(total))
        assert result.files_counted == len(self.texts)
        assert {f.name.removeprefix(self.prefix): f.words for f in result.files} == {
            n: c.total() for n, c in counts.items()
        }


@pytest.fixture
def drop(settings_env: pytest.MonkeyPatch, azurite: Azurite, emulator: Emulator) -> Iterator[Drop]:
    """A counting proxy in front of Azurite that the flow and the nodes talk to; a pool of its own."""
    with FaultProxy(azurite.port, 0, 7) as proxy:
        settings_env.setenv("TOPN_LOCAL_BLOB_PORT", str(proxy.port))
        settings_env.setenv("TOPN_POOL_ID", "incremental")
        yield Drop(azurite, proxy)


def test_a_day_of_new_files_costs_those_files_and_no_change_costs_nothing(drop: Drop, emulator: Emulator) -> None:
    for i in range(60):
        drop.put(f"doc-{i:03}0.txt")
    first, downloads = drop.run()
    drop.check(first)
    assert downloads == 60 and first.stats.counted == 60 and first.stats.new == 60
    for i in (5, 17, 33, 41, 58):  # names that sort among the old ones
        drop.put(f"doc-{i:03}5.txt")
    second, downloads = drop.run()
    drop.check(second)
    assert downloads == 5  # at most k plus one pack's worth; here exactly k: new files go into a new pack
    assert (second.stats.new, second.stats.counted, second.stats.reused) == (5, 5, 60)
    scheduled = emulator.service.scheduled
    third, downloads = drop.run()
    drop.check(third)
    assert (downloads, emulator.service.scheduled - scheduled, third.stats.tasks_added) == (0, 0, 0)  # no job
    assert third.stats.reused_job and third.stats.reused == 65


def test_a_local_folder_counted_again_sends_only_what_is_new_or_changed(drop: Drop, tmp_path: Path) -> None:
    """`topn run FOLDER` day after day: a file whose output storage holds is read (for its content key) but
    never sent again; new and rewritten files are sent once, and only they are downloaded by the nodes."""
    folder = tmp_path / f"texts-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    for i in range(30):
        (folder / f"doc-{i:03}.txt").write_text(" ".join(drop.rng.choice(WORDS) for _ in range(20)) + f" n{i}")

    def run() -> tuple[object, int, int]:
        drop.proxy.reset_counts()
        result = topn(paths=[str(folder)], top=5, files_per_task=FILES_PER_TASK)
        uploads = "/devstoreaccount1/topn-input/uploads/"
        sent = [p for method, p, fault in drop.proxy.events if method == "PUT" and p.startswith(uploads)]
        read = [p for method, p, fault in drop.proxy.events if method == "GET" and p.startswith(uploads)]
        expected = sum((spec_counts(f.read_bytes()) for f in folder.iterdir()), Counter())
        files = len(list(folder.iterdir()))
        assert (result.words, result.distinct, result.files_counted) == (expected.total(), len(expected), files)
        assert result.top == sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        return result, len(sent), len(read)

    first, sent, read = run()
    assert (sent, read, first.stats.counted) == (30, 30, 30)
    again, sent, read = run()
    assert (sent, read, again.stats.counted, again.stats.reused) == (0, 0, 0, 30)
    (folder / "doc-007.txt").write_text("omega omega rewritten")
    for i in (30, 31):
        (folder / f"doc-{i:03}.txt").write_text(f"new words n{i}")
    day, sent, read = run()
    assert (sent, read) == (3, 3)
    assert (day.stats.new, day.stats.changed, day.stats.counted, day.stats.reused) == (2, 1, 3, 29)


def test_a_changed_blob_edits_only_its_pack_and_a_deleted_one_is_gone(
    drop: Drop, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(40):
        drop.put(f"doc-{i:03}.txt")
    drop.check(drop.run()[0])
    drop.put("doc-015.txt", "omega " * 7)  # same name, new content
    changed, downloads = drop.run()
    drop.check(changed)
    # Its pack is made from its last output: the new version counted in the old one's place, nothing else read.
    assert downloads == 1
    assert (changed.stats.changed, changed.stats.counted, changed.stats.count_tasks) == (1, 1, 1)
    assert "1 pack made from its last output: counting 1 files, not 10" in caplog.text
    assert {f.name: f.words for f in changed.files}[f"{drop.prefix}doc-015.txt"] == 7
    drop.delete("doc-032.txt")
    deleted, downloads = drop.run()
    drop.check(deleted)
    assert downloads == 0 and deleted.stats.deleted == 1 and deleted.stats.count_tasks == 1
    assert not any(f.name.endswith("doc-032.txt") for f in deleted.files)


def test_a_pack_is_counted_again_when_its_members_file_is_lost(drop: Drop, azurite: Azurite) -> None:
    """The members file is what an edit needs; without it (lost, removed by hand) the pack is counted
    whole, still exact."""
    outputs = azurite.client().get_container_client("topn-output")

    def members() -> set[str]:
        return {b.name for b in outputs.list_blobs(name_starts_with="parts/") if b.name.endswith(".members")}

    before = members() if outputs.exists() else set()
    for i in range(20):
        drop.put(f"doc-{i:03}.txt")
    drop.check(drop.run()[0])
    made = members() - before  # this run's: other tests' stay
    assert len(made) == 2
    for blob in made:
        outputs.delete_blob(blob)
    drop.put("doc-005.txt", "omega " * 3)
    result, downloads = drop.run()
    drop.check(result)
    assert downloads == FILES_PER_TASK and result.stats.counted == FILES_PER_TASK


@pytest.mark.parametrize("rate", [0, 0.05])
def test_days_of_random_additions_changes_and_deletions_match_a_fresh_count(
    drop: Drop, rate: float, settings_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings_env.setenv("TOPN_MERGE_FAN_IN", "4")  # a tree with inner merges, edited as packs change
    rng = random.Random(11)
    for i in range(50):
        drop.put(f"doc-{rng.randrange(100_000):05}-{i}.txt")
    drop.proxy.seed, drop.proxy.rate = 23, rate
    faults = 0
    for d in range(5):
        for i in range(rng.randrange(1, 12)):
            drop.put(f"doc-{rng.randrange(100_000):05}-day{d}-{i}.txt")
        for name in rng.sample(sorted(drop.texts), 3):
            if rng.random() < 0.5:
                drop.delete(name)
            else:
                drop.put(name)
        result, _ = drop.run()
        faults += sum(drop.proxy.faults.values())
        drop.check(result)
        # New and changed files only: a pack a change or deletion touched is edited, unless it is so small
        # (2 more members than it gains) that counting it whole reads as little.
        stats = result.stats
        assert stats.counted <= stats.new + stats.changed + 2 * (stats.changed + stats.deleted)
    assert rate == 0 or faults > 0, "no fault was injected: the test proves nothing"
    assert "made from its last output" in caplog.text or "made from their last output" in caplog.text
    assert "pack made from its last output" in caplog.text or "packs made from their last output" in caplog.text


def test_a_blob_that_changes_while_it_is_counted_is_counted_again_as_it_is_now(
    drop: Drop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(12):
        drop.put(f"doc-{i:02}.txt")
    listed = storage.list_inputs

    def list_then_change(*args, **kwargs):  # the blob changes after the run listed it, before it is counted
        inputs = listed(*args, **kwargs)
        if "doc-03.txt" in drop.texts and drop.texts["doc-03.txt"] != "moved " * 4:
            drop.put("doc-03.txt", "moved " * 4)
        return inputs

    monkeypatch.setattr(storage, "list_inputs", list_then_change)
    result, _ = drop.run()
    drop.check(result)
    assert {f.name: f.words for f in result.files}[f"{drop.prefix}doc-03.txt"] == 4  # as it is now
    assert "1 blobs changed while they were counted (incoming-" in caplog.text


def test_an_explicit_run_id_counts_anew_and_later_runs_reuse_it(drop: Drop) -> None:
    for i in range(25):
        drop.put(f"doc-{i:02}.txt")
    drop.check(drop.run()[0])
    again, downloads = drop.run(run_id=f"recount-{drop.prefix.rstrip('/')}")
    drop.check(again)
    assert downloads == 25 and again.stats.job_id.startswith("recount-")
    drop.put("doc-99.txt")
    later, downloads = drop.run()
    drop.check(later)
    assert downloads == 1


def test_retention_removes_only_what_no_lineage_references(drop: Drop, azurite: Azurite) -> None:
    for i in range(30):
        drop.put(f"doc-{i:02}.txt")
    drop.run()
    drop.put("doc-07.txt", "changed " * 3)
    current, _ = drop.run()
    outputs = azurite.client().get_container_client("topn-output")

    def keys() -> set[str]:
        return {k for b in outputs.list_blobs() if (k := layout.key_of(b.name))}

    catalogs = [lineage.Catalog.from_json(outputs.download_blob(b.name).readall())
                for b in outputs.list_blobs(name_starts_with=lineage.PREFIX)]  # fmt: skip
    referenced = set().union(*(c.keys for c in catalogs))
    before = keys()
    assert before - referenced  # yesterday's pack and tree, which no catalog references any more
    settings = load_settings()
    assert storage.remove_stale(settings, set()) == 0  # younger than the retention period (7 days)
    # Retention of no time at all (refused as a setting: no shorter than a job may run) removes them at once.
    unreferenced = before - referenced
    removed = storage.remove_stale(settings.model_copy(update={"output_retention": timedelta(0)}), set())
    assert removed >= len(unreferenced) and keys() >= before & referenced and not keys() & unreferenced
    again, downloads = drop.run()  # what is current is still all there: nothing to count
    drop.check(again)
    assert downloads == 0 and again.stats.reused_job and again.top == current.top


def test_delete_outputs_forgets_the_lineage_but_keeps_what_another_one_uses(drop: Drop, azurite: Azurite) -> None:
    for i in range(8):
        drop.put(f"doc-{i}.txt")
    drop.check(drop.run()[0])  # 10 files a pack: one pack, its root
    other = topn(blob_prefix=drop.prefix, top=5, files_per_task=50)  # another lineage, the same pack and root
    assert other.stats.reused_job
    topn(blob_prefix=drop.prefix, top=5, files_per_task=50, delete_outputs=True)
    kept, downloads = drop.run()  # the first lineage still has all it had
    assert downloads == 0 and kept.stats.reused_job
    drop.run(delete_outputs=True)  # now nothing references them: gone at once, whatever their age
    recounted, downloads = drop.run()
    drop.check(recounted)
    assert downloads == 8


def test_retention_may_not_be_shorter_than_a_job(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.setenv("TOPN_OUTPUT_RETENTION", "PT30M")
    with pytest.raises(ValueError, match="TOPN_OUTPUT_RETENTION: must be at least TOPN_JOB_TIMEOUT"):
        load_settings()


@pytest.mark.parametrize("request_cost", [storage.REQUEST_COST, 0])  # asked for one by one, or listed again
def test_blobs_that_moved_since_they_were_listed_are_named(
    drop: Drop, request_cost: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "REQUEST_COST", request_cost)
    for name in ("a.txt", "b.txt", "c.txt"):
        drop.put(name)
    settings = load_settings()
    blobs = [InputBlob(b.name, "topn-input", b.name, b.size, b.etag.strip('"'))
             for b in drop.container.list_blobs(name_starts_with=drop.prefix)]  # fmt: skip
    drop.put("b.txt", "another text")
    drop.delete("c.txt")
    assert storage.cover([b.blob for b in blobs], [b.blob for b in blobs]) == (
        ([drop.prefix], []) if request_cost == 0 else ([], [b.blob for b in blobs]))  # fmt: skip
    moved = storage.moved_blobs.fn(settings, blobs, [b.blob for b in blobs])
    assert moved == [f"{drop.prefix}b.txt", f"{drop.prefix}c.txt"]


def test_counted_blobs_are_seen_again_by_narrow_listings_and_single_requests() -> None:
    """A day of 10,000 blobs: the 3 recounted packs (100 names in a row each) are listed again under narrow
    prefixes, the 100 new blobs spread among the others asked for one by one; nothing is seen twice over."""
    listed = sorted(f"incoming/d{i // 1000:03}/f{i * 10:07}.txt" for i in range(10_000))
    packs = [listed[s : s + 100] for s in (1_200, 4_500, 7_000)]
    spread = listed[50::100]
    prefixes, heads = storage.cover([n for p in packs for n in p] + spread, listed)
    assert prefixes == ["incoming/d001/f0012", "incoming/d004/f0045", "incoming/d007/f0070"]
    assert set(heads) == set(spread) - {n for p in prefixes for n in listed if n.startswith(p)}
    under = sum(n.startswith(tuple(prefixes)) for n in listed)
    assert under == 300 and len(heads) == 97  # 3 requests listing 300 blobs and 97 single ones, not 10,000
