"""The topn flow end to end on the real local stack: Prefect server, Azurite, the Batch emulator."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from azure.batch import BatchClient
from batch_emulator.server import Emulator
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

from tests.conftest import SAMPLE
from tests.stack import Azurite, wait_for
from tests.taskapp.oracle import spec_counts
from topn.flows import wordcount
from topn.flows.topn import TopnFailed, topn
from topn.tasks.preflight import AccessError

FACT_SHEET = "sample/nasa-moon/180556main_ETM.Moon.ABCs.Fact.Sheet.txt"
DICKENS = "sample/books/a-tale-of-two-cities.txt"


def ranked(counts, n):
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def test_sample_corpus_exact_figures(stack_env: dict, emulator: Emulator) -> None:
    result = topn(paths=[str(SAMPLE)], top=5)
    assert (result.files_counted, result.words, result.distinct) == (11, 196715, 12630)
    assert result.top == [("the", 12495), ("and", 6396), ("of", 5858), ("to", 4678), ("a", 4111)]
    files = {f.name: f for f in result.files}
    assert len(files) == 11
    assert (files[FACT_SHEET].words, files[FACT_SHEET].distinct) == (470, 246)
    assert files[FACT_SHEET].top == [("the", 21), ("of", 14), ("moon", 12), ("and", 11), ("by", 9)]
    assert (files[DICKENS].words, files[DICKENS].distinct, files[DICKENS].bytes) == (137389, 9853, 757223)
    assert files[DICKENS].top == [("the", 8053), ("and", 4999), ("of", 4015), ("to", 3571), ("a", 2953)]
    for path in SAMPLE.rglob("*.txt"):
        expected = spec_counts(path.read_bytes())
        got = files["sample/" + path.relative_to(SAMPLE).as_posix()]
        assert (got.words, got.top) == (sum(expected.values()), ranked(expected, 5))
    client = BatchClient(emulator.endpoint, emulator.credential())
    assert result.stats.job_id not in [j.id for j in client.list_jobs()]  # deleted by default
    assert client.get_pool(result.stats.pool_id).state == "active"  # kept by default

    again = topn(paths=[str(SAMPLE)], top=5)  # the pool is reused, the uploads are not sent twice
    assert again.top == result.top and again.stats.job_id == result.stats.job_id
    assert [p.id for p in client.list_pools()].count(result.stats.pool_id) == 1


def test_counts_blobs_already_in_storage(stack_env: dict, azurite: Azurite) -> None:
    container = azurite.client().get_container_client("topn-input")
    if not container.exists():
        container.create_container()
    for path in SAMPLE.rglob("*.txt"):
        container.upload_blob(f"scheduled/{path.name}", path.read_bytes(), overwrite=True)
    result = topn(blob_prefix="scheduled/", top=3)
    assert (result.files_counted, result.words, result.top) == (
        11,
        196715,
        [("the", 12495), ("and", 6396), ("of", 5858)],
    )


def test_odd_file_names(stack_env: dict, tmp_path: Path) -> None:
    names = [
        "with space.txt",
        "ünïcödé ✓.txt",
        "$(touch pwned).txt",
        'it\'s "quoted".txt',
        "x" * 200 + ".txt",
        "-starts-with-dash.txt",
        "semi;colon&amp.txt",
    ]
    for i, name in enumerate(names):
        (tmp_path / name).write_text(f"word{i} shared " * (i + 1))
    result = topn(paths=[str(tmp_path)], top=2)
    assert result.files_counted == len(names) and result.top[0] == ("shared", sum(range(1, len(names) + 1)))
    assert sorted(f.name.split("/", 1)[1] for f in result.files) == sorted(names)
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


def test_a_file_rewritten_while_the_run_reads_it_fails_the_run_before_any_job(
    stack_env: dict, tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are read (keyed by content) first, and sent once the plan says which a task reads: one rewritten
    in between is never stored under its old content's name; the run fails saying so, before any job. Run
    again once it stays as it is, the count is exact."""
    from prefect import task

    from topn.tasks import storage

    folder = tmp_path / "texts"
    folder.mkdir()
    unique = "z" + uuid.uuid4().hex  # no earlier run's outputs to reuse
    for i in range(3):
        (folder / f"f{i}.txt").write_text(f"alpha beta n{i} {unique}")
    read_inputs = storage.read_inputs

    @task(name="read-inputs")
    def read_then_rewrite(settings: object, paths: list[str]) -> object:
        inputs = read_inputs.fn(settings, paths)
        (folder / "f1.txt").write_text("rewritten while the run read it")
        return inputs

    client = BatchClient(emulator.endpoint, emulator.credential())
    jobs = {j.id for j in client.list_jobs()}
    monkeypatch.setattr(storage, "read_inputs", read_then_rewrite)
    with pytest.raises(storage.InputError, match=r"f1\.txt' changed while the run read it: run again"):
        topn(paths=[str(folder)], top=2)
    assert [j.id for j in client.list_jobs() if j.id not in jobs] == []
    monkeypatch.setattr(storage, "read_inputs", read_inputs)
    result = topn(paths=[str(folder)], top=2)
    assert result.top == [("alpha", 2), ("beta", 2)] and result.words == 14


