"""What runs on the nodes, through SDK 15 and a real Azurite: files, environment, failures, limits."""

from __future__ import annotations

import os

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.emulator.conftest import make_job, make_pool, read_file, wait_task
from tests.stack import Azurite, wait_for

SH = "/bin/sh -c"


@pytest.fixture
def job(client: BatchClient, uid: str) -> str:
    make_pool(client, uid, nodes=1, slots=4)
    make_job(client, uid, uid, uses_task_dependencies=True)
    return uid


def run(client: BatchClient, job: str, task_id: str, command: str, **extra) -> m.BatchTask:
    client.create_task(job, m.BatchTaskCreateOptions(id=task_id, command_line=command, **extra))
    return wait_task(client, job, task_id)


def output(container_url: str, pattern: str, condition: str = "taskcompletion", path: str | None = None):
    return m.OutputFile(
        file_pattern=pattern,
        destination=m.OutputFileDestination(
            container=m.OutputFileBlobContainerDestination(container_url=container_url, path=path)
        ),
        upload_options=m.OutputFileUploadConfiguration(upload_condition=condition),
    )


def test_clean_environment_and_no_shell(client: BatchClient, job: str) -> None:
    os.environ["TOPN_LEAK_CHECK"] = "leaked"
    done = run(client, job, "env", "/usr/bin/env")
    env = dict(line.split("=", 1) for line in read_file(client, job, "env", "stdout.txt").splitlines())
    assert "TOPN_LEAK_CHECK" not in env and "VIRTUAL_ENV" not in env and "PYTHONPATH" not in env
    assert (env["AZ_BATCH_JOB_ID"], env["AZ_BATCH_TASK_ID"], env["AZ_BATCH_POOL_ID"]) == (job, "env", job)
    assert env["AZ_BATCH_TASK_WORKING_DIR"] == env["HOME"] == env["PWD"]
    assert env["AZ_BATCH_TASK_WORKING_DIR"].endswith(f"workitems/{job}/job-1/env/wd")
    assert env["AZ_BATCH_NODE_ID"] == done.node_info.node_id and env["AZ_BATCH_ACCOUNT_NAME"] == "devbatchaccount1"
    assert ".venv" not in env["PATH"] and env["PATH"].startswith("/usr/local/sbin:")
    run(client, job, "py", "python3 -c 'import sys; print(sys.prefix == sys.base_prefix, sys.executable)'")
    assert read_file(client, job, "py", "stdout.txt").split()[0] == "True"
    run(client, job, "noshell", "/bin/echo $HOME 'a  b' \"c d\" > not-a-redirect")
    assert read_file(client, job, "noshell", "stdout.txt") == "$HOME a  b c d > not-a-redirect\n"


def test_task_environment_settings(client: BatchClient, job: str) -> None:
    client.create_task(
        job,
        m.BatchTaskCreateOptions(
            id="vars",
            command_line=f"{SH} 'echo $MY_VAR'",
            environment_settings=[m.EnvironmentSetting(name="MY_VAR", value="42")],
        ),
    )
    wait_task(client, job, "vars")
    assert read_file(client, job, "vars", "stdout.txt") == "42\n"


def test_exit_code_failure(client: BatchClient, job: str) -> None:
    done = run(client, job, "fail", f"{SH} 'echo oops >&2; exit 7'")
    info = done.execution_info
    assert (info.exit_code, info.result, info.failure_info.category, info.failure_info.code) == (
        7,
        "failure",
        "usererror",
        "FailureExitCode",
    )
    assert read_file(client, job, "fail", "stderr.txt") == "oops\n"


def test_missing_program(client: BatchClient, job: str) -> None:
    done = run(client, job, "nope", "/no/such/program --flag")
    assert done.execution_info.result == "failure" and done.execution_info.exit_code is None
    assert done.execution_info.failure_info.code == "CommandProgramNotFound"


def test_retries(client: BatchClient, job: str) -> None:
    command = f"{SH} 'echo try >> $AZ_BATCH_NODE_SHARED_DIR/{job}-tries; exit 1'"
    done = run(client, job, "retry", command, constraints=m.BatchTaskConstraints(max_task_retry_count=2))
    assert (done.execution_info.retry_count, done.execution_info.result) == (2, "failure")
    node_files = client.download_node_file(job, done.node_info.node_id, f"shared/{job}-tries")
    assert b"".join(node_files) == b"try\n" * 3


