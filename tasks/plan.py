"""The shape of one run, as pure functions: packing files into tasks, the merge tree, ids, command lines
and output blobs.

Files are packed, in name order, into count tasks "1".."T" (about `files_per_task` files or `bytes_per_task`
bytes each); each writes one part file (per-file results and the pack's summed counts). Merges read at most
`fan_in` parts each, level by level, up to the root merge "merge", which writes the global top N and every
file's row: whatever the number of files, no task reads more than `fan_in` blobs and no file list ever
reaches a command line. File names never reach a command line unquoted, and never decide a task id.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass

from azure.batch import models as m

MERGE_ID = "merge"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class InputBlob:
    """One input: its name as users know it, and where its bytes are in storage."""

    name: str
    container: str
    blob: str
    size: int
    version: str  # content hash or ETag: a new version is a new run

    @property
    def local_name(self) -> str:
        return local_name(self.name)


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


def inputs_key(inputs: list[InputBlob], top: int, packing: Packing = Packing()) -> str:
    """What a run counts, in 16 hex digits: the same inputs (names and versions), N and packing, the same key."""
    files = sorted((i.name, i.container, i.blob, i.version) for i in inputs)
    shape = (packing.files_per_task, packing.bytes_per_task, packing.fan_in)
    return hashlib.sha256(repr((top, shape, files)).encode()).hexdigest()[:16]


def job_id(inputs: list[InputBlob], top: int, run_id: str | None = None, packing: Packing = Packing()) -> str:
    """Deterministic per run: the same inputs, N and packing give the same job, so a re-run resumes it."""
    return run_id or f"topn-{inputs_key(inputs, top, packing)}"


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
class Step:
    """One task of the plan: a count (level 0) of input positions `over`, or a merge of the outputs of the
    steps numbered `over` (from 1) on the level below."""

    level: int
    index: int  # from 1, within its level
    over: range
    root: bool = False

    @property
    def id(self) -> str:
        if self.root:
            return MERGE_ID
        return str(self.index) if self.level == 0 else f"merge-{self.level}-{self.index}"


@dataclass(frozen=True)
class Plan:
    """Every task of a run: the counts, then levels of merges of at most `fan_in` outputs, up to one root."""

    levels: tuple[tuple[Step, ...], ...]
    packing: Packing

    @property
    def fan_in(self) -> int:
        return self.packing.fan_in

    @property
    def root(self) -> Step:
        return self.levels[-1][0]

    def parent(self, step: Step) -> int:
        """The index of the merge, one level up, that reads this step's output."""
        return (step.index - 1) // self.fan_in + 1

    def children(self, step: Step) -> list[Step]:
        below = self.levels[step.level - 1]
        return [below[i - 1] for i in step.over] if step.level else []

    def todo(self, done: set[tuple[int, int]]) -> list[tuple[Step, list[Step]]]:
        """The steps to run, each with the steps it waits for, given the (level, index) of those whose
        outputs are in storage already: a finished merge needs nothing below it."""
        steps: list[tuple[Step, list[Step]]] = []

        def visit(step: Step) -> bool:
            if (step.level, step.index) in done:
                return False
            waits = [child for child in self.children(step) if visit(child)]
            steps.append((step, waits))
            return True

        visit(self.root)
        return steps


def make_plan(sizes: list[int], packing: Packing = Packing()) -> Plan:
    """The tasks for inputs of these sizes (in run order)."""
    packs = pack(sizes, packing.files_per_task, packing.bytes_per_task)
    levels = [tuple(Step(0, i, r) for i, r in enumerate(packs, 1))]
    while len(levels) == 1 or len(levels[-1]) > 1:
        n, level = len(levels[-1]), len(levels)
        groups = [range(s, min(s + packing.fan_in, n + 1)) for s in range(1, n + 1, packing.fan_in)]
        levels.append(tuple(Step(level, j, g, root=len(groups) == 1) for j, g in enumerate(groups, 1)))
    return Plan(tuple(levels), packing)


@dataclass(frozen=True)
class Layout:
    """Where one job's outputs go in the output container."""

    job: str

    def parts(self) -> str:
        return f"{self.job}/parts/"

    def parts_for(self, level: int, parent: int) -> str:
        """The folder of the outputs one merge reads: those of level `level` merged by merge `parent`."""
        return f"{self.parts()}{level}/{parent}/"

    def part(self, plan: Plan, step: Step) -> str:
        return f"{self.parts_for(step.level, plan.parent(step))}{step.index}.part"

    def finished(self, plan: Plan, names: list[str]) -> set[tuple[int, int]]:
        """(level, index) of the steps whose outputs are among these blob names."""
        done = set()
        for name in names:
            parts = name.removeprefix(self.parts()).split("/")
            if name.startswith(self.parts()) and len(parts) == 3 and parts[2].endswith(".part"):
                level, index = parts[0], parts[2].removesuffix(".part")
                if level.isdigit() and index.isdigit():
                    done.add((int(level), int(index)))
        if {self.top(), self.files()} <= set(names):
            done.add((plan.root.level, plan.root.index))
        return done

    def top(self) -> str:
        return f"{self.job}/top.json"

    def files(self) -> str:
        return f"{self.job}/files.jsonl"

    def logs(self, task: str) -> str:
        return f"{self.job}/logs/{task}"


