"""What recorded Azure traffic showed (issue 23), through SDK 15: replace job and pool properties, stop resize while
resizing, the headers of resize answers, add-collection locations, nodes' recentTasks, file content types, image ids,
authenticationTokenSettings, DataServiceVersion, Location, odata.metadata, and conditional requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError
from azure.core.rest import HttpRequest, HttpResponse
from batch_emulator.server import Emulator

from tests.emulator.conftest import make_job, make_pool, vm_config, wait_task
from tests.stack import wait_for

API = {"api-version": "2025-06-01"}
GALLERY = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/"
    "galleries/gallery1/images/ubuntu/versions/1.0.0"
)


def raw(client: BatchClient, method: str, path: str, body: dict | None = None) -> HttpResponse:
    """A request signed by the SDK's own pipeline, answered as it came."""
    headers = {"content-type": "application/json; odata=minimalmetadata"} if body is not None else {}
    request = HttpRequest(method, path, params=API, headers=headers, content=json.dumps(body) if body else None)
    try:
        return client.send_request(request)
    except HttpResponseError as e:  # the SDK's pipeline raises on an error status
        return e.response


def headers_of(_response: object, _body: object, headers: dict) -> dict:
    return headers


def test_replace_job_replaces_everything_and_checks_its_condition(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0)
    constraints = m.BatchJobConstraints(max_task_retry_count=3, max_wall_clock_time=timedelta(hours=1))
    make_job(
        client, uid, uid, priority=10, constraints=constraints, metadata=[m.BatchMetadataItem(name="a", value="1")]
    )
    before = client.get_job(uid)
    stale = before.creation_time - timedelta(hours=1)
    replacement = m.BatchJob(pool_info=m.BatchPoolInfo(pool_id=uid), priority=5)
    with pytest.raises(HttpResponseError) as e:
        client.replace_job(uid, replacement, if_unmodified_since=stale)
    assert (e.value.status_code, e.value.error.code) == (412, "ConditionNotMet")
    assert client.get_job(uid).priority == 10  # unchanged

    headers = client.replace_job(uid, replacement, if_unmodified_since=before.last_modified, cls=headers_of)
    job = client.get_job(uid)
    assert headers["ETag"] == job.etag != before.etag
    assert headers["DataServiceId"].endswith(f"/jobs/{uid}") and headers["Last-Modified"]
    assert (job.priority, job.constraints.max_task_retry_count, job.metadata) == (5, 0, None)  # the rest reset
    assert job.constraints.max_wall_clock_time > timedelta(days=3650)
    with pytest.raises(ResourceModifiedError):  # If-Match with an old ETag
        client.replace_job(uid, replacement, etag=before.etag, match_condition=MatchConditions.IfNotModified)
    client.replace_job(uid, replacement, etag=job.etag, match_condition=MatchConditions.IfNotModified)


def test_replace_pool_properties(client: BatchClient, uid: str) -> None:
    old = m.BatchStartTask(command_line="/bin/true")
    make_pool(client, uid, nodes=0, start_task=old, metadata=[m.BatchMetadataItem(name="a", value="1")])
    new = m.BatchStartTask(command_line="/bin/sh -c 'echo new'", max_task_retry_count=1)
    options = m.BatchPoolReplaceOptions(
        start_task=new, application_package_references=[], metadata=[m.BatchMetadataItem(name="b", value="2")]
    )
    headers = client.replace_pool_properties(uid, options, cls=headers_of)
    pool = raw(client, "GET", f"/pools/{uid}").json()
    assert headers["ETag"] == pool["eTag"] and headers["DataServiceId"].endswith(f"/pools/{uid}")
    assert pool["startTask"]["commandLine"] == new.command_line
    assert pool["metadata"] == [{"name": "b", "value": "2"}]
    assert (pool["certificateReferences"], pool["targetNodeCommunicationMode"]) == ([], "default")
    client.replace_pool_properties(uid, m.BatchPoolReplaceOptions(application_package_references=[], metadata=[]))
    pool = client.get_pool(uid)
    assert (pool.start_task, pool.metadata) == (None, None)  # not given: removed
    missing = raw(client, "POST", f"/pools/{uid}/updateproperties", {"applicationPackageReferences": []})
    assert (missing.status_code, missing.json()["code"]) == (400, "MissingRequiredProperty")


@pytest.fixture
def slow_boot() -> Iterator[Emulator]:
    """Nodes that take a minute to be allocated: a resize is still under way when it is stopped."""
    with Emulator(boot_seconds=120) as emu:
        yield emu