def test_wall_clock_kills_the_process_tree(client: BatchClient, job: str, tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    command = f"{SH} '/bin/sleep 60 & echo $! > {pid_file}; wait'"
    done = run(client, job, "slow", command, constraints=m.BatchTaskConstraints(max_wall_clock_time="PT1S"))
    info = done.execution_info
    assert (info.result, info.failure_info.code, info.retry_count) == ("failure", "TaskEnded", 0)
    child = int(pid_file.read_text())
    wait_for(lambda: not _alive(child), timeout=5, what="the task's child process to die")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_slots_run_tasks_at_once(client: BatchClient, job: str) -> None:
    # Each task waits for the other's marker: both finish only if the node runs them side by side.
    barrier = (
        "touch $AZ_BATCH_NODE_SHARED_DIR/{me}; i=0; while [ ! -e $AZ_BATCH_NODE_SHARED_DIR/{other} ]; "
        "do i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.1; done"
    )
    for me, other in (("a", "b"), ("b", "a")):
        client.create_task(
            job,
            m.BatchTaskCreateOptions(id=me, command_line=f"{SH} '{barrier.format(me=job + me, other=job + other)}'"),
        )
    assert wait_task(client, job, "a").execution_info.exit_code == 0
    assert wait_task(client, job, "b").execution_info.exit_code == 0


def test_dependencies_ids_ranges_and_blocking(client: BatchClient, job: str) -> None:
    tasks = [m.BatchTaskCreateOptions(id=str(i), command_line=f"{SH} 'exit {int(i == 3)}'") for i in range(1, 5)]
    tasks += [
        m.BatchTaskCreateOptions(
            id="after-1-2",
            command_line="/bin/true",
            depends_on=m.BatchTaskDependencies(task_id_ranges=[m.BatchTaskIdRange(start=1, end=2)]),
        ),
        m.BatchTaskCreateOptions(
            id="after-all",
            command_line="/bin/true",
            depends_on=m.BatchTaskDependencies(
                task_ids=["after-1-2"], task_id_ranges=[m.BatchTaskIdRange(start=1, end=4)]
            ),
        ),
        m.BatchTaskCreateOptions(
            id="satisfied", command_line="/bin/true", depends_on=m.BatchTaskDependencies(task_ids=["tolerated"])
        ),
        m.BatchTaskCreateOptions(
            id="tolerated",
            command_line=f"{SH} 'exit 5'",
            exit_conditions=m.ExitConditions(
                exit_codes=[m.ExitCodeMapping(code=5, exit_options=m.ExitOptions(dependency_action="satisfy"))]
            ),
        ),
    ]
    client.create_tasks(job, tasks)
    assert wait_task(client, job, "after-1-2").execution_info.result == "success"
    assert wait_task(client, job, "satisfied").execution_info.result == "success"
    wait_task(client, job, "4")
    assert client.get_task(job, "after-all").state == "active"  # task 3 failed: blocked for good


def test_resource_files_from_azurite(client: BatchClient, job: str, azurite: Azurite, uid: str) -> None:
    container = azurite.client().create_container(uid)
    container.upload_blob("data/a.txt", b"alpha")
    container.upload_blob("data/sub dir/b ü.txt", b"beta")
    container.upload_blob("other/c.txt", b"gamma")
    container.upload_blob("tool.sh", b"echo tool")
    read_url = azurite.container_sas_url(uid, "rl")
    blob_url = read_url.replace(f"/{uid}?", f"/{uid}/tool.sh?")
    done = run(
        client,
        job,
        "files",
        f"{SH} 'cat in/data/a.txt in/data/sub\\ dir/b\\ ü.txt; ls -l bin/tool.sh'",
        resource_files=[
            m.ResourceFile(storage_container_url=read_url, blob_prefix="data/", file_path="in"),
            m.ResourceFile(http_url=blob_url, file_path="bin/tool.sh", file_mode="0755"),
        ],
    )
    assert done.execution_info.exit_code == 0, read_file(client, job, "files", "stderr.txt")
    out = read_file(client, job, "files", "stdout.txt")
    assert out.startswith("alphabeta-rwxr-xr-x")
    names = {f.name for f in client.list_task_files(job, "files", recursive=True)}
    assert "wd/in/other/c.txt" not in names and "wd/in/data/a.txt" in names


def test_resource_file_failures(client: BatchClient, job: str, azurite: Azurite, uid: str) -> None:
    azurite.client().create_container(uid)
    missing = azurite.container_sas_url(uid, "r").replace(f"/{uid}?", f"/{uid}/missing.txt?")
    done = run(client, job, "missing", "/bin/true", resource_files=[m.ResourceFile(http_url=missing, file_path="x")])
    info = done.execution_info
    assert (info.result, info.exit_code, info.failure_info.code, info.failure_info.category) == (
        "failure",
        None,
        "BlobNotFound",
        "usererror",
    )
    assert "sig=" not in info.failure_info.message and "missing.txt" in info.failure_info.message
    no_list = azurite.container_sas_url(uid, "r")  # read, but not list
    done = run(client, job, "nolist", "/bin/true", resource_files=[m.ResourceFile(storage_container_url=no_list)])
    assert done.execution_info.failure_info.code == "ResourceContainerAccessDenied"
    assert done.execution_info.retry_count == 0


def test_output_files(client: BatchClient, job: str, azurite: Azurite, uid: str) -> None:
    container = azurite.client().create_container(uid)
    write_url = azurite.container_sas_url(uid, "cw")  # create and write only: least privilege
    command = f"{SH} 'mkdir -p out/a/b; echo 1 > out/x.json; echo 2 > out/a/b/y.json; echo 3 > out/skip.txt; echo log'"
    done = run(
        client,
        job,
        "outs",
        command,
        output_files=[
            output(write_url, "out/**/*.json", "tasksuccess", path="results"),
            output(write_url, "../stdout.txt", "taskcompletion", path="logs/outs.txt"),
            output(write_url, "out/x.json", "taskfailure", path="never.json"),
        ],
    )
    assert done.execution_info.result == "success"
    names = sorted(b.name for b in container.list_blobs())
    assert names == ["logs/outs.txt", "results/a/b/y.json", "results/x.json"]
    assert container.download_blob("logs/outs.txt").readall() == b"log\n"


def test_output_upload_failure(client: BatchClient, job: str, azurite: Azurite, uid: str) -> None:
    azurite.client().create_container(uid)
    read_only = azurite.container_sas_url(uid, "r")
    done = run(client, job, "denied", f"{SH} 'echo 1 > r.json'", output_files=[output(read_only, "*.json")])
    info = done.execution_info
    assert (info.exit_code, info.result, info.failure_info.code) == (0, "failure", "FileUploadAccessDenied")
    assert "sig=" not in read_file(client, job, "denied", "fileuploaderr.txt")


def test_terminating_a_job_kills_its_processes(client: BatchClient, job: str, tmp_path) -> None:
    pid_file = tmp_path / "pid"
    client.create_task(job, m.BatchTaskCreateOptions(id="long", command_line=f"{SH} 'echo $$ > {pid_file}; sleep 60'"))
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the task to start")
    from azure.batch.models._models import BatchJobTerminateOptions

    # SDK 15 cannot send an empty terminate body (docs/batch-wire.md 0.5): a reason is needed.
    client.begin_terminate_job(job, BatchJobTerminateOptions(termination_reason="Stop"), polling_interval=0.05).result()
    wait_for(lambda: not _alive(int(pid_file.read_text())), timeout=5, what="the task process to die")
    assert client.get_job(job).execution_info.termination_reason == "Stop"


def test_deleting_a_job_kills_its_processes_and_folders(client: BatchClient, job: str, tmp_path) -> None:
    pid_file = tmp_path / "pid"
    client.create_task(job, m.BatchTaskCreateOptions(id="long", command_line=f"{SH} 'echo $$ > {pid_file}; sleep 60'"))
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the task to start")
    node = client.get_task(job, "long").node_info.node_id
    client.begin_delete_job(job, polling_interval=0.05).result()
    wait_for(lambda: not _alive(int(pid_file.read_text())), timeout=5, what="the task process to die")
    assert not [f.name for f in client.list_node_files(job, node, recursive=True) if f.name.startswith("workitems/")]
