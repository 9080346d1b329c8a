"""Account-level operations through the official SDK 15: supported images, node counts, usage metrics,
the old node agent SKU list, and the lists of things the emulator never holds."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from batch_emulator.images import CATALOGUE
from batch_emulator.server import Emulator

from tests.emulator.conftest import make_job, make_pool
from tests.stack import wait_for


def test_supported_images(client: BatchClient) -> None:
    images = list(client.list_supported_images())
    assert len(images) == len(CATALOGUE)
    for image in images:
        assert image.os_type == "linux" and image.verification_type in ("verified", "unverified")
        assert image.node_agent_sku_id.startswith("batch.node.") and image.image_reference.version == "latest"
    by_ref = {(i.image_reference.publisher, i.image_reference.offer, i.image_reference.sku): i for i in images}
    noble = by_ref["canonical", "ubuntu-24_04-lts", "server"]
    assert (noble.node_agent_sku_id, noble.verification_type) == ("batch.node.ubuntu 24.04", "verified")
    assert noble.batch_support_end_of_life is None and noble.capabilities is None
    jammy = by_ref["canonical", "0001-com-ubuntu-server-jammy", "22_04-lts"]
    assert jammy.node_agent_sku_id == "batch.node.ubuntu 22.04"
    assert jammy.batch_support_end_of_life == datetime(2027, 6, 30, tzinfo=UTC)
    assert by_ref["microsoft-dsvm", "ubuntu-hpc", "2404"].capabilities == ["DockerCompatible"]
    agents = {i.node_agent_sku_id for i in images}
    assert agents == {"batch.node.ubuntu 22.04", "batch.node.ubuntu 24.04", "batch.node.el 9", "batch.node.debian 12"}


@pytest.mark.parametrize(
    ("text", "keep"),
    [
        ("verificationType eq 'verified'", lambda i: i.verified),
        ("verificationType ne 'verified'", lambda i: not i.verified),
        ("nodeAgentSKUId eq 'batch.node.el 9'", lambda i: i.agent == "batch.node.el 9"),
        ("osType eq 'linux' and nodeAgentSKUId eq 'batch.node.ubuntu 24.04'", lambda i: i.agent.endswith("24.04")),
        ("osType eq 'windows'", lambda i: False),
    ],
)
def test_supported_images_filtered(client: BatchClient, text: str, keep) -> None:
    got = [(i.image_reference.offer, i.image_reference.sku) for i in client.list_supported_images(filter=text)]
    assert got == [(i.offer, i.sku) for i in CATALOGUE if keep(i)]


def test_supported_images_bad_filter(client: BatchClient) -> None:
    with pytest.raises(HttpResponseError) as e:
        list(client.list_supported_images(filter="imageReference/offer eq 'debian-12'"))
    assert (e.value.status_code, e.value.error.code) == (400, "InvalidQueryParameterValue")


def test_supported_images_paged(client: BatchClient, emulator: Emulator) -> None:
    before = emulator.counts["list_supported_images"]
    paged = [i.as_dict() for i in client.list_supported_images(max_results=3)]
    assert emulator.counts["list_supported_images"] - before == math.ceil(len(CATALOGUE) / 3)
    assert paged == [i.as_dict() for i in client.list_supported_images()]
    verified = list(client.list_supported_images(max_results=2, filter="verificationType eq 'verified'"))
    assert len(verified) == sum(i.verified for i in CATALOGUE)  # the filter holds on every page
    with pytest.raises(HttpResponseError) as e:
        list(client.list_supported_images(max_results=1001))
    assert e.value.error.code == "OutOfRangeQueryParameterValue"


def _node_states(client: BatchClient, pool_id: str) -> dict[str, Counter]:
    states: dict[str, Counter] = {"dedicated": Counter(), "lowPriority": Counter()}
    for node in client.list_nodes(pool_id):
        states["dedicated" if node.is_dedicated else "lowPriority"][node.state] += 1
    return states


def test_pool_node_counts(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=2, wait=False, target_low_priority_nodes=1)
    wait_for(lambda: [n.state for n in client.list_nodes(uid)] == ["idle"] * 3, what="3 idle nodes")
    make_job(client, uid, uid)
    client.create_task(uid, m.BatchTaskCreateOptions(id="busy", command_line="sleep 30"))
    wait_for(lambda: client.get_task(uid, "busy").state == "running", what="the task to run")
    wait_for(lambda: any(n.state == "running" for n in client.list_nodes(uid)), what="a running node")
    try:
        (counts,) = client.list_pool_node_counts(filter=f"poolId eq '{uid}'")
        states = _node_states(client, uid)
        assert counts.pool_id == uid
        for kind, got in (("dedicated", counts.dedicated), ("lowPriority", counts.low_priority)):
            expected = states[kind]
            assert got.total == sum(expected.values())
            assert (got.idle, got.running) == (expected["idle"], expected["running"])
            assert got.creating == got.starting == got.start_task_failed == got.upgrading_os == 0
        assert (counts.dedicated.total, counts.low_priority.total) == (2, 1)
        assert counts.dedicated.running + counts.low_priority.running == 1
        assert uid in [c.pool_id for c in client.list_pool_node_counts()]
        assert uid in [c.pool_id for c in client.list_pool_node_counts(max_results=1)]
    finally:
        client.begin_delete_job(uid, polling_interval=0.05).result()  # kills the task
        client.begin_delete_pool(uid, polling_interval=0.05).result()


def test_pool_node_counts_of_a_new_pool(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0)
    (counts,) = client.list_pool_node_counts(filter=f"poolId eq '{uid}'")
    assert counts.dedicated.total == counts.low_priority.total == counts.dedicated.idle == 0
    assert list(client.list_pool_node_counts(filter=f"poolId eq '{uid}-missing'")) == []
    client.begin_delete_pool(uid, polling_interval=0.05).result()


def test_pool_usage_metrics_empty(client: BatchClient) -> None:
    assert list(client.list_pool_usage_metrics()) == []
    end = datetime.now(UTC) - timedelta(hours=3)
    assert list(client.list_pool_usage_metrics(start_time=end - timedelta(days=1), end_time=end)) == []
    assert list(client.list_pool_usage_metrics(filter="poolId eq 'p1'", max_results=5)) == []


def _get(client: BatchClient, path: str, **params: str) -> dict:
    response = client.send_request(HttpRequest("GET", path, params=params))  # signed by the client's pipeline
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    return response.json()


def test_node_agent_skus_for_old_clients(client: BatchClient) -> None:
    body = _get(client, "/nodeagentskus", **{"api-version": "2018-12-01.8.0"})  # as azure-batch 6.0 sends
    skus = {s["id"]: s for s in body["value"]}
    assert set(skus) == {i.agent for i in CATALOGUE}
    for sku in skus.values():
        assert set(sku) == {"id", "verifiedImageReferences", "osType"} and sku["osType"] == "linux"
        for ref in sku["verifiedImageReferences"]:
            assert set(ref) == {"publisher", "offer", "sku", "version"}
    assert {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"} in skus[
        "batch.node.ubuntu 24.04"
    ]["verifiedImageReferences"]
    assert skus["batch.node.debian 12"]["verifiedImageReferences"] == []  # only unverified images
    paged = _get(client, "/nodeagentskus", **{"api-version": "2018-12-01.8.0", "maxresults": "1"})
    assert len(paged["value"]) == 1 and "/nodeagentskus?" in paged["odata.nextLink"]
    windows = _get(client, "/nodeagentskus", **{"api-version": "2018-12-01.8.0", "$filter": "osType eq 'windows'"})
    assert windows == {"odata.metadata": f"{client._config.endpoint}/$metadata#nodeagentskus", "value": []}


def test_what_the_emulator_never_holds(client: BatchClient, uid: str) -> None:
    assert list(client.list_applications()) == []
    assert list(client.list_job_schedules()) == []
    assert list(client.list_job_schedules(filter="state eq 'active'", max_results=10)) == []
    with pytest.raises(ResourceNotFoundError) as e:
        client.get_application("blender")
    assert e.value.error.code == "ApplicationNotFound"
    with pytest.raises(ResourceNotFoundError) as e:
        client.get_job_schedule(uid)
    assert e.value.error.code == "JobScheduleNotFound"
    with pytest.raises(ResourceNotFoundError):
        client.job_schedule_exists(uid)  # SDK 15 raises on the 404 (docs/batch-wire.md 0.4)
    with pytest.raises(ResourceNotFoundError) as e:
        list(client.list_jobs_from_schedule(uid))
    assert e.value.error.code == "JobScheduleNotFound"
    schedule = m.BatchJobScheduleCreateOptions(
        id=uid,
        schedule=m.BatchJobScheduleConfiguration(recurrence_interval=timedelta(hours=1)),
        job_specification=m.BatchJobSpecification(pool_info=m.BatchPoolInfo(pool_id="p")),
    )
    with pytest.raises(ResourceNotFoundError) as e:
        client.create_job_schedule(schedule)
    assert e.value.error.code == "ResourceNotFound" and "job schedules" in e.value.error.message
    assert _get(client, "/certificates", **{"api-version": "2024-02-01.19.0"})["value"] == []
    with pytest.raises(ResourceNotFoundError) as e:  # SDK 14's certificate.get, sent raw (SDK 15 has none)
        _get(client, "/certificates(thumbprintAlgorithm=sha1,thumbprint=abc123)", **{"api-version": "2024-02-01.19.0"})
    assert e.value.error.code == "CertificateNotFound"