def test_stop_resize_while_resizing(slow_boot: Emulator) -> None:
    client = BatchClient(slow_boot.endpoint, slow_boot.credential())
    make_pool(client, "slow", nodes=2, wait=False)
    assert client.get_pool("slow").allocation_state == "resizing"
    headers = client._stop_pool_resize_internal("slow", cls=headers_of)
    assert client.get_pool("slow").allocation_state in ("stopping", "steady")
    wait_for(lambda: client.get_pool("slow").allocation_state == "steady", what="the pool to be steady")
    pool = client.get_pool("slow")
    assert [e.code for e in pool.resize_errors] == ["ResizeStopped"]
    assert (pool.current_dedicated_nodes, pool.target_dedicated_nodes) == (0, 2)  # not all nodes added
    assert list(client.list_nodes("slow")) == []
    assert headers["ETag"] and headers["Last-Modified"] and headers["DataServiceId"].endswith("/pools/slow")


def test_resize_answers_have_etag_and_last_modified(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0)
    wait_for(lambda: client.get_pool(uid).allocation_state == "steady", what="the pool to be steady")
    resize = m.BatchPoolResizeOptions(target_dedicated_nodes=0)
    headers = client._resize_pool_internal(uid, resize, cls=headers_of)
    assert headers["ETag"].startswith("0x8D") and headers["Last-Modified"]
    wait_for(lambda: client.get_pool(uid).allocation_state == "steady", what="the resize to end")
    headers = client._stop_pool_resize_internal(uid, cls=headers_of)
    assert headers["ETag"] == client.get_pool(uid).etag


def test_add_task_collection_results_have_locations(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0)
    make_job(client, uid, uid)
    tasks = [m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(3)]
    results = client.create_task_collection(uid, m.BatchTaskGroup(task_values=tasks)).result_values
    assert {r.task_id: r.location for r in results} == {
        f"t{i}": f"{client._config.endpoint}/jobs/{uid}/tasks/t{i}" for i in range(3)
    }


def test_nodes_show_their_recent_tasks_and_text_files(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1, start_task=m.BatchStartTask(command_line="/bin/sh -c 'echo up'"))
    make_job(client, uid, uid)
    node = next(iter(client.list_nodes(uid)))
    assert node.recent_tasks is None  # no task ran yet
    client.create_task(uid, m.BatchTaskCreateOptions(id="t1", command_line="/bin/sh -c 'echo hi'"))
    wait_task(client, uid, "t1")
    recent = client.get_node(uid, node.id).recent_tasks
    assert [(r.job_id, r.task_id, r.task_state, r.execution_info.exit_code) for r in recent] == [
        (uid, "t1", "completed", 0)
    ]
    assert recent[0].task_url.endswith(f"/jobs/{uid}/tasks/t1")
    for response in (
        raw(client, "GET", f"/jobs/{uid}/tasks/t1/files/stdout.txt"),
        raw(client, "HEAD", f"/jobs/{uid}/tasks/t1/files/stderr.txt"),
        raw(client, "GET", f"/pools/{uid}/nodes/{node.id}/files/startup%2Fstdout.txt"),
    ):
        assert response.status_code == 200 and response.headers["Content-Type"] == "text/plain"
    assert b"".join(client.download_task_file(uid, "t1", "stdout.txt")) == b"hi\n"


def test_virtual_machine_image_id_must_be_a_gallery_image(client: BatchClient, uid: str) -> None:
    image = m.BatchVmImageReference(virtual_machine_image_id="/subscriptions/x/images/not-a-gallery")
    vm = m.VirtualMachineConfiguration(image_reference=image, node_agent_sku_id="batch.node.ubuntu 24.04")
    with pytest.raises(HttpResponseError) as e:
        client.create_pool(
            m.BatchPoolCreateOptions(id=uid, vm_size="standard_d2s_v3", virtual_machine_configuration=vm)
        )
    assert (e.value.status_code, e.value.error.code) == (400, "InvalidPropertyValue")
    values = {d.key: d.value for d in e.value.model.error_values}
    assert values["PropertyName"] == "virtualMachineConfiguration.imageReference.virtualMachineImageId"
    image.virtual_machine_image_id = GALLERY
    client.create_pool(m.BatchPoolCreateOptions(id=uid, vm_size="standard_d2s_v3", virtual_machine_configuration=vm))
    assert client.get_pool(uid).virtual_machine_configuration.image_reference.virtual_machine_image_id == GALLERY


def test_authentication_token_settings_are_kept(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid)
    task = {"id": "t1", "commandLine": "/bin/sh -c 'test -n \"$AZ_BATCH_AUTHENTICATION_TOKEN\"'",
            "authenticationTokenSettings": {"access": ["job"]}}  # fmt: skip
    assert raw(client, "POST", f"/jobs/{uid}/tasks", task).status_code == 201
    assert wait_task(client, uid, "t1").execution_info.exit_code == 0  # the task got a token
    assert raw(client, "GET", f"/jobs/{uid}/tasks/t1").json()["authenticationTokenSettings"] == {"access": ["job"]}
    bad = raw(
        client, "POST", f"/jobs/{uid}/tasks", {**task, "id": "t2", "authenticationTokenSettings": {"access": ["pool"]}}
    )
    assert (bad.status_code, bad.json()["code"]) == (400, "InvalidPropertyValue")


