"""The shape of one run, as pure functions: names, ids, command lines and output files.

Count tasks have ids "1".."N" so the merge task can depend on them all with one id range, whatever N;
file names never reach a command line unquoted, and never decide a task id.
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


def inputs_key(inputs: list[InputBlob], top: int) -> str:
    """What a run counts, in 16 hex digits: the same inputs (names and versions) and N, the same key."""
    digest = hashlib.sha256(repr((top, sorted((i.name, i.container, i.blob, i.version) for i in inputs))).encode())
    return digest.hexdigest()[:16]


def job_id(inputs: list[InputBlob], top: int, run_id: str | None = None) -> str:
    """Deterministic per run: the same inputs and N give the same job, so a re-run resumes it."""
    return run_id or f"topn-{inputs_key(inputs, top)}"


def upload_blob_name(relative: str, sha256: str) -> str:
    """Uploads are content-addressed: a file never overwrites another's bytes."""
    return f"uploads/{sha256[:32]}/{local_name(relative)}"


@dataclass(frozen=True)
class Layout:
    """Where one job's outputs go in the output container."""

    job: str

    def result(self, task: str) -> str:
        return f"{self.job}/results/{task}.json"

    def counts_prefix(self) -> str:
        return f"{self.job}/counts/"

    def counts(self, task: str) -> str:
        return f"{self.counts_prefix()}{task}.counts"

    def logs(self, task: str) -> str:
        return f"{self.job}/logs/{task}"

    def top(self) -> str:
        return f"{self.job}/top.json"


def _run_taskapp(version: str) -> str:
    return f'exec "$AZ_BATCH_NODE_SHARED_DIR/topn-taskapp/{version}/run" "$@"'


def _output(container_url: str, pattern: str, blob: str, condition: str) -> m.OutputFile:
    return m.OutputFile(
        file_pattern=pattern,
        destination=m.OutputFileDestination(
            container=m.OutputFileBlobContainerDestination(container_url=container_url, path=blob)),
        upload_options=m.OutputFileUploadConfiguration(upload_condition=condition),
    )  # fmt: skip


def _log_outputs(container_url: str, layout: Layout, task: str) -> list[m.OutputFile]:
    return [_output(container_url, f"../{name}", f"{layout.logs(task)}/{name}", "taskcompletion")
            for name in ("stdout.txt", "stderr.txt")]  # fmt: skip


def count_task(
    index: int, source: InputBlob, input_url: str, output_url: str, layout: Layout, top: int, version: str
) -> m.BatchTaskCreateOptions:
    """The task counting one input; its result and full counts go to the output container."""
    task = str(index)
    path = f"input/{source.local_name}"
    command = ["/bin/sh", "-c", _run_taskapp(version), "topn-taskapp", "count", "--top", str(top),
               "--output", "result.json", "--counts", "counts.tsv", path]  # fmt: skip
    return m.BatchTaskCreateOptions(
        id=task,
        display_name=source.name[:1024],
        command_line=shlex.join(command),
        resource_files=[m.ResourceFile(http_url=input_url, file_path=path)],
        output_files=[_output(output_url, "result.json", layout.result(task), "tasksuccess"),
                      _output(output_url, "counts.tsv", layout.counts(task), "tasksuccess"),
                      *_log_outputs(output_url, layout, task)],
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


def merge_task(
    waits_for: list[int], counts_url: str, output_url: str, layout: Layout, top: int, version: str
) -> m.BatchTaskCreateOptions:
    """The task summing every file's full counts; it runs only when the count tasks `waits_for` succeeded
    (the others finished in an earlier attempt: their counts are in storage already)."""
    script = (f'd="$AZ_BATCH_NODE_SHARED_DIR/topn-taskapp/{version}"; '
              f'exec "$d/run" merge --top "$1" --output top.json counts/*/counts/*.counts')  # fmt: skip
    return m.BatchTaskCreateOptions(
        id=MERGE_ID,
        display_name="merge",
        command_line=shlex.join(["/bin/sh", "-c", script, "topn-merge", str(top)]),
        resource_files=[m.ResourceFile(storage_container_url=counts_url, blob_prefix=layout.counts_prefix(),
                                       file_path="counts")],
        output_files=[_output(output_url, "top.json", layout.top(), "tasksuccess"),
                      *_log_outputs(output_url, layout, MERGE_ID)],
        depends_on=m.BatchTaskDependencies(task_id_ranges=id_ranges(waits_for)) if waits_for else None,
    )  # fmt: skip
