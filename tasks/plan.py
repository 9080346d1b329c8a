"""The shape of one run, as pure functions: packs of inputs, the merge tree over them, content keys, blob
names and the word count's command lines.

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

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cached_property

from azure.batch import models as m

MERGE_ID = "merge"
COUNT, COMBINE, MERGE, ROOT = "count", "combine", "merge", "root"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


def _hash(*parts: object, digits: int = 32) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:digits]


@dataclass(frozen=True)
class InputBlob:
    """One input: its name as users know it, and where its bytes are in storage."""

    name: str
    container: str
    blob: str
    size: int
    version: str  # content hash or ETag: it changes when the content does

    @property
    def local_name(self) -> str:
        return local_name(self.name)

    @cached_property
    def row_key(self) -> str:
        """The input's identity in 20 hex digits: the key of its row in part files, the same in every run."""
        return _hash(self.name, self.container, self.blob, self.version, digits=20)

    @cached_property
    def name_key(self) -> str:
        """Its name alone (12 hex digits): a new version of the same name is a changed file, not a new one."""
        return _hash(self.name, self.container, digits=12)


def local_name(name: str, limit: int = 150) -> str:
    """A file name for the node: the input's base name, without control characters, and short enough for
    any file system (a long one keeps its start and extension and gains a hash)."""
    base = _UNSAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]) or "input"
    if base in (".", ".."):
        base = "input" + base
    if len(base.encode()) <= limit:
        return base
    stem, dot, ext = base.rpartition(".")
    ext = f".{ext}" if dot and len(ext) <= 16 else ""
    head = (stem if ext else base).encode()[: limit - 30].decode(errors="ignore")
    return f"{head}~{hashlib.sha256(base.encode()).hexdigest()[:8]}{ext}"


@dataclass(frozen=True)
class Packing:
    """How files are packed into tasks, and how many outputs one merge reads."""

    files_per_task: int = 100
    bytes_per_task: int = 64 << 20  # a file larger than this is a task of its own
    fan_in: int = 100


def upload_blob_name(relative: str, sha256: str) -> str:
    """Uploads are content-addressed: a file never overwrites another's bytes."""
    return f"uploads/{sha256[:32]}/{local_name(relative)}"


def pack(sizes: list[int], files_per_task: int, bytes_per_task: int) -> list[range]:
    """Consecutive files as packs of at most `files_per_task` files and `bytes_per_task` bytes; a file larger
    than that is a pack of its own. Returns ranges of positions in `sizes`."""
    packs: list[range] = []
    start = total = 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= files_per_task or total + size > bytes_per_task):
            packs.append(range(start, i))
            start, total = i, 0
        total += size
    if sizes:
        packs.append(range(start, len(sizes)))
    return packs


@dataclass(frozen=True)
class PackSpec:
    """One pack: positions of its members in the run's inputs, in their order in its part file. A combined
    pack also names the packs whose part files it merges (it is never counted as a whole)."""

    members: tuple[int, ...]
    parts: tuple[tuple[int, ...], ...] = ()


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
            leaves.append(Step(f"combine-{len(leaves) + 1}", key, COMBINE, spec.members,
                               tuple(count(p) for p in spec.parts)))  # fmt: skip
        else:
            leaves.append(count(spec.members))
    return Plan(_tree(leaves, top, version, packing), tuple(counts), packing)


def _tree(leaves: list[Step], top: int, version: str, packing: Packing) -> Step:
    """Merges of `fan_in` consecutive outputs, level by level, up to the root: its position names each merge
    ("merge-L-J"), its children's keys key it."""
    level, nodes = 1, leaves
    while len(nodes) > packing.fan_in:
        groups = [nodes[s : s + packing.fan_in] for s in range(0, len(nodes), packing.fan_in)]
        nodes = [Step(f"merge-{level}-{j}", _hash("merge", version, top, [c.key for c in g]), MERGE, children=tuple(g))
                 for j, g in enumerate(groups, 1)]  # fmt: skip
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