def test_every_answer_has_data_service_version_and_bodies_odata_metadata(client: BatchClient, uid: str) -> None:
    base = client._config.endpoint
    vm = vm_config().as_dict()
    created = raw(client, "POST", "/pools", {"id": uid, "vmSize": "standard_d2s_v3", "virtualMachineConfiguration": vm})
    assert created.status_code == 201 and created.headers["Location"] == f"{base}/pools/{uid}"
    assert created.headers["Location"] == created.headers["DataServiceId"]
    job = raw(client, "POST", "/jobs", {"id": uid, "poolInfo": {"poolId": uid}})
    assert job.headers["Location"] == f"{base}/jobs/{uid}"
    answers = {
        "pool": raw(client, "GET", f"/pools/{uid}"),
        "pools": raw(client, "GET", "/pools"),
        "nodes": raw(client, "GET", f"/pools/{uid}/nodes"),
        "jobs": raw(client, "GET", "/jobs"),
        "tasks": raw(client, "GET", f"/jobs/{uid}/tasks"),
        "counts": raw(client, "GET", f"/jobs/{uid}/taskcounts"),
        "images": raw(client, "GET", "/supportedimages"),
    }
    metadata = {name: answer.json()["odata.metadata"] for name, answer in answers.items()}
    assert metadata == {
        "pool": f"{base}/$metadata#pools/@Element",
        "pools": f"{base}/$metadata#pools",
        "nodes": f"{base}/$metadata#nodes",
        "jobs": f"{base}/$metadata#jobs",
        "tasks": f"{base}/$metadata#tasks",
        "counts": f"{base}/$metadata#taskcounts/@Element",
        "images": f"{base}/$metadata#supportedimages",
    }
    others = [created, job, raw(client, "HEAD", f"/pools/{uid}"), raw(client, "GET", "/pools/missing")]
    for answer in [*answers.values(), *others]:
        assert answer.headers["DataServiceVersion"] == "3.0"


def test_a_pool_being_deleted_has_no_previous_state(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=1)
    client.begin_delete_pool(uid, polling_interval=0.05)  # not waited for: the pool is still being deleted
    answer = raw(client, "GET", f"/pools/{uid}")
    pool = answer.json() if answer.status_code == 200 else {}
    assert "previousState" not in pool and "previousStateTransitionTime" not in pool


def test_conditional_reads_and_updates(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0)
    make_job(client, uid, uid)
    pool = wait_for(lambda: (p := client.get_pool(uid)).allocation_state == "steady" and p, what="a steady pool")
    job = client.get_job(uid)
    with pytest.raises(HttpResponseError) as e:  # If-None-Match with its ETag: 304 (SDK 15 names it "modified")
        client.get_pool(uid, etag=pool.etag, match_condition=MatchConditions.IfModified)
    assert e.value.status_code == 304
    with pytest.raises(HttpResponseError) as e:  # If-Modified-Since its Last-Modified: 304
        client.get_job(uid, if_modified_since=job.last_modified)
    assert e.value.status_code == 304
    assert client.get_pool(uid, etag=pool.etag, match_condition=MatchConditions.IfNotModified).id == uid
    assert client.get_job(uid, if_unmodified_since=job.last_modified).id == uid
    client.update_pool(uid, m.BatchPoolUpdateOptions(metadata=[m.BatchMetadataItem(name="x", value="1")]))
    with pytest.raises(ResourceModifiedError):  # If-Match with the ETag before the update: 412
        client.get_pool(uid, etag=pool.etag, match_condition=MatchConditions.IfNotModified)
    with pytest.raises(ResourceModifiedError):
        client.update_pool(
            uid, m.BatchPoolUpdateOptions(metadata=[]), etag=pool.etag, match_condition=MatchConditions.IfNotModified
        )
    with pytest.raises(HttpResponseError) as e:  # If-Unmodified-Since before the job was made: 412
        client.update_job(
            uid, m.BatchJobUpdateOptions(priority=1), if_unmodified_since=job.creation_time - timedelta(hours=1)
        )
    assert (e.value.status_code, e.value.error.code) == (412, "ConditionNotMet")
    with pytest.raises(ResourceModifiedError):
        client.begin_delete_job(uid, etag="0x8D0000000000000", match_condition=MatchConditions.IfNotModified)
    assert client.get_job(uid).state == "active"
    client.update_job(
        uid, m.BatchJobUpdateOptions(priority=1), etag=job.etag, match_condition=MatchConditions.IfNotModified
    )
    assert client.get_job(uid).priority == 1
