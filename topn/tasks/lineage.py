"""Stable packing across runs: which inputs make up which pack, kept from one run of the same source to the
next, so that a run pays only for what is new.

A *lineage* is what a series of runs counts: one blob prefix (what a schedule counts every day) or one set
of local paths, with one N and one packing. Its *catalog* (a small blob, `lineages/<id>.json`) lists the
packs of its last plan, each as its members' identities. The next run of the lineage arranges its inputs
against it (`arrange`):
- a pack whose members are all still there, unchanged, stays exactly as it was (same key: its part file is
  reused), whatever sorts between its members now;
- a pack with a member changed (a new version of a name: a new identity) is recounted with the new
  version in the old one's place, unless that takes the pack over the bytes limit; one that lost members
  (deleted) is recounted without them, in its place;
- new blobs (and a changed one that no longer fits its pack), in name order, go into new packs at the end;
- then small packs are combined: consecutive packs each under half the limits (files and bytes) are
  grouped, in order, while the group stays within the limits; a group of two or more that is no longer small
  becomes one pack whose part file is the merge of theirs (never a recount). So every pack is at least half
  full but the last of each run of small ones, and a day of 20 new files is a pack of 20 until enough such
  days make one of 50 or more.
The catalog is a hint for packing only: outputs are found by their content keys (the workload's plan), so a
lost, stale or foreign catalog costs work, never exactness.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from topn.tasks.inputs import InputBlob
from topn.tasks.packing import Packing, PackSpec, pack

FORMAT = "topn-lineage/1"
PREFIX = "lineages/"


def lineage_id(source: str, variant: object, packing: Packing) -> str:
    """16 hex digits naming what a series of runs works on, how (the workload's `variant`, e.g. the word
    count's N) and with which packing."""
    shape = [packing.files_per_task, packing.bytes_per_task, packing.fan_in]
    return hashlib.sha256(json.dumps(["lineage", source, variant, shape]).encode()).hexdigest()[:16]


def catalog_blob(lineage: str) -> str:
    return f"{PREFIX}{lineage}.json"


def _member(blob: InputBlob) -> str:
    return f"{blob.row_key}:{blob.name_key}"


def member_keys(member: str) -> tuple[str, str]:
    """A catalog member's row key and name key (neither holds a colon)."""
    row, _, name = member.partition(":")
    return row, name


@dataclass(frozen=True)
class Catalog:
    """A lineage's last plan: its packs (members as "row key:name key"), and every output key the plan
    uses (what retention keeps)."""

    source: str = ""
    packs: tuple[tuple[str, ...], ...] = ()
    keys: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "source": self.source,
            "packs": [list(p) for p in self.packs],
            "keys": sorted(self.keys),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Catalog:
        """A catalog read back; anything else (damaged, another format) is an empty one: packing starts anew."""
        try:
            body = json.loads(data)
            if body["format"] != FORMAT:
                return cls()
            packs = tuple(tuple(str(m) for m in p) for p in body["packs"])
            return cls(str(body.get("source", "")), packs, frozenset(map(str, body["keys"])))
        except (ValueError, KeyError, TypeError):
            return cls()


_HEAD = b'{"format":' + json.dumps(FORMAT).encode()
_KEYS = b',"keys":['


def keys_of_json(data: bytes) -> frozenset[str]:
    """What `Catalog.from_json(data).keys` gives, without a string for every member: retention reads every
    lineage's catalog, and a 100,000-file one's members are 10 MB of strings. `to_json` writes the keys last,
    so they are read from there (no member, hex, nor the escaped source can hold that text); a catalog of
    any other shape is read whole."""
    at = data.rfind(_KEYS)
    if data.startswith(_HEAD) and at > 0 and data.endswith(b"]}"):
        try:
            keys = json.loads(data[at + len(_KEYS) - 1 : -1])
        except ValueError:
            keys = None
        if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
            return frozenset(keys)
    return Catalog.from_json(data).keys


def catalog_of(source: str, inputs: list[InputBlob], packs: list[PackSpec], keys: set[str]) -> Catalog:
    """The catalog of a plan: its packs as the next run will find them, and every output key it makes or
    reads (what retention keeps)."""
    members = tuple(tuple(_member(inputs[i]) for i in spec.members) for spec in packs)
    return Catalog(source, members, frozenset(keys))


@dataclass(frozen=True)
class Changes:
    """What a run's inputs are, against the lineage's last plan (by name: a new version of a name is a change)."""

    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0


def arrange(inputs: list[InputBlob], catalog: Catalog, packing: Packing) -> tuple[list[PackSpec], Changes]:
    """The packs for these inputs (sorted by name), kept as the catalog has them where their members are."""
    where = {blob.row_key: i for i, blob in enumerate(inputs)}  # its own strings: no new one per input
    by_name = {blob.name_key: i for i, blob in enumerate(inputs)}
    listed = {member for members in catalog.packs for member in members}
    claimed: set[int] = set()
    kept: list[tuple[int, ...]] = []
    old_names: set[str] = set()
    in_place = 0
    for members in catalog.packs:
        present: list[int] = []
        swapped: list[int] = []  # new versions in their old one's place
        for member in members:
            row, name = member_keys(member)
            old_names.add(name)
            i = where.get(row)
            if i is not None and inputs[i].name_key != name:  # a damaged member: the row's name is its own
                i = None
            if i is None:  # gone, or changed: a new version of the name takes the old one's place
                j = by_name.get(name)
                if j is None or j in claimed or _member(inputs[j]) in listed:
                    continue
                i = j
                swapped.append(j)
            if i not in claimed:  # a member listed twice (a damaged catalog) counts once
                claimed.add(i)
                present.append(i)
        while swapped and len(present) > 1 and sum(inputs[i].size for i in present) > packing.bytes_per_task:
            j = swapped.pop()  # grown past the pack's bytes: a new pack takes it
            present.remove(j)
            claimed.discard(j)
        in_place += len(swapped)
        if present:
            kept.append(tuple(present))
    fresh = [i for i in range(len(inputs)) if i not in claimed]
    kept += [
        tuple(fresh[j] for j in r)
        for r in pack([inputs[i].size for i in fresh], packing.files_per_task, packing.bytes_per_task)
    ]
    names_now = {blob.name_key for blob in inputs}
    renewed = sum(inputs[i].name_key in old_names for i in fresh)
    changes = Changes(len(fresh) - renewed, renewed + in_place, len(old_names - names_now), len(claimed) - in_place)
    return combine(kept, [blob.size for blob in inputs], packing), changes


def combine(packs: list[tuple[int, ...]], sizes: list[int], packing: Packing) -> list[PackSpec]:
    """Consecutive small packs (each under half the limits) grouped in order while the group stays within the
    limits; a group of two or more that is no longer small becomes one combined pack. Applied to its own
    result, it changes nothing: a combined pack is not small, and a group left alone ends its run of small ones."""

    def files_bytes(group: list[tuple[int, ...]]) -> tuple[int, int]:
        return sum(len(p) for p in group), sum(sizes[i] for p in group for i in p)

    def small(group: list[tuple[int, ...]]) -> bool:
        files, size = files_bytes(group)
        return 2 * files < packing.files_per_task and 2 * size < packing.bytes_per_task

    out: list[PackSpec] = []
    group: list[tuple[int, ...]] = []

    def flush() -> None:
        if len(group) > 1 and not small(group):
            out.append(PackSpec(tuple(i for p in group for i in p), tuple(group)))
        else:
            out.extend(PackSpec(p) for p in group)
        group.clear()

    for members in packs:
        if not small([members]):
            flush()
            out.append(PackSpec(members))
            continue
        files, size = files_bytes([*group, members])
        if group and (files > packing.files_per_task or size > packing.bytes_per_task):
            flush()
        group.append(members)
    flush()
    return out
