"""Where outputs are in the output container, and how a Batch task names what it reads and writes.

Outputs are stored by content key, never by job: a keyed output is one blob `parts/<key>.part` (with, for
a pack, `parts/<key>.members` beside it), or a folder `results/<key>/`; a job's own folder holds only the
logs of its failed tasks. Retention (tasks/storage.py) removes keyed outputs that no lineage references.
"""

from __future__ import annotations

from azure.batch import models as m

PARTS = "parts/"
RESULTS = "results/"


def part_blob(key: str) -> str:
    return f"{PARTS}{key}.part"


def members_blob(key: str) -> str:
    """A pack's members file beside its part file (each member's own counts): what lets a later run edit the
    pack instead of counting it again."""
    return f"{PARTS}{key}.members"


def result_folder(key: str) -> str:
    return f"{RESULTS}{key}/"


def logs_blob(job: str, task: str) -> str:
    return f"{job}/logs/{task}"


def key_of(blob: str) -> str | None:
    """The output key a blob name in the output container holds, if it is an output."""
    if blob.startswith(PARTS) and blob.endswith((".part", ".members")):
        return blob[len(PARTS) :].rpartition(".")[0]
    if blob.startswith(RESULTS) and blob.count("/") == 2:
        return blob.split("/")[1]
    return None


def part_keys(names: list[str]) -> set[str]:
    """The keys whose part files are among these blob names."""
    return {key for name in names if name.startswith(PARTS) and name.endswith(".part") and (key := key_of(name))}


def members_blobs(names: list[str]) -> set[str]:
    """The members files among these blob names (by name)."""
    return {name for name in names if name.startswith(PARTS) and name.endswith(".members")}


def blob_url(container_url: str, blob: str) -> str:
    """One blob's URL from its container's SAS URL (the same signature serves every blob in it)."""
    base, _, query = container_url.partition("?")
    return f"{base}/{blob}?{query}"


def output_file(container_url: str, pattern: str, blob: str, condition: str = "tasksuccess") -> m.OutputFile:
    """An output file of a task: what matches `pattern` (in the task's folder) goes to `blob` on `condition`."""
    return m.OutputFile(
        file_pattern=pattern,
        destination=m.OutputFileDestination(
            container=m.OutputFileBlobContainerDestination(container_url=container_url, path=blob)
        ),
        upload_options=m.OutputFileUploadConfiguration(upload_condition=condition),
    )


def log_outputs(container_url: str, job: str, task: str) -> list[m.OutputFile]:
    """stdout and stderr reach storage only when the task failed: a run of 10,000 files does not pay 20,000
    uploads for empty logs, and a failure still shows its stderr after the job is gone."""
    return [
        output_file(container_url, f"../{name}", f"{logs_blob(job, task)}/{name}", "taskfailure")
        for name in ("stdout.txt", "stderr.txt")
    ]


def id_ranges(ids: list[int]) -> list[m.BatchTaskIdRange]:
    """Task ids as the fewest ranges: "1".."N" is one range, whatever N; gaps (finished files) split it."""
    ranges: list[m.BatchTaskIdRange] = []
    for i in sorted(ids):
        if ranges and ranges[-1].end == i - 1:
            ranges[-1].end = i
        else:
            ranges.append(m.BatchTaskIdRange(start=i, end=i))
    return ranges


def depends_on(numbered: list[int], named: list[str]) -> m.BatchTaskDependencies | None:
    """Dependencies on tasks with numbers for ids (as ranges) and on others by id; None for none."""
    if not numbered and not named:
        return None
    return m.BatchTaskDependencies(task_id_ranges=id_ranges(numbered) or None, task_ids=named or None)
