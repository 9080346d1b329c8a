"""The word count as a Batch workload: its plan (a count task per pack, the merge tree over them, content keys)
and the command lines of the task application (taskapp/) that carry it out.

Every output is stored under a key derived from what determines it (a Merkle tree), never under a job:
- a pack's part file (every member's row and the pack's summed counts) under a hash of the task
  application's version, N and its members' identities (name, container, blob and ETag or content hash);
- a merge's part file under a hash of the keys it merges, the root's result under another.
Any later run whose plan holds the same pack or merge reuses that output instead of running it again.

Which inputs make up which pack is `tasks/lineage.py`'s: packs stay as they were from one run to the next.
Here, packs become count tasks "1".."T"; merges read at most `fan_in` outputs each, level by level (in the
packs' order), up to the root merge "merge", which writes the global top N and every file's row. No task
reads more than `fan_in` blobs, no file list reaches a command line, and file names never decide an id.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from azure.batch import models as m

from topn.tasks.inputs import InputBlob, describe
from topn.tasks.inputs import content_hash as _hash
from topn.tasks.layout import (
    RESULTS,
    blob_url,
    depends_on,
    log_outputs,
    members_blob,
    output_file,
    part_blob,
    part_keys,
)
from topn.tasks.lineage import Catalog, member_keys
from topn.tasks.packing import Packing, PackSpec

MERGE_ID = "merge"
COUNT, COMBINE, MERGE, ROOT = "count", "combine", "merge", "root"


@dataclass(frozen=True, eq=False)
class Step:
    """One task of the plan: a count of `inputs` (positions in the run's inputs), or a merge of the outputs
    of `children`. Its output is stored under `key`."""

    id: str
    key: str
    kind: str
    inputs: tuple[int, ...] = ()
    children: tuple[Step, ...] = field(default=(), repr=False)

    @property
    def number(self) -> int:
        """A count task's number (its id): task dependencies name counts by ranges of these."""
        return int(self.id)


@dataclass(frozen=True)
class Plan:
    """Every task of a run: counts, combines, then levels of merges of at most `fan_in` outputs, up to one root."""

    root: Step
    counts: tuple[Step, ...]
    packing: Packing

    @property
    def fan_in(self) -> int:
        return self.packing.fan_in

    def steps(self) -> list[Step]:
        """Every step, each after the steps it reads."""
        return _steps(self.root)

    def todo(self, done: set[str], edits: dict[str, Edit] | None = None) -> list[tuple[Step, list[Step]]]:
        """The steps to run, each with the steps it waits for, given the keys of the outputs in storage
        already: a finished merge needs nothing below it, an edited one only what it adds."""
        steps: list[tuple[Step, list[Step]]] = []
        edits = edits or {}

        def visit(step: Step) -> bool:
            if step.key in done:
                return False
            below = edits[step.id].adds if step.id in edits else step.children
            waits = [child for child in below if visit(child)]
            steps.append((step, waits))
            return True

        visit(self.root)
        return steps


def pack_key(inputs: list[InputBlob], members: tuple[int, ...], top: int, version: str) -> str:
    """What a pack's part file depends on: the task application's version, N, and its members in order."""
    return rows_key([inputs[i].row_key for i in members], top, version)


def rows_key(row_keys: list[str], top: int, version: str) -> str:
    """A pack's key from its members' row keys (what a lineage's catalog keeps)."""
    return _hash("pack", version, top, row_keys)


def make_plan(inputs: list[InputBlob], packs: list[PackSpec], top: int, version: str, packing: Packing) -> Plan:
    """The tasks for these packs (in their order): a count per pack, a merge of its packs' parts per combined
    pack, then merges of `fan_in` consecutive outputs, level by level, up to the root."""
    counts: list[Step] = []

    def count(members: tuple[int, ...]) -> Step:
        step = Step(str(len(counts) + 1), pack_key(inputs, members, top, version), COUNT, members)
        counts.append(step)
        return step

    leaves: list[Step] = []
    for spec in packs:
        if spec.parts:
            key = pack_key(inputs, spec.members, top, version)
            leaves.append(
                Step(f"combine-{len(leaves) + 1}", key, COMBINE, spec.members, tuple(count(p) for p in spec.parts))
            )
        else:
            leaves.append(count(spec.members))
    return Plan(_tree(leaves, top, version, packing), tuple(counts), packing)


def _tree(leaves: list[Step], top: int, version: str, packing: Packing) -> Step:
    """Merges of `fan_in` consecutive outputs, level by level, up to the root: its position names each merge
    ("merge-L-J"), its children's keys key it."""
    level, nodes = 1, leaves
    while len(nodes) > packing.fan_in:
        groups = [nodes[s : s + packing.fan_in] for s in range(0, len(nodes), packing.fan_in)]
        nodes = [
            Step(f"merge-{level}-{j}", _hash("merge", version, top, [c.key for c in g]), MERGE, children=tuple(g))
            for j, g in enumerate(groups, 1)
        ]
        level += 1
    return Step(MERGE_ID, _hash("root", version, top, [c.key for c in nodes]), ROOT, children=tuple(nodes))


def tree_of(leaf_keys: list[str], top: int, version: str, packing: Packing) -> Step:
    """The merge tree a plan of leaves with these keys has (to compare an earlier run's plan with this one's)."""
    return _tree([Step(str(n), key, COUNT) for n, key in enumerate(leaf_keys, 1)], top, version, packing)


@dataclass(frozen=True)
class Edit:
    """An inner merge made from its output in an earlier plan, `base`: the outputs `drops` leave it and
    `adds` come in, the i-th add in the place of the i-th drop, the adds beyond them at the end (the task
    application's `merge --edit`). It reads those instead of every child."""

    base: str
    drops: tuple[str, ...]
    adds: tuple[Step, ...]


def root_part_key(root_key: str) -> str:
    """The root also writes its part file (every row and the summed counts), for a later root to edit."""
    return _hash("root-part", root_key)


def edits(plan: Plan, before: Step | None, done: set[str]) -> dict[str, Edit]:
    """The merges of `plan` (inner ones and the root) to make by editing an output of the plan `before` (the
    root of an earlier run's tree): an earlier merge at the same place, or one that held some of the same
    children at the same places (the tree grew a level), whose output and leaving children are in storage
    (`done`), when that reads fewer outputs than merging every child; the cheapest such edit."""
    earlier = [s for s in _steps(before) if s.kind in (MERGE, ROOT)] if before else []
    by_id = {s.id: s for s in earlier}
    placed: dict[tuple[str, int], list[Step]] = {}  # (child key, its place) -> the earlier merges it was in
    for prior in earlier:
        for place, child in enumerate(prior.children):
            placed.setdefault((child.key, place), []).append(prior)
    out: dict[str, Edit] = {}
    for step in plan.steps():
        if step.kind not in (MERGE, ROOT) or step.key in done:
            continue
        priors = {id(p): p for i, c in enumerate(step.children) for p in placed.get((c.key, i), [])}
        if step.id in by_id:
            priors[id(by_id[step.id])] = by_id[step.id]
        options = [e for prior in priors.values() if (e := _edit(step, prior, done))]
        if options:
            out[step.id] = min(options, key=lambda e: len(e.drops) + len(e.adds))
    return out


def _edit(step: Step, prior: Step, done: set[str]) -> Edit | None:
    """`step` as an edit of `prior`'s output, if that is in storage with what leaves it, and cheaper."""
    base = prior.key if prior.kind == MERGE else root_part_key(prior.key)
    if base not in done or prior.key == step.key:
        return None
    was, now = [c.key for c in prior.children], step.children
    changed = [i for i in range(min(len(was), len(now))) if was[i] != now[i].key]
    drops, adds = [was[i] for i in changed] + was[len(now) :], [now[i] for i in changed] + list(now[len(was) :])
    if adds and set(drops) <= done and 1 + len(drops) + len(adds) < len(now):
        return Edit(base, tuple(drops), tuple(adds))
    return None


@dataclass(frozen=True)
class PackEdit:
    """A pack made from its output in an earlier plan (`base`, with its members file): the members `drops`
    (row keys) leave it, the inputs `adds` (positions) come, the i-th add in the place of the i-th drop, the
    adds beyond them at the end (the task application's `count-many --edit`). Only the adds are counted."""

    base: str
    drops: tuple[str, ...]
    adds: tuple[int, ...]


def pack_edits(
    plan: Plan, inputs: list[InputBlob], catalog: Catalog, done: set[str], top: int, version: str
) -> dict[str, PackEdit]:
    """The count steps to make by editing a pack of the lineage's last plan: one that held members of the
    step's, whose part and members files are in storage (`done`), when that reads fewer blobs than counting
    every member (a changed file among 100 is 1 count and 2 reads, not 100)."""
    where: dict[str, list[int]] = {}
    for n, members in enumerate(catalog.packs):
        for member in members:
            where.setdefault(member, []).append(n)
    out: dict[str, PackEdit] = {}
    for step in plan.counts:
        if step.key in done:
            continue
        now = [(inputs[i].row_key, inputs[i].name_key, i) for i in step.inputs]
        candidates = {n for row, name, _ in now for n in where.get(f"{row}:{name}", ())}
        for n in sorted(candidates):
            was = [member_keys(m) for m in catalog.packs[n]]
            base = rows_key([row for row, _ in was], top, version)
            edit = _pack_edit(base, was, now) if base in done and members_blob(base) in done else None
            if edit and (step.id not in out or _size(edit) < _size(out[step.id])):
                out[step.id] = edit
    return out


def _size(edit: PackEdit) -> int:
    return len(edit.adds) + len(edit.drops)


def _pack_edit(base: str, was: list[tuple[str, str]], now: list[tuple[str, str, int]]) -> PackEdit | None:
    """The members `now` (row key, name key, position) as an edit of the earlier pack `was` (row key, name
    key): new versions of its names in their places, its other leavers gone, newcomers at the end; None if
    the step's order is not that, or if counting every member reads as little."""
    kept = {row for row, _, _ in now} & {row for row, _ in was}
    leaving = {name: row for row, name in was if row not in kept}
    replaced: dict[str, int] = {}  # an old row key -> the position of the new version in its place
    extra: list[int] = []
    for row, name, i in now:
        if row in kept:
            continue
        if name in leaving and leaving[name] not in replaced:
            replaced[leaving[name]] = i
        else:
            extra.append(i)
    rows = {i: row for row, _, i in now}
    order = [rows[replaced[row]] if row in replaced else row for row, _ in was if row in kept or row in replaced]
    if order + [rows[i] for i in extra] != [row for row, _, _ in now]:
        return None
    drops = [*replaced, *(row for row in leaving.values() if row not in replaced)]
    adds = [*replaced.values(), *extra]
    return PackEdit(base, tuple(drops), tuple(adds)) if 2 + len(adds) < len(now) else None


def joinable(todo: list[tuple[Step, list[Step]]], done: set[str]) -> frozenset[str]:
    """The combined packs to run whose packs all have members files (in storage, or written by this job's
    counts): their members file is the join of their packs'."""
    return frozenset(
        step.id
        for step, _ in todo
        if step.kind == COMBINE and all(c.key not in done or members_blob(c.key) in done for c in step.children)
    )


def _steps(root: Step) -> list[Step]:
    out: list[Step] = []

    def visit(step: Step) -> None:
        for child in step.children:
            visit(child)
        out.append(step)

    visit(root)
    return out


def result_blobs(root_key: str) -> tuple[str, str]:
    """The root merge's outputs: the global top N, and every file's row."""
    return f"{RESULTS}{root_key}/top.json", f"{RESULTS}{root_key}/files.jsonl"


def finished(names: list[str]) -> set[str]:
    """The keys whose outputs are among these blob names (a root's only when both its blobs are)."""
    present = set(names)
    roots = {name.split("/")[1] for name in present if name.startswith(RESULTS) and name.count("/") == 2}
    return part_keys(names) | {key for key in roots if set(result_blobs(key)) <= present}


def earlier_tree(catalog: Catalog, top: int, version: str, packing: Packing) -> Step | None:
    """The merge tree of a lineage's last plan, from its catalog's packs (None without any): what its merges
    were made of, for this run's merges to be edits of theirs."""
    if not catalog.packs:
        return None
    keys = [rows_key([member_keys(m)[0] for m in members], top, version) for members in catalog.packs]
    return tree_of(keys, top, version, packing)


def output_keys(plan: Plan, edits: dict[str, Edit] | None = None, packs: dict[str, PackEdit] | None = None) -> set[str]:
    """Every output key the plan makes or reads (its edited merges' bases and drops, its edited packs' bases:
    kept while its job may read them): what its lineage's catalog references."""
    read = {key for edit in (edits or {}).values() for key in (edit.base, *edit.drops)}
    read |= {edit.base for edit in (packs or {}).values()}
    return {step.key for step in plan.steps()} | {root_part_key(plan.root.key)} | read


def _taskapp(version: str, prelude: str = "") -> str:
    return f'{prelude}exec "$AZ_BATCH_NODE_SHARED_DIR/topn-taskapp/{version}/run" "$@"'


@dataclass(frozen=True)
class Source:
    """One input of a count task: the input, and a read SAS URL for it."""

    blob: InputBlob
    url: str


def count_task(
    step: Step,
    sources: list[Source],
    urls: tuple[str, str],
    job: str,
    plan: Plan,
    top: int,
    version: str,
    edit: PackEdit | None = None,
) -> m.BatchTaskCreateOptions:
    """The task counting a pack of inputs in one process (topn-taskapp count-many); its outputs, the part
    file and the members file (each member's own counts), go to the output container under the pack's key
    (`urls`: the output container's write and read SAS URLs). Inputs land in in/<n>/<name> (n: the input's
    place in the pack), so equal names never collide; each row is keyed by the input's identity, so a part
    file means the same in every run. The list travels in an environment variable, never on the command
    line. A file larger than a task's bytes (alone in its task) is counted by as many processes as the node
    has cores. An edited pack (`edit`) reads its earlier part and members files and counts only `sources`,
    the inputs it adds."""
    output_url, parts_url = urls
    paths = [(s.blob.row_key, f"in/{n}/{s.blob.local_name}") for n, s in enumerate(sources, 1)]
    env = {"TOPN_INPUTS": "\n".join(f"{key}\t{path}" for key, path in paths)}
    prelude = "printf '%s\\n' \"$TOPN_INPUTS\" > inputs.tsv && "
    reads = [m.ResourceFile(http_url=s.url, file_path=path) for s, (_, path) in zip(sources, paths, strict=True)]
    command = ["count-many", "--top", str(top), "--output", "part", "--members", "members", "--inputs", "inputs.tsv"]
    command += ["--jobs", "0", "--split-bytes", str(plan.packing.bytes_per_task)]
    if edit:
        env["TOPN_DROPS"] = "\n".join(edit.drops)
        prelude += "printf '%s\\n' \"$TOPN_DROPS\" > drops.txt && "
        command += ["--edit", "base.part", "--base-members", "base.members", "--drop", "drops.txt"]
        reads += [
            m.ResourceFile(http_url=blob_url(parts_url, blob), file_path=path)
            for path, blob in (("base.part", part_blob(edit.base)), ("base.members", members_blob(edit.base)))
        ]
    return m.BatchTaskCreateOptions(
        id=step.id,
        display_name=_label(step, sources, edit)[:1024],
        command_line=shlex.join(["/bin/sh", "-c", _taskapp(version, prelude), "topn-count", *command]),
        environment_settings=[m.EnvironmentSetting(name=k, value=v) for k, v in env.items()],
        resource_files=reads,
        output_files=[
            output_file(output_url, "part", part_blob(step.key), "tasksuccess"),
            output_file(output_url, "members", members_blob(step.key), "tasksuccess"),
            *log_outputs(output_url, job, step.id),
        ],
    )


def _label(step: Step, sources: list[Source], edit: PackEdit | None) -> str:
    """What a count task counts, for the Batch and Prefect views: its files, and for an edit, its pack."""
    files = describe([s.blob.name for s in sources]) if sources else ""
    if edit is None:
        return files
    gone = f"{len(edit.drops) - len(sources)} gone" if len(edit.drops) > len(sources) else ""
    return f"{', '.join(filter(None, [files, gone]))} (edit of a pack of {len(step.inputs)})"


def _depends_on(waits: list[Step]) -> m.BatchTaskDependencies | None:
    if not waits:
        return None
    return depends_on([s.number for s in waits if s.kind == COUNT], [s.id for s in waits if s.kind != COUNT])


def merge_task(
    step: Step,
    waits: list[Step],
    parts_url: str,
    output_url: str,
    job: str,
    top: int,
    version: str,
    edit: Edit | None = None,
    members: bool = False,
) -> m.BatchTaskCreateOptions:
    """A merge of the part files of the steps below it, downloaded as parts/00001.part... in their order. It
    runs when the steps it `waits` for succeeded (the others' outputs are in storage already). The root writes
    the global top N and every file's row, and its part file too; the others, a combined pack included, a
    part file. An edited merge reads an earlier output (base.part), the parts leaving it (drop/) and those
    coming (parts/). A combined pack with `members` also writes its members file, its packs' joined."""
    if step.kind == ROOT:
        top_blob, files_blob = result_blobs(step.key)
        outputs = ["--output", "top.json", "--files", "files.jsonl", "--part", "part"]
        files = [
            output_file(output_url, "top.json", top_blob, "tasksuccess"),
            output_file(output_url, "files.jsonl", files_blob, "tasksuccess"),
            output_file(output_url, "part", part_blob(root_part_key(step.key)), "tasksuccess"),
        ]
    else:
        outputs = ["--part", "part"]
        files = [output_file(output_url, "part", part_blob(step.key), "tasksuccess")]
    reads = [
        (f"parts/{n:05}.part", part_blob(child.key)) for n, child in enumerate(edit.adds if edit else step.children, 1)
    ]
    if edit:
        outputs += ["--edit", "base.part", *(["--drop", "drop"] if edit.drops else [])]
        reads += [("base.part", part_blob(edit.base))]
        reads += [(f"drop/{n:05}.part", part_blob(key)) for n, key in enumerate(edit.drops, 1)]
    prelude = ""
    if step.kind == COMBINE and members:  # a combined pack's members: its packs' members, in order
        reads += [(f"joined/{n:05}.members", members_blob(c.key)) for n, c in enumerate(step.children, 1)]
        prelude = "cat joined/*.members > members && "
        files.append(output_file(output_url, "members", members_blob(step.key), "tasksuccess"))
    command = ["/bin/sh", "-c", _taskapp(version, prelude), "topn-merge", "merge", "--top", str(top), *outputs, "parts"]
    return m.BatchTaskCreateOptions(
        id=step.id,
        display_name=step.id,
        command_line=shlex.join(command),
        resource_files=[m.ResourceFile(http_url=blob_url(parts_url, blob), file_path=path) for path, blob in reads],
        output_files=[*files, *log_outputs(output_url, job, step.id)],
        depends_on=_depends_on(waits),
    )