def _steps(root: Step) -> list[Step]:
    out: list[Step] = []

    def visit(step: Step) -> None:
        for child in step.children:
            visit(child)
        out.append(step)

    visit(root)
    return out


# Blob names in the output container: outputs by key, never by job; a job's own folder holds only the logs
# of its failed tasks.
PARTS = "parts/"
RESULTS = "results/"


def part_blob(key: str) -> str:
    return f"{PARTS}{key}.part"


def result_blobs(root_key: str) -> tuple[str, str]:
    """The root merge's outputs: the global top N, and every file's row."""
    return f"{RESULTS}{root_key}/top.json", f"{RESULTS}{root_key}/files.jsonl"


def logs_blob(job: str, task: str) -> str:
    return f"{job}/logs/{task}"


def key_of(blob: str) -> str | None:
    """The output key a blob name in the output container holds, if it is an output."""
    if blob.startswith(PARTS) and blob.endswith(".part"):
        return blob[len(PARTS) : -len(".part")]
    if blob.startswith(RESULTS) and blob.count("/") == 2:
        return blob.split("/")[1]
    return None


def finished(names: list[str]) -> set[str]:
    """The keys whose outputs are among these blob names (a root's only when both its blobs are)."""
    present = set(names)
    done = {key for name in present if name.startswith(PARTS) and (key := key_of(name))}
    roots = {key_of(name) for name in present if name.startswith(RESULTS)}
    return done | {key for key in roots if key and set(result_blobs(key)) <= present}


def _output(container_url: str, pattern: str, blob: str, condition: str) -> m.OutputFile:
    return m.OutputFile(
        file_pattern=pattern,
        destination=m.OutputFileDestination(
            container=m.OutputFileBlobContainerDestination(container_url=container_url, path=blob)
        ),
        upload_options=m.OutputFileUploadConfiguration(upload_condition=condition),
    )


def _log_outputs(container_url: str, job: str, task: str) -> list[m.OutputFile]:
    """stdout and stderr reach storage only when the task failed: a run of 10,000 files does not pay 20,000
    uploads for empty logs, and a failure still shows its stderr after the job is gone."""
    return [
        _output(container_url, f"../{name}", f"{logs_blob(job, task)}/{name}", "taskfailure")
        for name in ("stdout.txt", "stderr.txt")
    ]


def _taskapp(version: str, prelude: str = "") -> str:
    return f'{prelude}exec "$AZ_BATCH_NODE_SHARED_DIR/topn-taskapp/{version}/run" "$@"'


def describe(files: list[str]) -> str:
    """A pack's files as a short label: one name, or the first and last and how many."""
    if len(files) == 1:
        return files[0]
    return f"{files[0]} … {files[-1]} ({len(files)} files)"


@dataclass(frozen=True)
class Source:
    """One input of a count task: the input, and a read SAS URL for it."""

    blob: InputBlob
    url: str


def count_task(
    step: Step, sources: list[Source], output_url: str, job: str, plan: Plan, top: int, version: str
) -> m.BatchTaskCreateOptions:
    """The task counting a pack of inputs in one process (topn-taskapp count-many); its one output, the part
    file, goes to the output container under the pack's key. Inputs land in in/<n>/<name> (n: the input's
    place in the pack), so equal names never collide; each row is keyed by the input's identity, so a part
    file means the same in every run. The list travels in an environment variable, never on the command
    line. A file larger than a task's bytes (alone in its task) is counted by as many processes as the node
    has cores."""
    paths = [(s.blob.row_key, f"in/{n}/{s.blob.local_name}") for n, s in enumerate(sources, 1)]
    listing = "\n".join(f"{key}\t{path}" for key, path in paths)
    script = _taskapp(version, "printf '%s\\n' \"$TOPN_INPUTS\" > inputs.tsv && ")
    command = ["/bin/sh", "-c", script, "topn-count", "count-many", "--top", str(top), "--output", "part",
               "--inputs", "inputs.tsv", "--jobs", "0", "--split-bytes", str(plan.packing.bytes_per_task)]  # fmt: skip
    return m.BatchTaskCreateOptions(
        id=step.id,
        display_name=describe([s.blob.name for s in sources])[:1024],
        command_line=shlex.join(command),
        environment_settings=[m.EnvironmentSetting(name="TOPN_INPUTS", value=listing)],
        resource_files=[
            m.ResourceFile(http_url=s.url, file_path=path) for s, (_, path) in zip(sources, paths, strict=True)
        ],
        output_files=[
            _output(output_url, "part", part_blob(step.key), "tasksuccess"),
            *_log_outputs(output_url, job, step.id),
        ],
    )


