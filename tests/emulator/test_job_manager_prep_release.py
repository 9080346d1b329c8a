"""A job's manager, preparation and release tasks through SDK 15, with the service's semantics (issue 23)."""

from __future__ import annotations

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchJobTerminateOptions, BatchNodeRebootOptions  # not exported by 15.1
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.emulator.conftest import make_job, make_pool, wait_task
from tests.stack import wait_for

MARK = "/bin/sh -c 'echo prep; touch marker'"
NEEDS_MARK = "/bin/sh -c 'test -f \"$AZ_BATCH_JOB_PREP_WORKING_DIR/marker\"'"
RELEASE = "/bin/sh -c 'echo released; echo $AZ_BATCH_JOB_ID > \"$AZ_BATCH_NODE_SHARED_DIR/released\"'"


def node_file(client: BatchClient, pool_id: str, node_id: str, path: str) -> str:
    return b"".join(client.download_node_file(pool_id, node_id, path)).decode()


def statuses(client: BatchClient, job_id: str) -> dict[str, m.BatchJobPreparationAndReleaseTaskStatus]:
    return {s.node_id: s for s in client.list_job_preparation_and_release_task_status(job_id)}


def test_preparation_runs_once_per_node_before_tasks_and_release_when_the_job_ends(
    client: BatchClient, uid: str
) -> None:
    make_pool(client, uid, nodes=2, slots=2)
    prep = m.BatchJobPreparationTask(command_line=MARK)
    make_job(client, uid, uid, job_preparation_task=prep, job_release_task=m.BatchJobReleaseTask(command_line=RELEASE))
    job = client.get_job(uid)
    assert (job.job_preparation_task.id, job.job_preparation_task.wait_for_success) == ("jobpreparation", True)
    assert job.job_release_task.id == "jobrelease" and job.job_release_task.max_wall_clock_time.total_seconds() == 900
    tasks = [m.BatchTaskCreateOptions(id=f"t{i}", command_line=NEEDS_MARK) for i in range(6)]
    client.create_task_collection(uid, m.BatchTaskGroup(task_values=tasks))
    for i in range(6):
        assert wait_task(client, uid, f"t{i}").execution_info.exit_code == 0  # the marker was there
    ran_on = {client.get_task(uid, f"t{i}").node_info.node_id for i in range(6)}
    found = statuses(client, uid)
    assert set(found) == ran_on
    for node_id, status in found.items():
        info = status.job_preparation_task_execution_info
        assert (info.state, info.result, info.exit_code, info.retry_count) == ("completed", "success", 0, 0)
        assert info.task_root_directory == f"workitems/{uid}/job-1/jobpreparation"
        assert node_file(client, uid, node_id, f"{info.task_root_directory}/stdout.txt") == "prep\n"  # once
        assert status.job_release_task_execution_info is None  # the job has not ended

    client.begin_terminate_job(uid, BatchJobTerminateOptions(termination_reason="Done"), polling_interval=0.05).result()
    assert client.get_job(uid).state == "completed"
    for node_id, status in statuses(client, uid).items():
        info = status.job_release_task_execution_info
        assert (info.state, info.result, info.exit_code) == ("completed", "success", 0)
        assert node_file(client, uid, node_id, f"{info.task_root_directory}/stdout.txt") == "released\n"


