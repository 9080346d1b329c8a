"""Jobs and tasks through the official SDK 15: operations, paging, errors, job state machine."""

from __future__ import annotations

import json
import urllib.request

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchJobTerminateOptions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from batch_emulator.server import Emulator

from tests.emulator.conftest import make_job, make_pool, read_file, wait_task
from tests.stack import wait_for


def task(task_id: str, command: str = "/bin/true", **extra) -> m.BatchTaskCreateOptions:
    return m.BatchTaskCreateOptions(id=task_id, command_line=command, **extra)


def test_job_operations_and_errors(client: BatchClient, uid: str) -> None:
    make_job(client, uid, "no-such-pool-yet", priority=5, constraints=m.BatchJobConstraints(max_task_retry_count=2))
    job = client.get_job(uid)
    assert (job.state, job.pool_info.pool_id, job.priority, job.constraints.max_task_retry_count) == (
        "active",
        "no-such-pool-yet",
        5,
        2,
    )
    assert job.execution_info.pool_id == "no-such-pool-yet" and job.all_tasks_complete_mode == "noaction"
    assert uid in [j.id for j in client.list_jobs(filter="state eq 'active'")]
    with pytest.raises(ResourceExistsError) as e:
        make_job(client, uid.upper(), "p")
    assert e.value.error.code == "JobExists"
    with pytest.raises(ResourceNotFoundError) as e:
        client.get_job(uid + "x")
    assert e.value.error.code == "JobNotFound"
    with pytest.raises(HttpResponseError) as e:
        client.create_job(m.BatchJobCreateOptions(id=uid + "y", pool_info=m.BatchPoolInfo()))
    assert (e.value.error.code, e.value.error.details[0].message) == ("MissingRequiredProperty", "poolInfo.poolId")
    with pytest.raises(HttpResponseError) as e:
        make_job(client, uid + "z", "p", constraints=m.BatchJobConstraints(max_wall_clock_time="soon"))
    assert e.value.error.code == "InvalidPropertyValue"


def test_terminate_then_delete(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid)
    client.create_task(uid, task("sleeper", "/bin/sleep 60"))
    client.create_task(uid, task("waiting", "/bin/true", required_slots=1))
    wait_for(lambda: client.get_task(uid, "sleeper").state == "running", what="sleeper to run")
    client.begin_terminate_job(
        uid, BatchJobTerminateOptions(termination_reason="Because"), polling_interval=0.05
    ).result()
    job = client.get_job(uid)
    assert (job.state, job.execution_info.termination_reason) == ("completed", "Because")
    sleeper = client.get_task(uid, "sleeper")
    assert sleeper.state == "completed" and sleeper.execution_info.failure_info.code == "TaskEnded"
    assert client.get_task(uid, "waiting").state == "active"  # never scheduled after termination
    with pytest.raises(ResourceExistsError) as e:
        client.create_task(uid, task("late"))
    assert e.value.error.code == "JobCompleted"
    client.begin_delete_job(uid, polling_interval=0.05).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_job(uid)