def test_bad_parameters_fail_before_anything(stack_env: dict) -> None:
    with pytest.raises(ValueError, match="either paths"):
        topn(paths=[str(SAMPLE)], blob_prefix="x/")
    with pytest.raises(Exception, match="no such file"):
        topn(paths=["/no/such/folder"])
    with pytest.raises(Exception, match="top"):
        topn(paths=[str(SAMPLE)], top=0)


def poison(monkeypatch: pytest.MonkeyPatch, command: str, name: str = "poison") -> None:
    """Makes the count task of any input whose name holds `name` run `command` instead."""
    original = wordcount.count_task

    def count_task(step, sources, *args, **kwargs):
        task = original(step, sources, *args, **kwargs)
        if any(name in s.blob.name for s in sources):
            task.command_line = command
        return task

    monkeypatch.setattr(wordcount, "count_task", count_task)


def test_a_failing_task_fails_the_flow_naming_its_file(settings_env, tmp_path: Path, emulator: Emulator) -> None:
    (tmp_path / "good.txt").write_text("fine words")
    (tmp_path / "poison.txt").write_text("bad words")
    poison(settings_env, "/bin/sh -c 'echo \"cannot digest this file\" >&2; exit 3'")
    with pytest.raises(TopnFailed) as e:
        topn(paths=[str(tmp_path)], top=3, delete_job=False, files_per_task=1)
    message = str(e.value)
    assert "poison.txt" in message and "exit code 3" in message and "cannot digest this file" in message
    assert "good.txt" not in message and "sig=" not in message.replace("sig=REDACTED", "")
    job_id = message.split()[1]
    job = BatchClient(emulator.endpoint, emulator.credential()).get_job(job_id)
    assert job.state == "completed"  # terminated: the merge could never run


def test_a_failed_batch_task_shows_as_a_failed_task_run_and_a_table(settings_env, tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("fine words")
    (tmp_path / "poison.txt").write_text("bad words")
    poison(settings_env, "/bin/sh -c 'echo first line >&2; echo \"cannot digest this file\" >&2; exit 3'")
    state = topn(paths=[str(tmp_path)], top=3, files_per_task=1, return_state=True)
    assert state.is_failed() and "poison.txt" in state.message
    run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        steps = {t.name.split(" ")[0]: t for t in client.read_task_runs(flow_run_filter=run)}
        artifacts = client.read_artifacts(flow_run_filter=run)
    report = steps["report-failures"]
    assert report.state.is_failed() and "poison.txt" in report.state.message, report.state
    assert steps["watch-job"].state.is_completed()
    table = next(a for a in artifacts if a.key == "topn-failures-adhoc")
    links = next(a for a in artifacts if a.key == "topn-links-adhoc")  # where the logs of the failed tasks are
    assert "failed tasks' logs" in links.data and "/logs/" in links.data and "sig=" not in links.data
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(r["file"].rsplit("/", 1)[-1], r["exit code"], r["attempts"]) for r in rows] == [("poison.txt", 3, 2)]
    assert list(rows[0])[:2] == ["file", "stderr (end)"]  # what to read first, before a wide table's edge
    assert "cannot digest this file" in rows[0]["stderr (end)"] and rows[0]["stderr blob"].endswith("/stderr.txt")
    # Each line of the stderr under its file, indented, in the message users read.
    assert "\n      cannot digest this file" in state.message

    # The run's logs: the failure as it reads, once in full (report-failures) and once as a line (the flow),
    # with no Prefect engine traceback.
    def summary(log) -> bool:  # the flow's own line: one line naming the file, and where to read more
        return "\n" not in log.message and "failed: " in log.message and log.message.endswith("stderr)")

    def with_summary() -> list | None:
        logs = _logs(state)
        return logs if any(map(summary, logs)) else None

    logs = wait_for(with_summary, 60, 0.5, what="the flow's failure line in the run's logs")
    everything = "\n".join(log.message for log in logs)
    assert "Traceback" not in everything and "TopnFailed" not in everything, everything
    assert any("\n      cannot digest this file" in log.message for log in logs), logs
    assert "poison.txt" in next(log.message for log in logs if summary(log))


def _logs(state) -> list:
    with get_client(sync_client=True) as client:
        return client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))


