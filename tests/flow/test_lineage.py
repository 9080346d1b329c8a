"""Stable packing across runs, without any service: what stays, what is recounted, how small packs combine."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from topn.flows import wordcount
from topn.tasks import lineage
from topn.tasks.inputs import InputBlob
from topn.tasks.packing import Packing, PackSpec

PACKING = Packing(files_per_task=10, bytes_per_task=10_000, fan_in=4)


def blob(name: str, version: str = "v1", size: int = 10) -> InputBlob:
    return InputBlob(name, "in", name, size, version)


def day(
    inputs: list[InputBlob], catalog: lineage.Catalog, packing: Packing = PACKING
) -> tuple[list[PackSpec], lineage.Changes, lineage.Catalog]:
    """One run's packing of `inputs` (sorted by name, as the flow gives them), and the catalog it leaves."""
    inputs = sorted(inputs, key=lambda i: i.name)
    packs, changes = lineage.arrange(inputs, catalog, packing)
    run = wordcount.make_plan(inputs, packs, 5, "v", packing)
    return packs, changes, lineage.catalog_of("prefix:in/", inputs, packs, wordcount.output_keys(run))


def names(inputs: list[InputBlob], packs: list[PackSpec]) -> list[list[str]]:
    ordered = sorted(inputs, key=lambda i: i.name)
    return [[ordered[i].name for i in p.members] for p in packs]


def test_new_files_that_sort_among_the_old_go_into_new_packs() -> None:
    first = [blob(f"f{i:03}0") for i in range(30)]
    packs, changes, catalog = day(first, lineage.Catalog())
    assert [len(p.members) for p in packs] == [10, 10, 10] and changes == lineage.Changes(new=30)
    later = first + [blob(f"f{i:03}5") for i in (3, 13, 23)]  # one between members of each pack
    again, changes, _ = day(later, catalog)
    assert names(later, again)[:3] == names(first, packs)  # the old packs, exactly as they were
    assert names(later, again)[3] == ["f0035", "f0135", "f0235"]
    assert changes == lineage.Changes(new=3, unchanged=30)


def test_a_changed_or_deleted_blob_invalidates_only_its_own_pack() -> None:
    first = [blob(f"f{i:02}") for i in range(30)]
    packs, _, catalog = day(first, lineage.Catalog())
    later = [blob("f15", "v2") if b.name == "f15" else b for b in first if b.name != "f04"]
    again, changes, _ = day(later, catalog)
    old = names(first, packs)
    # The changed f15 keeps its place (its pack is recounted with its new version), the deleted f04 is gone.
    assert names(later, again) == [[n for n in old[0] if n != "f04"], old[1], old[2]]
    assert [later[i].version for i in again[1].members if later[i].name == "f15"] == ["v2"]
    assert changes == lineage.Changes(changed=1, deleted=1, unchanged=28)


def test_a_changed_blob_that_no_longer_fits_its_pack_goes_into_a_new_one() -> None:
    packing = Packing(files_per_task=10, bytes_per_task=100, fan_in=4)
    first = [blob(f"f{i:02}", size=10) for i in range(20)]
    packs, _, catalog = day(first, lineage.Catalog(), packing)
    later = [blob("f05", "v2", size=50) if b.name == "f05" else b for b in first]
    again, changes, _ = day(later, catalog, packing)
    old = names(first, packs)
    assert names(later, again) == [[n for n in old[0] if n != "f05"], old[1], ["f05"]]
    assert changes == lineage.Changes(changed=1, unchanged=19)


def test_small_daily_packs_combine_by_merging_once_they_make_half_a_pack() -> None:
    inputs = [blob(f"a{i:02}") for i in range(20)]
    packs, _, catalog = day(inputs, lineage.Catalog())
    shapes = []
    for d in range(4):  # two new files a day: a pack of 2 each, combined when they reach 5 files or more
        inputs += [blob(f"d{d}-{i}") for i in range(2)]
        packs, _, catalog = day(inputs, catalog)
        shapes.append([(len(p.members), len(p.parts)) for p in packs])
    assert shapes == [[(10, 0), (10, 0), (2, 0)], [(10, 0), (10, 0), (2, 0), (2, 0)],
                      [(10, 0), (10, 0), (6, 3)], [(10, 0), (10, 0), (6, 0), (2, 0)]]  # fmt: skip