def test_all_tasks_complete_terminates_the_job(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1, slots=4)
    make_job(client, uid, uid)
    client.create_tasks(uid, [task(f"t{i}") for i in range(6)])
    client.update_job(uid, m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    job = wait_for(lambda: (j := client.get_job(uid)).state == "completed" and j, what="job to complete")
    assert job.execution_info.termination_reason == "AllTasksComplete" and job.execution_info.end_time


def test_terminatejob_with_no_tasks_completes_at_once(client: BatchClient, uid: str) -> None:
    # Documented Azure behaviour: a job with no tasks has completed all of them.
    make_job(client, uid, "p", all_tasks_complete_mode="terminatejob")
    job = client.get_job(uid)
    assert (job.state, job.execution_info.termination_reason) == ("completed", "AllTasksComplete")


def test_job_wall_clock_limit(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid, constraints=m.BatchJobConstraints(max_wall_clock_time="PT1S"))
    client.create_task(uid, task("forever", "/bin/sleep 60"))
    job = wait_for(lambda: (j := client.get_job(uid)).state == "completed" and j, what="job to time out")
    assert job.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    assert client.get_task(uid, "forever").execution_info.failure_info.code == "TaskEnded"


def test_task_operations(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid)
    client.create_task(
        uid,
        task(
            "echo",
            "/bin/sh -c 'echo out; echo err >&2; mkdir -p sub; echo x > sub/f.txt'",
            display_name="Echo",
            environment_settings=[m.EnvironmentSetting(name="A", value="1")],
        ),
    )
    done = wait_task(client, uid, "echo")
    info = done.execution_info
    assert (info.exit_code, info.result, info.retry_count, done.display_name) == (0, "success", 0, "Echo")
    assert info.start_time <= info.end_time and done.node_info.pool_id == uid
    assert read_file(client, uid, "echo", "stdout.txt") == "out\n"
    assert read_file(client, uid, "echo", "stderr.txt") == "err\n"
    assert read_file(client, uid, "echo", "wd/sub/f.txt") == "x\n"
    assert b"".join(client.download_task_file(uid, "echo", "stdout.txt", ocp_range="bytes=1-2")) == b"ut"
    props = client.get_task_file_properties(uid, "echo", "stdout.txt")
    assert props.content_length == 4 and props.is_directory is False
    names = {f.name: f for f in client.list_task_files(uid, "echo", recursive=True)}
    assert {"stdout.txt", "stderr.txt", "wd", "wd/sub", "wd/sub/f.txt"} <= set(names)
    assert names["wd"].is_directory and names["stdout.txt"].properties.content_length == 4
    assert {f.name for f in client.list_task_files(uid, "echo")} >= {"stdout.txt", "wd"}
    with pytest.raises(ResourceNotFoundError) as e:
        read_file(client, uid, "echo", "wd/nope.txt")
    assert e.value.status_code == 404  # SDK 15 streams downloads and does not read the error body
    with pytest.raises(ResourceNotFoundError):
        read_file(client, uid, "echo", "../../../../etc/passwd")
    with pytest.raises(ResourceExistsError) as e:
        client.create_task(uid, task("ECHO"))
    assert e.value.error.code == "TaskExists"
    with pytest.raises(ResourceNotFoundError) as e:
        client.get_task(uid, "nope")
    assert e.value.error.code == "TaskNotFound"
    with pytest.raises(HttpResponseError) as e:
        client.create_task(uid, m.BatchTaskCreateOptions(id="nocmd"))
    assert (e.value.error.code, e.value.error.details[0].message) == ("MissingRequiredProperty", "commandLine")
    client.delete_task(uid, "echo")
    with pytest.raises(ResourceNotFoundError):
        client.get_task(uid, "echo")


def test_dependencies_need_the_job_flag(client: BatchClient, uid: str) -> None:
    make_job(client, uid, "p")
    with pytest.raises(HttpResponseError) as e:
        client.create_task(uid, task("b", depends_on=m.BatchTaskDependencies(task_ids=["a"])))
    assert e.value.error.code == "TaskDependenciesNotSpecifiedOnJob"


def test_task_collection_results(client: BatchClient, uid: str) -> None:
    make_job(client, uid, "idle-pool")
    client.create_task(uid, task("dup"))
    result = client.create_task_collection(
        uid,
        m.BatchTaskGroup(task_values=[task("ok"), task("dup"), m.BatchTaskCreateOptions(id="nocmd"), task("bad id!")]),
    )
    by_id = {r.task_id: r for r in result.result_values}
    assert by_id["ok"].status == "success" and by_id["ok"].etag
    assert (by_id["dup"].status, by_id["dup"].error.code) == ("clienterror", "TaskExists")
    assert (by_id["nocmd"].status, by_id["nocmd"].error.code) == ("clienterror", "MissingRequiredProperty")
    assert (by_id["bad id!"].status, by_id["bad id!"].error.code) == ("clienterror", "InvalidPropertyValue")
    with pytest.raises(HttpResponseError) as e:
        client.create_task_collection(uid, m.BatchTaskGroup(task_values=[task(f"x{i}") for i in range(101)]))
    assert (e.value.status_code, e.value.error.code) == (400, "InvalidPropertyValue")
    with pytest.raises(m.CreateTasksError) as e:
        client.create_tasks(uid, [task("ok2"), m.BatchTaskCreateOptions(id="nocmd2")])
    assert [f.task_id for f in e.value.failure_tasks] == ["nocmd2"]


def test_request_body_limit_drives_sdk_splitting(tmp_path, uid: str) -> None:
    with Emulator(data_dir=tmp_path, max_body_bytes=4000) as emu:
        client = BatchClient(emu.endpoint, emu.credential())
        make_job(client, uid, "p")
        with pytest.raises(HttpResponseError) as e:
            client.create_task_collection(uid, m.BatchTaskGroup(task_values=[task(f"t{i}") for i in range(100)]))
        assert (e.value.status_code, e.value.error.code) == (413, "RequestBodyTooLarge")
        client.create_tasks(uid, [task(f"t{i:03}", "/bin/echo " + "x" * 40) for i in range(250)])
        assert client.get_job_task_counts(uid).task_counts.active == 250
        stats = json.load(urllib.request.urlopen(f"{emu.endpoint}/_emulator/stats"))
        assert stats["requests"]["create_task_collection"] > 3  # split into smaller chunks


def test_list_tasks_paging_filter_select(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1, slots=4)
    make_job(client, uid, uid)
    tasks = [task(f"ok{i}") for i in range(7)] + [task(f"bad{i}", "/bin/sh -c 'exit 2'") for i in range(3)]
    client.create_tasks(uid, tasks)
    wait_for(lambda: client.get_job_task_counts(uid).task_counts.completed == 10, what="10 tasks")
    assert len(list(client.list_tasks(uid, max_results=3))) == 10
    failed = client.list_tasks(uid, filter="state eq 'completed' and executionInfo/result eq 'failure'")
    assert sorted(t.id for t in failed) == ["bad0", "bad1", "bad2"]
    paged = list(
        client.list_tasks(uid, filter="executionInfo/result eq 'success'", select=["id", "state"], max_results=2)
    )
    assert sorted(t.id for t in paged) == [f"ok{i}" for i in range(7)]
    assert paged[0].command_line is None and paged[0].state == "completed"
    counts = client.get_job_task_counts(uid)
    assert (counts.task_counts.succeeded, counts.task_counts.failed, counts.task_counts.active) == (7, 3, 0)
    assert counts.task_slot_counts.completed == 10
    with pytest.raises(HttpResponseError) as e:
        list(client.list_tasks(uid, filter="state equals 'x'"))
    assert e.value.error.code == "InvalidQueryParameterValue"
    with pytest.raises(HttpResponseError) as e:
        list(client.list_tasks(uid, max_results=5000))
    assert e.value.error.code == "OutOfRangeQueryParameterValue"


def test_terminate_task(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid)
    client.create_task(uid, task("long", "/bin/sleep 60"))
    wait_for(lambda: client.get_task(uid, "long").state == "running", what="task to run")
    client.terminate_task(uid, "long")
    done = wait_task(client, uid, "long")
    assert done.execution_info.result == "failure" and done.execution_info.failure_info.code == "TaskEnded"


def test_reactivate_task(client: BatchClient, uid: str, tmp_path) -> None:
    make_pool(client, uid, nodes=1, slots=2)
    make_job(client, uid, uid, uses_task_dependencies=True)
    tries, gate = tmp_path / "tries", tmp_path / "gate"  # attempts 1-3 fail, the 4th succeeds; 3+ wait for the gate
    flaky = (f"/bin/sh -c 'echo x >> {tries}; n=$(wc -l < {tries}); "
             f"[ $n -lt 3 ] || while [ ! -e {gate} ]; do sleep 0.02; done; test $n -ge 4'")  # fmt: skip
    retry_once = m.BatchTaskConstraints(max_task_retry_count=1)
    after = m.BatchTaskDependencies(task_ids=["flaky"])
    client.create_tasks(
        uid,
        [task("flaky", flaky, constraints=retry_once), task("after", depends_on=after), task("ok"),
         task("long", "/bin/sleep 60")],
    )  # fmt: skip
    info = wait_task(client, uid, "flaky").execution_info
    assert (info.result, info.retry_count, info.failure_info.code) == ("failure", 1, "FailureExitCode")
    wait_task(client, uid, "ok")
    wait_for(lambda: client.get_task(uid, "long").state == "running", what="long to run")
    refusals = {"ok": (409, "TaskSucceeded"), "long": (409, "TaskNotCompleted"), "nope": (404, "TaskNotFound")}
    for task_id, expected in refusals.items():
        with pytest.raises(HttpResponseError) as e:
            client.reactivate_task(uid, task_id)
        assert (e.value.status_code, e.value.error.code) == expected
    assert client.get_task(uid, "after").state == "active"  # blocked by the failure
    client.reactivate_task(uid, "flaky")
    again = client.get_task(uid, "flaky")
    assert again.state in ("active", "running")
    assert (again.execution_info.retry_count, again.execution_info.exit_code, again.execution_info.failure_info) == (
        0, None, None,
    )  # fmt: skip
    gate.touch()
    info = wait_task(client, uid, "flaky").execution_info  # 3rd attempt fails, its retry (the 4th) succeeds
    assert (info.result, info.retry_count, info.exit_code, info.failure_info) == ("success", 1, 0, None)
    assert tries.read_text() == "x\n" * 4
    assert wait_task(client, uid, "after").execution_info.result == "success"  # its dependency now satisfied
    counts = client.get_job_task_counts(uid).task_counts
    assert (counts.succeeded, counts.failed, counts.running) == (3, 0, 1)
    client.begin_terminate_job(uid, BatchJobTerminateOptions(termination_reason="x"), polling_interval=0.05).result()
    with pytest.raises(HttpResponseError) as e:
        client.reactivate_task(uid, "long")  # failed (TaskEnded), but its job is completed
    assert (e.value.status_code, e.value.error.code) == (409, "JobCompleted")


def test_request_counts_and_unknown_routes(emulator: Emulator, client: BatchClient, uid: str) -> None:
    before = json.load(urllib.request.urlopen(f"{emulator.endpoint}/_emulator/stats"))["requests"]
    make_job(client, uid, "p")
    client.get_job(uid)
    client.get_job(uid)
    after = json.load(urllib.request.urlopen(f"{emulator.endpoint}/_emulator/stats"))["requests"]
    assert after["get_job"] - before.get("get_job", 0) == 2
    assert after["create_job"] - before.get("create_job", 0) == 1
    with pytest.raises(HttpResponseError) as e:
        client.get_job_schedule("schedules-are-not-emulated")
    assert e.value.status_code == 404 and "emulator" in e.value.error.message