def id_ranges(ids: list[int]) -> list[m.BatchTaskIdRange]:
    """Task ids as the fewest ranges: "1".."N" is one range, whatever N; gaps (finished files) split it."""
    ranges: list[m.BatchTaskIdRange] = []
    for i in sorted(ids):
        if ranges and ranges[-1].end == i - 1:
            ranges[-1].end = i
        else:
            ranges.append(m.BatchTaskIdRange(start=i, end=i))
    return ranges


def _depends_on(waits: list[Step]) -> m.BatchTaskDependencies | None:
    if not waits:
        return None
    counts = [s.number for s in waits if s.kind == COUNT]
    others = [s.id for s in waits if s.kind != COUNT]
    return m.BatchTaskDependencies(task_id_ranges=id_ranges(counts) or None, task_ids=others or None)


def blob_url(container_url: str, blob: str) -> str:
    """One blob's URL from its container's SAS URL (the same signature serves every blob in it)."""
    base, _, query = container_url.partition("?")
    return f"{base}/{blob}?{query}"


def merge_task(
    step: Step,
    waits: list[Step],
    parts_url: str,
    output_url: str,
    job: str,
    top: int,
    version: str,
    edit: Edit | None = None,
) -> m.BatchTaskCreateOptions:
    """A merge of the part files of the steps below it, downloaded as parts/00001.part... in their order. It
    runs when the steps it `waits` for succeeded (the others' outputs are in storage already). The root writes
    the global top N and every file's row, and its part file too; the others, a combined pack included, a
    part file. An edited merge reads an earlier output (base.part), the parts leaving it (drop/) and those
    coming (parts/)."""
    if step.kind == ROOT:
        top_blob, files_blob = result_blobs(step.key)
        outputs = ["--output", "top.json", "--files", "files.jsonl", "--part", "part"]
        files = [_output(output_url, "top.json", top_blob, "tasksuccess"),
                 _output(output_url, "files.jsonl", files_blob, "tasksuccess"),
                 _output(output_url, "part", part_blob(root_part_key(step.key)), "tasksuccess")]  # fmt: skip
    else:
        outputs = ["--part", "part"]
        files = [_output(output_url, "part", part_blob(step.key), "tasksuccess")]
    reads = [(f"parts/{n:05}.part", child.key) for n, child in enumerate(edit.adds if edit else step.children, 1)]
    if edit:
        outputs += ["--edit", "base.part", *(["--drop", "drop"] if edit.drops else [])]
        reads += [("base.part", edit.base), *((f"drop/{n:05}.part", key) for n, key in enumerate(edit.drops, 1))]
    command = ["/bin/sh", "-c", _taskapp(version), "topn-merge", "merge", "--top", str(top), *outputs, "parts"]
    return m.BatchTaskCreateOptions(
        id=step.id,
        display_name=step.id,
        command_line=shlex.join(command),
        resource_files=[
            m.ResourceFile(http_url=blob_url(parts_url, part_blob(key)), file_path=path) for path, key in reads
        ],
        output_files=[*files, *_log_outputs(output_url, job, step.id)],
        depends_on=_depends_on(waits),
    )
