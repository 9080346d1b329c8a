"""The flow as users run it in processes: killed and resumed, cancelled, deployed and triggered."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from azure.batch import BatchClient
from batch_emulator.server import Emulator
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from tests.conftest import ROOT, SAMPLE
from tests.stack import Azurite, spawn, stop, wait_for
from tests.taskapp.oracle import spec_top

BIN = Path(sys.executable).parent


def corpus(folder: Path, files: int, tag: str = "") -> Path:
    """`files` small distinct texts built from the sample corpus (`tag` makes them differ from other tests')."""
    text = (SAMPLE / "nasa-moon" / "180556main_ETM.Moon.ABCs.Fact.Sheet.txt").read_text(encoding="utf-8")
    folder.mkdir()
    for i in range(files):
        (folder / f"part-{i:03}.txt").write_text(f"{text}\n{tag}extra{i} " * (1 + i % 3), encoding="utf-8")
    return folder


def topn_process(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return spawn([str(BIN / "topn"), "run", *args], env={**os.environ, **env}, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip


def batch(emulator: Emulator) -> BatchClient:
    return BatchClient(emulator.endpoint, emulator.credential())


def job_of(emulator: Emulator, pool: str):
    jobs = [j for j in batch(emulator).list_jobs() if j.pool_info.pool_id == pool]
    return jobs[0] if jobs else None


# One file per task: 40 files are 41 tasks (and the merge), which the runs below are killed in the middle of.
SLOW_POOL = {"TOPN_DEDICATED_NODES": "1", "TOPN_TASK_SLOTS_PER_NODE": "1", "TOPN_FILES_PER_TASK": "1"}


def killed_at(point: str, emulator: Emulator, pool: str, azurite: Azurite):
    """A check that is true once a run reaches `point`."""
    client = batch(emulator)
    if point == "upload":
        inputs = azurite.client().get_container_client("topn-input")
        return lambda: inputs.exists() and any(True for _ in inputs.list_blobs(name_starts_with="uploads/"))
    if point == "add-tasks":
        return lambda: (job := job_of(emulator, pool)) and len(list(client.list_tasks(job.id, select=["id"]))) == 41
    return lambda: (job := job_of(emulator, pool)) and client.get_job_task_counts(job.id).task_counts.completed >= 5


def flow_run_state(flow_run_id: str) -> str:
    with get_client(sync_client=True) as prefect:
        return prefect.read_flow_run(flow_run_id).state.type.value


@pytest.mark.parametrize("point", ["upload", "add-tasks", "watch"])
def test_resume_after_the_flow_process_is_killed(
    stack_env: dict, emulator: Emulator, azurite: Azurite, tmp_path: Path, point: str
) -> None:
    folder = corpus(tmp_path / "texts", 40, tag=f"killed-at-{point}-")
    pool = f"resume-{point}"
    env = {**SLOW_POOL, "TOPN_POOL_ID": pool}
    started = emulator.service.scheduled
    first = topn_process(str(folder), "--top", "3", "--keep-job", "--json", env=env)
    wait_for(killed_at(point, emulator, pool, azurite), timeout=240, what=f"the run to reach {point}")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    client = batch(emulator)
    job = job_of(emulator, pool)
    if job:
        assert client.get_job_task_counts(job.id).task_counts.completed < 41  # really killed mid-way

    second = topn_process(str(folder), "--top", "3", "--keep-job", "--json", env=env)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    result = json.loads(out)
    assert result["top"] == spec_top(folder, 3)
    assert result["files_counted"] == 40
    assert emulator.service.scheduled - started == 41  # each file once, and the merge: nothing run twice
    if job:
        assert result["stats"]["job_id"] == job.id
    if point == "watch":
        flow_run_id = next(i.value for i in job.metadata if i.name == "prefect-flow-run")
        # The killed run's heartbeats stopped: it is marked Crashed, not left Running.
        wait_for(lambda: flow_run_state(flow_run_id) == "CRASHED", timeout=300, interval=2, what="a Crashed run")
    client.begin_delete_job(result["stats"]["job_id"], polling_interval=0.1).result()


def test_cancelling_the_flow_run_terminates_the_job(stack_env: dict, emulator: Emulator, tmp_path: Path) -> None:
    folder = corpus(tmp_path / "texts", 150)
    run = topn_process(str(folder), "--top", "3", "--keep-job", env={**SLOW_POOL, "TOPN_POOL_ID": "cancel-pool"})
    client = batch(emulator)
    job = wait_for(lambda: job_of(emulator, "cancel-pool"), timeout=120, what="the job")
    wait_for(lambda: client.get_job_task_counts(job.id).task_counts.completed >= 2, timeout=120, what="2 tasks")
    flow_run_id = next(i.value for i in job.metadata if i.name == "prefect-flow-run")
    cancel = subprocess.run([str(BIN / "prefect"), "flow-run", "cancel", flow_run_id], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    ended = wait_for(
        lambda: (j := client.get_job(job.id)).state == "completed" and j, timeout=60, what="the job to be terminated"
    )
    assert ended.execution_info.termination_reason == "TopnFlowRunCancelled"
    assert client.get_job_task_counts(job.id).task_counts.completed < 151
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0 and "cancelled" in err
    client.begin_delete_job(job.id, polling_interval=0.1).result()


def test_deployment_runs_on_a_real_prefect_server(
    stack_env: dict, azurite: Azurite, emulator: Emulator, tmp_path: Path
) -> None:
    # The deployment's pool autoscales: here it evaluates every second (the session's emulator allows it).
    env = {**os.environ, **SLOW_POOL, "TOPN_POOL_ID": "deploy-pool", "TOPN_AUTOSCALE_INTERVAL": "PT1S"}
    upload = subprocess.run([str(BIN / "topn"), "upload", str(SAMPLE)], env=env, capture_output=True, text=True,
                            timeout=300, cwd=ROOT)  # fmt: skip
    assert upload.returncode == 0 and "uploaded 11 files" in upload.stdout, upload.stderr
    container = azurite.client().get_container_client("topn-input")
    serve_log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - for the serve process's lifetime
    serve = spawn(
        [sys.executable, "-m", "topn.deployments.serve"],
        cwd=ROOT,
        stdout=serve_log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
    )
    try:

        def deployed() -> bool:
            with get_client(sync_client=True) as client:
                try:
                    return bool(client.read_deployment_by_name("topn/default"))
                except Exception:
                    return False

        wait_for(deployed, timeout=120, interval=0.5, what="deployment topn/default")
        run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "topn/default", "-p", "top=5",
                              "--watch", "--watch-timeout", "300"], capture_output=True, text=True, timeout=400,
                             cwd=ROOT)  # fmt: skip
        assert run.returncode == 0, run.stdout[-2000:] + (tmp_path / "serve.log").read_text()[-6000:]
        flow_run_id = next(w for w in run.stdout.split() if w.count("-") == 4 and len(w) == 36)
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(flow_run_id)
            artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        assert flow_run.state.is_completed()
        assert re.fullmatch(r"top 5 of prefix incoming/ \(11 files, \d+ new, 0 changed, 0 deleted\)", flow_run.name)
        # The result is persisted: read back through the API, it is what `topn run --json` prints.
        persisted = flow_run.state.result()
        again = subprocess.run([str(BIN / "topn"), "run", "--prefix", "incoming/", "--top", "5", "--json"], env=env,
                               capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
        assert again.returncode == 0, again.stderr[-2000:]
        printed = json.loads(again.stdout)
        assert {k: v for k, v in persisted.model_dump(mode="json").items() if k != "stats"} == {
            k: v for k, v in printed.items() if k != "stats"
        }
        assert sorted(f.name for f in persisted.files)[0] == "incoming/sample/books/a-tale-of-two-cities.txt"
        files_table = next(a for a in artifacts if a.key == "topn-files-default")
        assert "incoming/sample/nasa-moon/" in json.dumps(files_table.data)  # readable names, no hashes
        table = next(a for a in artifacts if a.key == "topn-result-default")
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert [(r["word"], r["count"]) for r in rows] == [
            ("the", 12495),
            ("and", 6396),
            ("of", 5858),
            ("to", 4678),
            ("a", 4111),
        ]
        assert any(a.type == "progress" for a in artifacts)

        # Cancelling a deployment run: the runner stops the flow process, and the job is terminated.
        for path in corpus(tmp_path / "slow", 150).iterdir():
            container.upload_blob(f"deploy-slow/{path.name}", path.read_bytes(), overwrite=True)
        started = subprocess.run([str(BIN / "prefect"), "deployment", "run", "topn/default", "-p",
                                  "blob_prefix=deploy-slow/"], capture_output=True, text=True, timeout=120)  # fmt: skip
        slow_id = next(w for w in started.stdout.split() if w.count("-") == 4 and len(w) == 36)
        client = batch(emulator)

        def slow_job():
            for job in client.list_jobs():
                if any(i.value == slow_id for i in job.metadata or []):
                    return job
            return None

        job = wait_for(slow_job, timeout=180, what="the slow run's job")
        wait_for(lambda: client.get_job_task_counts(job.id).task_counts.completed >= 2, timeout=120, what="2 tasks")
        cancel = subprocess.run([str(BIN / "prefect"), "flow-run", "cancel", slow_id], capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        ended = wait_for(
            lambda: (j := client.get_job(job.id)).state == "completed" and j,
            timeout=90,
            what="the cancelled run's job to be terminated",
        )
        served = (tmp_path / "serve.log").read_text()[-8000:]
        assert ended.execution_info.termination_reason == "TopnFlowRunCancelled", served
        assert client.get_job_task_counts(job.id).task_counts.completed < 151
    finally:
        stop(serve)
        serve_log.close()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--top", "0"], {}, "--top must be a whole number from 1 to 10000"),
        (["/no/such/path"], {}, "no such file or folder"),
        ([], {"TOPN_BATCH_ENDPOINT": "https://x.westeurope.batch.azure.com"}, "TOPN_STORAGE_ACCOUNT_NAME"),
        ([], {"TOPN_JOB_TIMEOUT": "soon"}, "TOPN_JOB_TIMEOUT"),
        (["--run-id", "bad id!"], {}, "a Batch job id has 1 to 64"),
        (["/tmp/" + "x" * 300], {}, "File name too long"),
    ],
)
def test_command_errors_are_one_clear_line(stack_env: dict, args: list[str], env: dict, message: str) -> None:
    proc = topn_process(*args, env=env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (1, 2) and out == "" and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert message in last and (last.startswith("topn: ") or last.startswith("usage: ") or "error:" in last), err
