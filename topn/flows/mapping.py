"""The batch-map workload: a user's command run over every blob under a prefix, one output blob per input.

Built on the generic steps only (tasks/): the same packing and lineage as the word count (packs stay as
they were from run to run), the same content keys, pool, job, watch, recovery and clean-up. Here:
- a pack's key is a hash of the command, the output place, the application's version and its members'
  identities; a task that ran its command over every member writes `parts/<key>.part` (a list of what it
  wrote) besides the outputs, so a later run whose pack is the same skips it;
- a task's inputs land in in/<n>/<name>, the command runs once per input with `{input}` and `{output}` as
  that input's path and the path to write, and each output goes to `<output prefix><name after the input
  prefix><suffix>` in the output container.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from azure.batch import models as m
from pydantic import ByteSize, Field

from topn.tasks.application import AppFiles
from topn.tasks.inputs import InputBlob, content_hash, describe
from topn.tasks.layout import log_outputs, output_file, part_blob
from topn.tasks.packing import PackSpec
from topn.tasks.settings import BATCH_ID, BatchSettings

APP_NAME = "topn-map-app"  # its folder on the nodes, and its entry in the pool's metadata
INSTALLER = Path(__file__).with_name("install-map-app.sh")
SUFFIX = re.compile(r"^[A-Za-z0-9._-]{0,32}$")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}$")


class MapSettings(BatchSettings):
    """batch-map's settings: the Batch settings, with pools of its own, and how many inputs a task takes."""

    pool_ids: ClassVar[dict[str, str]] = {"keep": "topn-map", "autoscale": "topn-map-autoscale"}
    pool_id: str = Field("topn-map", pattern=BATCH_ID)
    map_files_per_task: int = Field(10, ge=1, le=1_000, description="inputs one batch-map task takes, at most")
    map_bytes_per_task: ByteSize = Field(ByteSize(1 << 30), ge=1, description="bytes one batch-map task takes")


@dataclass(frozen=True)
class MapSpec:
    """What a batch-map run does to each input: the command (with `{input}` and `{output}`), where outputs
    go, and the version of the application installed for it ("none" without one)."""

    command: str
    input_prefix: str
    output_prefix: str
    suffix: str
    app_version: str

    def problems(self) -> list[str]:
        """What is wrong with the command and the output place, each with how to fix it."""
        problems = []
        if "{output}" not in self.command:
            problems.append(
                "the command must write {output} (the path topn uploads), e.g. 'gzip -c {input} > {output}'"
            )
        if "{input}" not in self.command:
            problems.append("the command must read {input} (the path of the input on the node)")
        if not SUFFIX.match(self.suffix):
            problems.append("the output suffix may hold only letters, digits, '.', '-' and '_' (at most 32)")
        if self.output_prefix and not self.output_prefix.endswith("/"):
            problems.append(f"the output prefix must end with '/' (e.g. {self.output_prefix}/)")
        return problems

    def output_blob(self, blob: InputBlob) -> str:
        """Where an input's output goes: its name after the input prefix, under the output prefix."""
        return f"{self.output_prefix}{blob.name.removeprefix(self.input_prefix)}{self.suffix}"

    def pack_key(self, members: list[InputBlob]) -> str:
        return content_hash(
            "map",
            self.command,
            self.output_prefix,
            self.input_prefix,
            self.suffix,
            self.app_version,
            [b.row_key for b in members],
        )


def app_files(path: Path) -> AppFiles:
    """A user's application (a wheel, zip or tar archive) and the installer that unpacks it on each node."""
    digest = hashlib.sha256(path.read_bytes() + INSTALLER.read_bytes()).hexdigest()[:16]
    return AppFiles(APP_NAME, digest, (path, INSTALLER), ("/bin/sh", INSTALLER.name, path.name, digest))


