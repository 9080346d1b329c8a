"""What Prefect users see of a run: its name, its task runs' names and tags, its persisted result, and an
empty prefix that is a run with nothing to count."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import PrefectHTTPStatusError

from tests.conftest import ROOT
from topn.flows.topn import topn
from topn.tasks import storage, tags

BIN = Path(sys.executable).parent


def _task_runs(state: object) -> dict:
    run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return {t.name: t for t in client.read_task_runs(flow_run_filter=run)}


def test_runs_and_task_runs_are_named_and_their_result_kept(stack_env: dict, tmp_path: Path) -> None:
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("alpha beta alpha")
    state = topn(paths=[str(tmp_path / "texts")], top=2, return_state=True)
    result = state.result()
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
    assert flow_run.name == "top 2 of texts"
    job = result.stats.job_id
    names = ["check-access", "read-inputs texts (1 path)", "upload-inputs 1 file", f"prepare-job {job}",
             f"add-tasks {job}: 2 tasks", f"watch-job {job}", f"download-outputs {job}"]  # fmt: skip
    assert set(names) <= set(_task_runs(state)), sorted(_task_runs(state))
    assert flow_run.state.result() == result  # persisted, read back through the API


def test_task_runs_carry_the_service_tags_a_concurrency_limit_reads(
    stack_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a limit, no task run is tagged (each tag costs a check at the server); with
    `prefect concurrency-limit create azure-batch 1`, every step that calls Batch is, and the run still ends."""
    monkeypatch.setattr(tags, "LOOK_EVERY", 0.0)  # each task run looks at the limits anew
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("alpha beta alpha")
    untagged = _task_runs(topn(paths=[str(tmp_path / "texts")], top=2, return_state=True))
    assert not [name for name, t in untagged.items() if set(t.tags) & set(tags.SERVICE_TAGS)]
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="azure-batch", concurrency_limit=1)
    try:
        (tmp_path / "texts" / "b.txt").write_text("gamma")
        state = topn(paths=[str(tmp_path / "texts")], top=2, return_state=True)
        assert state.result().top == [("alpha", 2), ("beta", 1)]
        tagged = {name.split(" ")[0]: set(t.tags) & set(tags.SERVICE_TAGS) for name, t in _task_runs(state).items()}
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag("azure-batch")
    assert tagged["check-access"] == tagged["prepare-job"] == tagged["watch-job"] == {"azure-batch"}
    assert tagged["upload-inputs"] == tagged["download-outputs"] == set()


def test_a_copy_with_options_keeps_following_the_limits(stack_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """`with_options` (Prefect makes a plain Task) still gives a task whose service tags follow the limits,
    and tags of the user's own stay."""
    monkeypatch.setattr(tags, "LOOK_EVERY", 0.0)
    copy = storage.list_blob_names.with_options(retries=0, tags=["azure-storage", "mine"])
    assert isinstance(copy, tags.ServiceTask) and copy.retries == 0 and copy.name == "list-blobs"
    assert copy.tags == {"mine"}
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="azure-storage", concurrency_limit=2)
    try:
        assert copy.tags == {"mine", "azure-storage"}
        assert storage.list_blob_names.tags == {"azure-storage"}
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag("azure-storage")