def test_a_failing_start_task_fails_the_flow(settings_env, tmp_path: Path, emulator: Emulator) -> None:
    broken = tmp_path / "install-taskapp.sh"
    broken.write_text("echo 'python3 is missing on this image' >&2\nexit 1\n")
    settings_env.setattr("topn.flows.taskapp.INSTALLER", broken)
    settings_env.setenv("TOPN_POOL_ID", "broken-start")
    (tmp_path / "in.txt").write_text("some words")
    with pytest.raises(TopnFailed) as e:
        topn(paths=[str(tmp_path / "in.txt")], top=3, delete_pool=True)
    assert "start task failed" in str(e.value) and "python3 is missing on this image" in str(e.value)
    BatchClient(emulator.endpoint, emulator.credential()).begin_delete_pool(
        "broken-start", polling_interval=0.1
    ).result()


def test_time_limit_terminates_the_job(settings_env, tmp_path: Path, emulator: Emulator) -> None:
    settings_env.setenv("TOPN_JOB_TIMEOUT", "PT3S")
    (tmp_path / "poison-slow.txt").write_text("slow")
    poison(settings_env, "/bin/sleep 60")
    with pytest.raises(TopnFailed, match="timed out") as e:
        topn(paths=[str(tmp_path)], top=3, delete_job=False, files_per_task=1)
    job = BatchClient(emulator.endpoint, emulator.credential()).get_job(str(e.value).split()[1])
    assert job.state == "completed"
    assert job.execution_info.termination_reason in ("MaxWallClockTimeExpiry", "TopnTimeLimit")


def test_bad_account_key_is_a_clear_error_and_creates_nothing(
    settings_env, azurite: Azurite, emulator: Emulator
) -> None:
    client = BatchClient(emulator.endpoint, emulator.credential())
    pools_before = sorted(p.id for p in client.list_pools())
    for name, value in {"BATCH_ENDPOINT": emulator.endpoint, "BATCH_ACCOUNT_NAME": emulator.account,
                        "BATCH_ACCOUNT_KEY": "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZw==",
                        "STORAGE_ACCOUNT_NAME": "devstoreaccount1", "STORAGE_BLOB_ENDPOINT": azurite.blob_endpoint,
                        "STORAGE_ACCOUNT_KEY": azurite.client().credential.account_key,
                        "POOL_ID": "never-made", "APP_CONTAINER": "never-app", "INPUT_CONTAINER": "never-in",
                        "OUTPUT_CONTAINER": "never-out"}.items():  # fmt: skip
        settings_env.setenv(f"TOPN_{name}", value)
    with pytest.raises(AccessError) as e:
        topn(paths=[str(SAMPLE)], top=3)
    assert "refused the credentials (403 AuthenticationFailed)" in str(e.value) and "TOPN_BATCH_ACCOUNT_KEY" in str(
        e.value
    )
    assert "d3Jvbm" not in str(e.value)
    assert sorted(p.id for p in client.list_pools()) == pools_before
    names = {c.name for c in azurite.client().list_containers()}
    assert not names & {"never-app", "never-in", "never-out"}


def test_artifacts_are_published(stack_env: dict) -> None:
    state = topn(paths=[str(SAMPLE / "nasa-moon")], top=4, return_state=True)
    result = state.result()
    run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        latest = client.read_artifacts(flow_run_filter=run)
    keys = {a.key for a in latest}
    assert "topn-result-adhoc" in keys
    table = next(a for a in latest if a.key == "topn-result-adhoc")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(r["word"], r["count"]) for r in rows] == result.top
    assert any(a.type == "progress" for a in latest)
    per_file = next((a for a in latest if a.key == "topn-files-adhoc"), None)
    assert per_file, [(a.key, a.type) for a in latest]
    files = json.loads(per_file.data) if isinstance(per_file.data, str) else per_file.data
    assert sorted(r["file"] for r in files) == sorted(f.name for f in result.files) and len(files) == 10
    row = next(r for r in files if r["file"] == result.files[0].name)
    f = result.files[0]
    assert (row["bytes"], row["words"], row["task"]) == (f"{f.bytes:,}", f"{f.words:,}", f.task_id)
    assert "," in row["bytes"] and row["skipped"] == ""
    links = next(a for a in latest if a.key == "topn-links-adhoc")
    for where in (result.stats.job_id, result.stats.pool_id, result.files_blob, "topn-input", "10 files"):
        assert where in links.data, links.data
    assert "/jobs/" in links.data and "sig=" not in links.data


def test_logs_hold_no_keys_or_signatures(stack_env: dict, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from topn.tasks.settings import AZURITE_KEY, load_settings

    (tmp_path / "a.txt").write_text("alpha beta")
    with caplog.at_level("DEBUG"):
        topn(paths=[str(tmp_path)], top=2)
    text = caplog.text
    assert text and "sig=" not in text.replace("sig=REDACTED", "")
    assert AZURITE_KEY not in text and load_settings().batch_account[1] not in text