def _output(container_url: str, pattern: str, blob: str, condition: str) -> m.OutputFile:
    return m.OutputFile(
        file_pattern=pattern,
        destination=m.OutputFileDestination(
            container=m.OutputFileBlobContainerDestination(container_url=container_url, path=blob)),
        upload_options=m.OutputFileUploadConfiguration(upload_condition=condition),
    )  # fmt: skip


def _log_outputs(container_url: str, layout: Layout, task: str) -> list[m.OutputFile]:
    """stdout and stderr reach storage only when the task failed: a run of 10,000 files does not pay 20,000
    uploads for empty logs, and a failure still shows its stderr after the job is gone."""
    return [_output(container_url, f"../{name}", f"{layout.logs(task)}/{name}", "taskfailure")
            for name in ("stdout.txt", "stderr.txt")]  # fmt: skip


def _taskapp(version: str, prelude: str = "") -> str:
    return f'{prelude}exec "$AZ_BATCH_NODE_SHARED_DIR/topn-taskapp/{version}/run" "$@"'


def describe(files: list[str]) -> str:
    """A pack's files as a short label: one name, or the first and last and how many."""
    if len(files) == 1:
        return files[0]
    return f"{files[0]} … {files[-1]} ({len(files)} files)"


@dataclass(frozen=True)
class Source:
    """One input of a count task: its number in the run (1..N), the input, and a read SAS URL for it."""

    number: int
    blob: InputBlob
    url: str


def count_task(
    step: Step, sources: list[Source], output_url: str, layout: Layout, plan: Plan, top: int, version: str
) -> m.BatchTaskCreateOptions:
    """The task counting a pack of inputs in one process (topn-taskapp count-many); its one output, the part
    file, goes to the output container. Inputs land in in/<number>/<name>, so equal names never collide;
    the list of them travels in an environment variable, never on the command line. A file larger than a
    task's bytes (alone in its task) is counted by as many processes as the node has cores."""
    paths = {s.number: f"in/{s.number}/{s.blob.local_name}" for s in sources}
    listing = "\n".join(f"{number}\t{path}" for number, path in paths.items())
    script = _taskapp(version, "printf '%s\\n' \"$TOPN_INPUTS\" > inputs.tsv && ")
    command = ["/bin/sh", "-c", script, "topn-count", "count-many", "--top", str(top), "--output", "part",
               "--inputs", "inputs.tsv", "--jobs", "0", "--split-bytes", str(plan.packing.bytes_per_task)]  # fmt: skip
    return m.BatchTaskCreateOptions(
        id=step.id,
        display_name=describe([s.blob.name for s in sources])[:1024],
        command_line=shlex.join(command),
        environment_settings=[m.EnvironmentSetting(name="TOPN_INPUTS", value=listing)],
        resource_files=[m.ResourceFile(http_url=s.url, file_path=paths[s.number]) for s in sources],
        output_files=[_output(output_url, "part", layout.part(plan, step), "tasksuccess"),
                      *_log_outputs(output_url, layout, step.id)],
    )  # fmt: skip


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
    if waits[0].level == 0:
        return m.BatchTaskDependencies(task_id_ranges=id_ranges([s.index for s in waits]))
    return m.BatchTaskDependencies(task_ids=[s.id for s in waits])


def merge_task(
    step: Step, waits: list[Step], parts_url: str, output_url: str, layout: Layout, plan: Plan, top: int, version: str
) -> m.BatchTaskCreateOptions:
    """A merge of the part files of the steps below it (one blob prefix, downloaded as the folder parts/).
    It runs when the steps it `waits` for succeeded (the others finished in an earlier attempt: their outputs
    are in storage already). The root writes the global top N and every file's row; the others a part."""
    if step.root:
        outputs = ["--output", "top.json", "--files", "files.jsonl"]
        files = [_output(output_url, "top.json", layout.top(), "tasksuccess"),
                 _output(output_url, "files.jsonl", layout.files(), "tasksuccess")]  # fmt: skip
    else:
        outputs = ["--part", "part"]
        files = [_output(output_url, "part", layout.part(plan, step), "tasksuccess")]
    command = ["/bin/sh", "-c", _taskapp(version), "topn-merge", "merge", "--top", str(top), *outputs, "parts"]
    return m.BatchTaskCreateOptions(
        id=step.id,
        display_name=step.id,
        command_line=shlex.join(command),
        resource_files=[m.ResourceFile(storage_container_url=parts_url,
                                       blob_prefix=layout.parts_for(step.level - 1, step.index), file_path="parts")],
        output_files=[*files, *_log_outputs(output_url, layout, step.id)],
        depends_on=_depends_on(waits),
    )  # fmt: skip