def test_an_empty_prefix_is_a_run_with_nothing_to_count(stack_env: dict) -> None:
    state = topn(blob_prefix=f"nothing-here-{time.time_ns()}/", return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result.stats.files == 0 and result.top == [] and result.table() == "nothing to count"
    run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(flow_run_filter=run)
    note = next(a for a in artifacts if a.key == "topn-result-adhoc")
    assert note.type == "markdown" and "Nothing to count" in note.data and "topn upload" in note.data
    with get_client(sync_client=True) as client:
        steps = {t.name for t in client.read_task_runs(flow_run_filter=run)}
    assert not {"taskapp-files", "upload-app"} & {name.split(" ")[0] for name in steps}, steps  # found first


def test_conflicting_arguments_fail_at_once_with_one_line() -> None:
    began = time.monotonic()
    run = subprocess.run([str(BIN / "topn"), "run", str(ROOT / "data" / "sample"), "--prefix", "x"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "not both" in run.stderr
    print(f"\n  rejected in {time.monotonic() - began:.2f} s", file=sys.stderr)


def test_runs_start_one_local_prefect_server_and_keep_using_it(stack_env: dict, tmp_path: Path) -> None:
    """With PREFECT_API_URL unset, the first `topn run` starts the server `topn server start` keeps, in the
    background; the next uses it; TOPN_TEMPORARY_PREFECT_SERVER=true runs on a temporary one instead."""
    import os

    from tests.stack import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"TOPN_LOCAL_PREFECT_PORT": str(port), "TOPN_LOCAL_DIR": str(tmp_path / "local")})
    (tmp_path / "a.txt").write_text("gamma delta gamma")

    def topn_run(**extra: str) -> subprocess.CompletedProcess:
        run = subprocess.run([str(BIN / "topn"), "run", str(tmp_path / "a.txt"), "--json"], env={**env, **extra},
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        assert json.loads(run.stdout)["top"][0] == ["gamma", 2]
        return run

    def runs_on_the_server() -> int:
        count = urllib.request.Request(f"http://127.0.0.1:{port}/api/flow_runs/count", data=b"{}", method="POST",
                                       headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(count, timeout=30) as answer:
            return json.load(answer)

    try:
        first = topn_run()
        assert f"started a Prefect server in the background, UI at http://127.0.0.1:{port}" in first.stderr
        second = topn_run()
        assert "started a Prefect server" not in second.stderr and "Starting temporary server" not in second.stderr
        assert runs_on_the_server() == 2  # both runs stay in that server's UI
        temporary = topn_run(TOPN_TEMPORARY_PREFECT_SERVER="true")
        assert "started a Prefect server" not in temporary.stderr
        assert runs_on_the_server() == 2  # that run was on a server of its own
    finally:
        stopped = subprocess.run([str(BIN / "topn"), "server", "stop"], env=env, capture_output=True, text=True,
                                 timeout=120)  # fmt: skip
    assert "prefect-server stopped" in stopped.stdout or "killed" in stopped.stdout, stopped.stdout + stopped.stderr


def test_a_run_configured_only_through_blocks(stack_env: dict, azurite, emulator) -> None:
    import os

    from prefect_azure import AzureBlobStorageCredentials

    from tests.conftest import SAMPLE
    from topn.tasks.blocks import AzureBatchCredentials
    from topn.tasks.settings import AZURITE_KEY

    assert not [k for k in os.environ if k.startswith(("TOPN_BATCH_", "TOPN_STORAGE_"))]  # no credentials there
    AzureBatchCredentials(endpoint=emulator.endpoint, account_name=emulator.account,
                          account_key=emulator.key).save("only-batch", overwrite=True)  # fmt: skip
    AzureBlobStorageCredentials(connection_string=f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                                f"AccountKey={AZURITE_KEY};BlobEndpoint={azurite.blob_endpoint};").save(
        "only-storage", overwrite=True)  # fmt: skip
    state = topn(paths=[str(SAMPLE)], top=3, run_id="blocks-only", batch_credentials="only-batch",
                 storage_credentials="only-storage", return_state=True)  # fmt: skip
    result = state.result()
    assert (result.files_counted, result.top) == (11, [("the", 12495), ("and", 6396), ("of", 5858)])
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
    assert flow_run.parameters["batch_credentials"] == "only-batch"
    assert emulator.key not in json.dumps(flow_run.parameters) and AZURITE_KEY not in json.dumps(flow_run.parameters)


def test_the_deployment_form_explains_every_parameter(prefect_api: str) -> None:
    deployment_id = topn.to_deployment(name="form-check", parameters={"blob_prefix": "incoming/"}).apply()
    try:
        with get_client(sync_client=True) as client:
            schema = client.read_deployment(deployment_id).parameter_openapi_schema
            # The server checks a run's parameters against the schema: what the form sends passes...
            run = client.create_flow_run_from_deployment(deployment_id, parameters={
                "blob_prefix": "x/", "files_per_task": 5, "bytes_per_task": "64MiB", "pool_mode": "keep"})  # fmt: skip
            client.delete_flow_run(run.id)
            # ...and a value out of range is refused before any run exists.
            with pytest.raises(PrefectHTTPStatusError, match=r"files_per_task.*0 is less than the minimum of 1"):
                client.create_flow_run_from_deployment(deployment_id, parameters={"files_per_task": 0})
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)
    described = {name: field.get("description", "") for name, field in schema["properties"].items()}
    assert len(described) == 13 and all(len(text) > 20 for text in described.values()), described
    assert "incoming/" in described["blob_prefix"] and "autoscale" in described["pool_mode"]
    # Optional parameters are plain fields (left blank: the default), not a choice of a type or None.
    assert not [name for name, field in schema["properties"].items() if "anyOf" in field or "null" in str(field)]
    assert schema["properties"]["pool_mode"]["enum"] == ["keep", "autoscale", "per-job"]


def test_scheduled_runs_say_in_their_names_what_they_found(stack_env: dict, azurite) -> None:
    prefix = f"named-{time.time_ns()}/"
    empty = topn(blob_prefix=prefix, top=3, return_state=True)
    azurite.client().get_container_client("topn-input").upload_blob(f"{prefix}a.txt", b"alpha beta alpha")
    found = topn(blob_prefix=prefix, top=3, return_state=True)
    with get_client(sync_client=True) as client:
        names = [client.read_flow_run(s.state_details.flow_run_id).name for s in (empty, found)]
    assert names == [f"top 3 of prefix {prefix} (nothing to count)",
                     f"top 3 of prefix {prefix} (1 file, 1 new, 0 changed, 0 deleted)"]  # fmt: skip