def test_failed_preparation_keeps_the_jobs_tasks_off_that_node(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    fails_on_first = "/bin/sh -c 'case $AZ_BATCH_NODE_ID in *_1-*) exit 3;; esac'"
    prep = m.BatchJobPreparationTask(
        command_line=fails_on_first, constraints=m.BatchTaskConstraints(max_task_retry_count=1)
    )
    make_job(client, uid, uid, job_preparation_task=prep)
    client.create_task(uid, m.BatchTaskCreateOptions(id="t1", command_line="/bin/true"))
    (first,) = wait_for(
        lambda: [
            s for s in statuses(client, uid).values() if s.job_preparation_task_execution_info.state == "completed"
        ],
        what="the preparation to end",
    )
    info = first.job_preparation_task_execution_info
    assert (info.result, info.exit_code, info.retry_count, info.failure_info.code) == (
        "failure",
        3,
        1,
        "FailureExitCode",
    )
    wait_for(lambda: client.get_task(uid, "t1").state == "active", what="the task back in the queue")
    client.begin_resize_pool(uid, m.BatchPoolResizeOptions(target_dedicated_nodes=2), polling_interval=0.05).result()
    task = wait_task(client, uid, "t1")
    assert task.execution_info.exit_code == 0 and task.node_info.node_id != first.node_id  # on the second node
    assert client.get_task(uid, "t1").execution_info.retry_count == 0  # not counted as a retry


def test_a_preparation_not_waited_for_does_not_hold_tasks(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    make_job(
        client,
        uid,
        uid,
        job_preparation_task=m.BatchJobPreparationTask(command_line="/bin/false", wait_for_success=False),
    )
    client.create_task(uid, m.BatchTaskCreateOptions(id="t1", command_line="/bin/true"))
    assert wait_task(client, uid, "t1").execution_info.exit_code == 0
    (status,) = wait_for(lambda: list(statuses(client, uid).values()), what="a status")
    wait_for(lambda: statuses(client, uid)[status.node_id].job_preparation_task_execution_info.result == "failure")


def test_preparation_runs_again_after_a_reboot(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid, job_preparation_task=m.BatchJobPreparationTask(command_line=MARK))
    client.create_task(uid, m.BatchTaskCreateOptions(id="t1", command_line=NEEDS_MARK))
    node_id = wait_task(client, uid, "t1").node_info.node_id
    client.begin_reboot_node(
        uid, node_id, BatchNodeRebootOptions(node_reboot_kind="requeue"), polling_interval=0.05
    ).result()
    wait_for(lambda: client.get_node(uid, node_id).state == "idle", what="the node back")
    client.create_task(uid, m.BatchTaskCreateOptions(id="t2", command_line=NEEDS_MARK))
    assert wait_task(client, uid, "t2").execution_info.exit_code == 0
    directory = statuses(client, uid)[node_id].job_preparation_task_execution_info.task_root_directory
    assert node_file(client, uid, node_id, f"{directory}/stdout.txt") == "prep\nprep\n"  # rerunOnNodeRebootAfterSuccess


def test_release_runs_before_a_deleted_job_goes(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    make_job(
        client, uid, uid,
        job_preparation_task=m.BatchJobPreparationTask(command_line="/bin/true"),
        job_release_task=m.BatchJobReleaseTask(command_line=RELEASE),
    )  # fmt: skip
    client.create_task(uid, m.BatchTaskCreateOptions(id="t1", command_line="/bin/true"))
    node_id = wait_task(client, uid, "t1").node_info.node_id
    client.begin_delete_job(uid, polling_interval=0.05).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_job(uid)
    assert node_file(client, uid, node_id, "shared/released") == f"{uid}\n"


def test_job_manager_runs_first_and_ends_the_job(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1, slots=2)
    manager = m.BatchJobManagerTask(
        id="manager", command_line="/bin/sh -c 'echo managing'", kill_job_on_completion=False
    )
    make_job(client, uid, uid, job_manager_task=manager)
    client.create_task(uid, m.BatchTaskCreateOptions(id="t1", command_line="/bin/true"))
    jm, t1 = wait_task(client, uid, "manager"), wait_task(client, uid, "t1")
    assert t1.execution_info.start_time >= jm.execution_info.end_time  # it ran alone on the node (runExclusive)
    assert b"".join(client.download_task_file(uid, "manager", "stdout.txt")) == b"managing\n"
    job = client.get_job(uid)
    assert (job.state, job.job_manager_task.run_exclusive, job.job_manager_task.kill_job_on_completion) == (
        "active",
        True,
        False,
    )

    killer = f"{uid}-kill"
    make_job(client, killer, uid, job_manager_task=m.BatchJobManagerTask(id="jm", command_line="/bin/true"))
    job = wait_for(lambda: (j := client.get_job(killer)).state == "completed" and j, what="the job to end")
    assert job.execution_info.termination_reason == "JMComplete"
    assert [t.id for t in client.list_tasks(killer)] == ["jm"]


def test_what_is_refused(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0)
    make_job(client, uid, uid)
    with pytest.raises(HttpResponseError) as e:
        list(client.list_job_preparation_and_release_task_status(uid))
    assert (e.value.status_code, e.value.error.code) == (409, "JobPreparationTaskOrReleaseTaskNotSpecified")
    with pytest.raises(HttpResponseError) as e:
        make_job(client, f"{uid}-r", uid, job_release_task=m.BatchJobReleaseTask(command_line="/bin/true"))
    assert (e.value.status_code, e.value.error.code) == (400, "InvalidPropertyValue")