def test_a_lost_or_damaged_catalog_only_packs_anew() -> None:
    assert lineage.Catalog.from_json(b"{not json") == lineage.Catalog()
    assert lineage.Catalog.from_json(b'{"format": "other"}') == lineage.Catalog()
    inputs = [blob(f"f{i:02}") for i in range(12)]
    _, _, catalog = day(inputs, lineage.Catalog())
    assert lineage.Catalog.from_json(catalog.to_json()) == catalog
    doubled = lineage.Catalog(catalog.source, (catalog.packs[0], catalog.packs[0]), catalog.keys)
    packs, _, _ = day(inputs, doubled)  # a member listed twice is packed once
    assert sorted(i for p in packs for i in p.members) == list(range(12))


@pytest.mark.parametrize(
    "source", ["prefix:topn-input/incoming/", 'paths:["/data/a \\"keys\\":[\\"x\\"]}", "/data/,\\"keys\\":["]', ""]
)
def test_retention_reads_a_catalogs_keys_as_the_whole_catalog_gives_them(source: str) -> None:
    """keys_of_json reads the keys alone, and gives what the whole catalog gives, whatever the source holds;
    a catalog of another shape is read whole, a damaged one has none."""
    inputs = [InputBlob(f"f{i}.txt", "c", f"b{i}", 10, f"v{i}") for i in range(250)]
    packs, _ = lineage.arrange(inputs, lineage.Catalog(), Packing(100, 1 << 30, 4))
    catalog = lineage.catalog_of(source, inputs, packs, {f"{i:032x}" for i in range(40)})
    data = catalog.to_json()
    assert lineage.keys_of_json(data) == catalog.keys == lineage.Catalog.from_json(data).keys
    spaced = json.dumps(json.loads(data), indent=1).encode()  # another writer's shape: read whole
    assert lineage.keys_of_json(spaced) == catalog.keys
    assert lineage.keys_of_json(data[: len(data) // 2]) == frozenset()  # cut short: damaged, no keys
    assert lineage.keys_of_json(b'{"format": "other", "keys": ["a"]}') == frozenset()


@pytest.mark.parametrize("seed", range(20))
def test_any_series_of_days_packs_every_file_once_within_limits_and_replans_the_same(seed: int) -> None:
    rng = random.Random(seed)
    live: dict[str, InputBlob] = {}
    catalog, serial = lineage.Catalog(), 0
    for _ in range(12):
        for _ in range(rng.choice([0, 1, 3, 25])):
            serial += 1
            name = f"f{rng.randrange(10_000):05}-{serial}"
            live[name] = blob(name, size=rng.choice([10, 900, 6_000]))
        for name in rng.sample(sorted(live), min(len(live), rng.choice([0, 0, 1, 4]))):
            if rng.random() < 0.5:
                del live[name]
            else:
                live[name] = blob(name, f"v{serial}", live[name].size)
        inputs = sorted(live.values(), key=lambda i: i.name)
        packs, _, after = day(inputs, catalog)
        assert sorted(i for p in packs for i in p.members) == list(range(len(inputs)))
        for p in packs:
            size = sum(inputs[i].size for i in p.members)
            assert len(p.members) <= PACKING.files_per_task and (len(p.members) == 1 or size <= PACKING.bytes_per_task)
            assert not p.parts or [i for part in p.parts for i in part] == list(p.members)
        for a, b in itertools.pairwise(packs):  # small packs side by side: only if still small together
            assert not (_small(inputs, a.members) and _small(inputs, b.members)) or _small(
                inputs, a.members + b.members
            )
        again, _, same = day(inputs, after)  # a re-run (after a crash) plans the same packs, the same keys
        assert [p.members for p in again] == [p.members for p in packs] and not any(p.parts for p in again)
        assert same.packs == after.packs
        catalog = after


def _small(inputs: list[InputBlob], members: tuple[int, ...]) -> bool:
    return (
        2 * len(members) < PACKING.files_per_task and 2 * sum(inputs[i].size for i in members) < PACKING.bytes_per_task
    )