def single_packs(packs: list[PackSpec]) -> list[PackSpec]:
    """Packs run whole: a pack the lineage combined from small ones (for workloads that merge outputs) is
    run as the packs it was made of, which keeps their keys."""
    return [PackSpec(part) for spec in packs for part in (spec.parts or (spec.members,))]


@dataclass(frozen=True)
class MapTask:
    """One pack to run: its task id, key and members (positions in the run's inputs)."""

    id: str
    key: str
    members: tuple[int, ...]


def plan(inputs: list[InputBlob], packs: list[PackSpec], spec: MapSpec) -> list[MapTask]:
    """A task per pack, with numbers for ids in the packs' order."""
    return [MapTask(str(n), spec.pack_key([inputs[i] for i in p.members]), p.members) for n, p in enumerate(packs, 1)]


def _node_output(n: int, blob: InputBlob, suffix: str) -> str:
    """The path the command writes for an input: out/<n>/output<ext>, its extension the suffix or the input's
    (commands often go by it), with no character a Batch file pattern would read as a wildcard."""
    ext = suffix or (found.group(0) if (found := _EXTENSION.search(blob.local_name)) else "")
    return f"out/{n}/output{ext}"


def map_task(
    task: MapTask,
    members: list[tuple[InputBlob, str]],
    spec: MapSpec,
    output_url: str,
    job: str,
    app_version: str | None,
) -> m.BatchTaskCreateOptions:
    """The task running the command over its inputs (`members`: each input and a read SAS URL), one after
    the other, stopping at the first that fails; on success its outputs and the pack's marker are uploaded.
    The list of paths travels in an environment variable, never on the command line; the command's stdin is
    empty (not that list). With an application, $TOPN_APP is where it was unpacked, on PYTHONPATH and its
    bin/ on PATH."""
    paths = [(f"in/{n}/{b.local_name}", _node_output(n, b, spec.suffix)) for n, (b, _) in enumerate(members, 1)]
    command = spec.command.replace("{input}", '"$input"').replace("{output}", '"$output"')
    script = (
        f"{_app_prelude(app_version)}set -e; printf '%s\\n' \"$TOPN_MAP_PATHS\" > paths.tsv; exec 3< paths.tsv; "
        "while IFS='\t' read -r input output <&3; do "
        f'mkdir -p "$(dirname "$output")"; {{ {command}; }} < /dev/null; '
        'test -f "$output" || { echo "the command wrote no $output" >&2; exit 3; }; '
        "done; printf '%s\\n' \"$TOPN_MAP_OUTPUTS\" > done.part"
    )
    outputs = [spec.output_blob(b) for b, _ in members]
    env = [
        m.EnvironmentSetting(name="TOPN_MAP_PATHS", value="\n".join(f"{i}\t{o}" for i, o in paths)),
        m.EnvironmentSetting(name="TOPN_MAP_OUTPUTS", value="\n".join(outputs)),
    ]
    return m.BatchTaskCreateOptions(
        id=task.id,
        display_name=describe([b.name for b, _ in members])[:1024],
        command_line=shlex.join(["/bin/sh", "-c", script]),
        environment_settings=env,
        resource_files=[
            m.ResourceFile(http_url=url, file_path=path) for (_, url), (path, _) in zip(members, paths, strict=True)
        ],
        output_files=[
            *(output_file(output_url, node, blob) for (_, node), blob in zip(paths, outputs, strict=True)),
            output_file(output_url, "done.part", part_blob(task.key)),
            *log_outputs(output_url, job, task.id),
        ],
    )


def _app_prelude(version: str | None) -> str:
    """Where the installer unpacked the application on the node, for the command to use."""
    if version is None:
        return ""
    return (
        f'export TOPN_APP="$AZ_BATCH_NODE_SHARED_DIR/{APP_NAME}/{version}"; '
        'export PYTHONPATH="$TOPN_APP${PYTHONPATH:+:$PYTHONPATH}" PATH="$TOPN_APP/bin:$PATH"; '
    )
