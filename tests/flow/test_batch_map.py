"""The batch-map workload on the real local stack: a command over every blob under a prefix, one output each,
reused across runs by content; written on the generic steps alone."""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.stack import Azurite
from topn.cli import main
from topn.flows.batch_map import batch_map
from topn.tasks.monitor import TopnFailed

HASH = "sha256sum {input} | cut -d ' ' -f 1 > {output}"


class Folder:
    """A prefix of the input container with blobs in it, and the outputs batch-map should make of them."""

    def __init__(self, azurite: Azurite) -> None:
        service = azurite.client()
        self.prefix, self.out = f"in-{uuid.uuid4().hex[:8]}/", f"out-{uuid.uuid4().hex[:8]}/"
        self.inputs = service.get_container_client("topn-input")
        self.outputs = service.get_container_client("topn-output")
        for container in (self.inputs, self.outputs):
            if not container.exists():
                container.create_container()
        self.data: dict[str, bytes] = {}

    def put(self, name: str, data: bytes) -> None:
        self.inputs.upload_blob(self.prefix + name, data, overwrite=True)
        self.data[name] = data

    def output(self, name: str, suffix: str = ".sha") -> bytes:
        return self.outputs.download_blob(f"{self.out}{name}{suffix}").readall()

    def check_hashes(self) -> None:
        for name, data in self.data.items():
            assert self.output(name).decode().strip() == hashlib.sha256(data).hexdigest(), name


@pytest.fixture
def folder(settings_env: pytest.MonkeyPatch, azurite: Azurite) -> Folder:
    return Folder(azurite)


def test_each_input_gets_its_output_and_a_later_run_runs_only_what_is_new_or_changed(folder: Folder) -> None:
    for i in range(25):
        folder.put(f"d{i % 3}/f{i:03}.txt", f"file {i}\n".encode() * (i + 1))
    first = batch_map(
        blob_prefix=folder.prefix, command=HASH, output_prefix=folder.out, output_suffix=".sha", files_per_task=5
    )
    assert (first.stats.inputs, first.stats.ran, first.stats.reused, first.stats.tasks) == (25, 25, 0, 5)
    folder.check_hashes()
    assert (folder.prefix + "d0/f000.txt", f"{folder.out}d0/f000.txt.sha") in first.outputs

    folder.put("d1/f004a.txt", b"new and sorting among the old ones")  # new
    folder.put("d2/f002.txt", b"changed content")  # a new version of a name
    second = batch_map(
        blob_prefix=folder.prefix, command=HASH, output_prefix=folder.out, output_suffix=".sha", files_per_task=5
    )
    assert (second.stats.new, second.stats.changed, second.stats.deleted) == (1, 1, 0)
    assert second.stats.ran <= 1 + 5  # the new one, and the changed one's pack
    assert second.stats.reused == 26 - second.stats.ran
    folder.check_hashes()

    quiet = batch_map(
        blob_prefix=folder.prefix, command=HASH, output_prefix=folder.out, output_suffix=".sha", files_per_task=5
    )
    assert (quiet.stats.ran, quiet.stats.tasks, quiet.stats.reused) == (0, 0, 26)

    # Another command is other outputs: nothing of the first is taken for it.
    other = batch_map(
        blob_prefix=folder.prefix,
        command="wc -c < {input} > {output}",
        output_prefix=folder.out,
        output_suffix=".bytes",
        files_per_task=5,
    )
    assert other.stats.ran == 26
    assert int(folder.output("d1/f004a.txt", ".bytes")) == len(folder.data["d1/f004a.txt"])


def test_a_failing_command_names_its_input_and_what_finished_stays_finished(folder: Folder) -> None:
    for i in range(6):
        folder.put(f"f{i}.txt", f"text {i}".encode())
    folder.put("f3.txt", b"BAD")
    failing = "grep -q BAD {input} && { echo 'refusing a bad file' >&2; exit 7; }; " + HASH
    with pytest.raises(TopnFailed) as e:
        batch_map(
            blob_prefix=folder.prefix, command=failing, output_prefix=folder.out, output_suffix=".sha", files_per_task=2
        )
    message = str(e.value)
    assert f"{folder.prefix}f2.txt … {folder.prefix}f3.txt (2 files)" in message
    assert "exit code 7" in message and "refusing a bad file" in message
    folder.put("f3.txt", b"good now")
    again = batch_map(
        blob_prefix=folder.prefix, command=failing, output_prefix=folder.out, output_suffix=".sha", files_per_task=2
    )
    assert again.stats.ran == 2 and again.stats.reused == 4  # only the failed pack ran again
    folder.check_hashes()


def test_an_application_is_installed_by_the_start_task_for_the_command(folder: Folder, tmp_path: Path) -> None:
    archive = tmp_path / "tool.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("upper.py", "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())\n")
    folder.put("a.txt", b"shout me")
    result = batch_map(
        blob_prefix=folder.prefix,
        command='python3 "$TOPN_APP/upper.py" {input} {output}',
        output_prefix=folder.out,
        app=str(archive),
    )
    assert result.stats.ran == 1
    assert folder.output("a.txt", "") == b"SHOUT ME"


def test_bad_parameters_are_told_before_anything_runs(folder: Folder) -> None:
    with pytest.raises(ValueError, match=r"must write \{output\}"):
        batch_map(blob_prefix=folder.prefix, command="cat {input}", output_prefix=folder.out)
    with pytest.raises(ValueError, match="must end with '/'"):
        batch_map(blob_prefix=folder.prefix, command=HASH, output_prefix="out")
    with pytest.raises(ValueError, match="no such file"):
        batch_map(blob_prefix=folder.prefix, command=HASH, output_prefix=folder.out, app="/no/such/tool.whl")


def test_the_command_line_runs_it(folder: Folder, capsys: pytest.CaptureFixture[str]) -> None:
    folder.put("x.txt", b"via the command line")
    assert (
        main(["map", folder.prefix, "--command", HASH, "--output-prefix", folder.out, "--suffix", ".sha", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["stats"]["ran"] == 1
    folder.check_hashes()
    assert main(["map", folder.prefix, "--command", "true", "--output-prefix", folder.out]) == 1
    assert "must write {output}" in capsys.readouterr().err


def test_the_deployment_form_explains_every_parameter(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client

    deployment_id = batch_map.to_deployment(name="form-check", parameters={"blob_prefix": "logs/"}).apply()
    try:
        with get_client(sync_client=True) as client:
            schema = client.read_deployment(deployment_id).parameter_openapi_schema
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)
    described = {name: field.get("description", "") for name, field in schema["properties"].items()}
    assert len(described) == 12 and all(len(text) > 20 for text in described.values()), described
    assert "{input}" in described["command"]
    assert not [name for name, field in schema["properties"].items() if "anyOf" in field or "null" in str(field)]
    assert schema["required"] == ["blob_prefix", "command", "output_prefix"]
