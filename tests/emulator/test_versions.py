"""Values as the service reads them (numbers, booleans and durations sent as JSON strings) and the api-versions
the emulator understands: older ones renamed into the current shape and back, any other one refused."""

from __future__ import annotations

import functools
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch._configuration import BatchClientConfiguration
from batch_emulator import fields, versions, wire
from batch_emulator.auth import sign, string_to_sign
from batch_emulator.errors import BatchError
from batch_emulator.server import Emulator

from tests.emulator.conftest import make_job, make_pool
from tests.stack import wait_for

SDK15 = "2025-06-01"
SDK4 = "2017-09-01.6.0"  # azure-batch 4.0: resourceFiles[].blobSource, maxTasksPerNode
VM = {
    "vmSize": "standard_d2s_v3",
    "virtualMachineConfiguration": {
        "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
        "nodeAgentSKUId": "batch.node.ubuntu 24.04",
    },
}


def call(emu: Emulator, method: str, path: str, body: object = None, version: str = SDK15, **query: str):
    """A request signed with the account's Shared Key: (status, JSON body or None)."""
    text = "&".join(f"{quote(k)}={quote(v)}" for k, v in {"api-version": version, **query}.items())
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"ocp-date": wire.rfc1123(wire.now())}
    if method not in ("GET", "HEAD"):
        headers |= {"Content-Type": "application/json; odata=minimalmetadata", "Content-Length": str(len(data))}
    signature = sign(emu.key, string_to_sign(method, path, text, headers, emu.account))
    headers["Authorization"] = f"SharedKey {emu.account}:{signature}"
    request = urllib.request.Request(f"{emu.endpoint}{path}?{text}", data=data or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            payload = response.read()
            return response.status, json.loads(payload) if payload else None
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def refused(emu: Emulator, method: str, path: str, body: object, version: str = SDK15) -> dict:
    """The error of a request that must get 400: {code, message, values...}."""
    status, error = call(emu, method, path, body, version)
    assert status == 400, error
    return {"code": error["code"], "message": error["message"]["value"].split("\n")[0]} | {
        v["key"]: v["value"] for v in error.get("values", [])
    }


# ---- numbers, booleans and durations as the service reads them ------------------------------------------------


def test_numbers_and_booleans_sent_as_strings(emulator: Emulator, uid: str) -> None:
    pool = {
        "id": uid,
        **VM,
        "targetDedicatedNodes": "1",
        "taskSlotsPerNode": " 2 ",
        "enableInterNodeCommunication": "false",
    }
    assert call(emulator, "POST", "/pools", pool)[0] == 201  # as the Azure CLI on azure-batch 15 sends them
    got = call(emulator, "GET", f"/pools/{uid}")[1]
    assert (got["targetDedicatedNodes"], got["taskSlotsPerNode"], got["enableInterNodeCommunication"]) == (1, 2, False)
    wait_for(lambda: len(call(emulator, "GET", f"/pools/{uid}/nodes")[1]["value"]) == 1, what="the node")
    wait_for(lambda: call(emulator, "GET", f"/pools/{uid}")[1]["allocationState"] == "steady", what="steady")
    assert call(emulator, "POST", f"/pools/{uid}/resize", {"targetDedicatedNodes": "2"})[0] == 202
    assert call(emulator, "GET", f"/pools/{uid}")[1]["targetDedicatedNodes"] == 2

    job = {"id": uid, "poolInfo": {"poolId": uid}, "priority": "5", "usesTaskDependencies": "True",
           "allowTaskPreemption": " FALSE ", "constraints": {"maxTaskRetryCount": "+3"}}  # fmt: skip
    assert call(emulator, "POST", "/jobs", job)[0] == 201
    got = call(emulator, "GET", f"/jobs/{uid}")[1]
    assert (got["priority"], got["usesTaskDependencies"], got["allowTaskPreemption"]) == (5, True, False)
    assert got["constraints"]["maxTaskRetryCount"] == 3
    assert call(emulator, "PATCH", f"/jobs/{uid}", {"priority": "-7"})[0] == 200
    assert call(emulator, "GET", f"/jobs/{uid}")[1]["priority"] == -7

    exit_codes = [{"code": "3", "exitOptions": {"dependencyAction": "satisfy"}}]
    task = {"id": "t1", "commandLine": "/bin/sh -c 'exit 3'", "requiredSlots": "1"}
    task["exitConditions"] = {"exitCodes": exit_codes}
    assert call(emulator, "POST", f"/jobs/{uid}/tasks", task)[0] == 201
    done = wait_for(lambda: (t := call(emulator, "GET", f"/jobs/{uid}/tasks/t1")[1])["state"] == "completed" and t)
    assert done["executionInfo"]["exitCode"] == 3 and done["exitConditions"]["exitCodes"][0]["code"] == 3
    assert call(emulator, "DELETE", f"/jobs/{uid}")[0] == 202
    assert call(emulator, "DELETE", f"/pools/{uid}")[0] == 202


@pytest.mark.parametrize("value", ["one", "1.0", "0x1", "1e2", "", "1 2", "\u0661", "101", "-1", 1.0, 1.5, True, [1]])
def test_what_is_not_a_whole_number_is_refused_as_before(emulator: Emulator, uid: str, value: object) -> None:
    error = refused(emulator, "POST", "/pools", {"id": uid, **VM, "targetDedicatedNodes": value})
    assert error == {
        "code": "InvalidPropertyValue",
        "message": "The value provided for targetDedicatedNodes is invalid. It must be a whole number from 0 to 100.",
        "PropertyName": "targetDedicatedNodes",
        "PropertyValue": str(value),
    }


def test_resize_and_priority_strings_are_validated_after_reading(emulator: Emulator, uid: str) -> None:
    assert call(emulator, "POST", "/pools", {"id": uid, **VM, "targetDedicatedNodes": "0"})[0] == 201
    error = refused(emulator, "POST", f"/pools/{uid}/resize", {"targetDedicatedNodes": "two"})
    assert error["message"].endswith("It must be a whole number from 0 to 100.") and error["PropertyValue"] == "two"
    assert refused(emulator, "POST", f"/pools/{uid}/resize", {"targetLowPriorityNodes": "500"})["PropertyName"] == (
        "targetLowPriorityNodes"
    )
    job = {"id": uid, "poolInfo": {"poolId": uid}}
    error = refused(emulator, "POST", "/jobs", job | {"priority": "high"})
    assert error["message"].endswith("It must be a whole number from -1000 to 1000.")
    assert refused(emulator, "POST", "/jobs", job | {"priority": "1001"})["PropertyValue"] == "1001"
    for value in ("yes", "1", 1, ""):
        error = refused(emulator, "POST", "/jobs", job | {"usesTaskDependencies": value})
        assert error["message"].endswith("It must be true or false."), value
    assert call(emulator, "DELETE", f"/pools/{uid}")[0] == 202


@pytest.mark.parametrize(
    ("text", "stored", "length"),
    [
        ("P3Y6M4DT12H30M5S", "P1279DT12H30M5S", timedelta(days=1279, hours=12, minutes=30, seconds=5)),
        ("P1M", "P30D", timedelta(days=30)),  # before T, M is months
        ("PT1M", "PT1M", timedelta(minutes=1)),
        (" PT1H\n", "PT1H", timedelta(hours=1)),
        ("P1YT0.25S", "P365DT0.25S", timedelta(days=365, seconds=0.25)),
        ("PT05M00S", "PT05M00S", timedelta(minutes=5)),  # what the fast path reads stays as sent
    ],
)
def test_durations_as_the_service_reads_them(text: str, stored: str, length: timedelta) -> None:
    body = {"maxWallClockTime": text}
    assert fields.duration(body, "maxWallClockTime") == length
    assert body["maxWallClockTime"] == stored


@pytest.mark.parametrize(("text", "reason"), [("-PT1H", "positive"), ("PT", "ISO"), ("P1DT", "ISO"),
                                              ("P1.5Y", "ISO"), (3600, "ISO"), ("PT0S", "positive")])  # fmt: skip
def test_bad_durations_are_refused(text: object, reason: str) -> None:
    with pytest.raises(BatchError) as e:
        fields.duration({"maxWallClockTime": text}, "maxWallClockTime")
    assert e.value.code == "InvalidPropertyValue" and reason in e.value.message


# ---- api-versions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["2017-05-01.5.0", "2016-07-01.3.1", "2026-01-01", "2024-02-01", "garbage", "", "2025-06-01 "]
)
def test_unknown_api_versions_are_refused(emulator: Emulator, version: str) -> None:
    error = refused(emulator, "GET", "/pools", None, version)
    assert error["code"] == "UnsupportedRequestVersion"
    assert error["message"].startswith("The specified request version is not supported.")
    assert f"api-version {versions.OLDEST} to {versions.LATEST}" in error["message"]
    assert (error["QueryParameterName"], error["QueryParameterValue"]) == ("api-version", version)


def test_the_versions_the_sdks_send_are_understood(emulator: Emulator) -> None:
    assert BatchClientConfiguration("http://x", object()).api_version == versions.LATEST  # the installed SDK 15
    for version in ("2021-06-01.14.0", "2024-02-01.19.0", SDK4, versions.LATEST):  # SDKs 11, 14, 4 and 15
        assert call(emulator, "GET", "/pools", None, version)[0] == 200


def _completed(emu: Emulator, path: str) -> dict | None:
    task = call(emu, "GET", path, None, SDK4)[1]
    return task if task["state"] == "completed" else None


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Files(ThreadingHTTPServer):
    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture
def files(tmp_path: Path) -> Iterator[_Files]:
    (tmp_path / "data.txt").write_text("from blobSource\n")
    server = _Files(tmp_path)
    yield server
    server.shutdown()
    server.server_close()


def test_an_old_version_is_renamed_into_the_current_one_and_back(emulator: Emulator, uid: str, files: _Files) -> None:
    source = [{"blobSource": files.url("data.txt"), "filePath": "in/data.txt"}]
    pool = {"id": uid, **VM, "targetDedicatedNodes": 1, "maxTasksPerNode": 2,
            "startTask": {"commandLine": "/bin/cat in/data.txt", "resourceFiles": source}}  # fmt: skip
    assert call(emulator, "POST", "/pools", pool, SDK4)[0] == 201
    old = call(emulator, "GET", f"/pools/{uid}", None, SDK4)[1]
    assert old["maxTasksPerNode"] == 2 and "taskSlotsPerNode" not in old
    assert old["startTask"]["resourceFiles"] == source
    assert old["startTask"]["waitForSuccess"] is False  # the default before 2019-08-01.10.0
    assert call(emulator, "GET", f"/pools/{uid}", None, SDK4, **{"$select": "id,maxTasksPerNode"})[1] == {
        "odata.metadata": f"{emulator.endpoint}/$metadata#pools/@Element",
        "id": uid,
        "maxTasksPerNode": 2,
    }
    now = call(emulator, "GET", f"/pools/{uid}")[1]
    assert now["taskSlotsPerNode"] == 2 and "maxTasksPerNode" not in now
    assert now["startTask"]["resourceFiles"] == [{"httpUrl": files.url("data.txt"), "filePath": "in/data.txt"}]

    assert call(emulator, "POST", "/jobs", {"id": uid, "poolInfo": {"poolId": uid}}, SDK4)[0] == 201
    task = {"id": "t1", "commandLine": "/bin/cat in/data.txt", "resourceFiles": source}
    assert call(emulator, "POST", f"/jobs/{uid}/tasks", task, SDK4)[0] == 201
    more = {"value": [{"id": "t2", "commandLine": "/bin/cat in/data.txt", "resourceFiles": source}]}
    assert call(emulator, "POST", f"/jobs/{uid}/addtaskcollection", more, SDK4)[1]["value"][0]["status"] == "success"
    for task_id in ("t1", "t2"):
        done = wait_for(functools.partial(_completed, emulator, f"/jobs/{uid}/tasks/{task_id}"), what=task_id)
        assert done["executionInfo"]["exitCode"] == 0, done["executionInfo"]
        assert done["resourceFiles"] == source
        assert done["constraints"]["retentionTime"] == wire.INFINITE_WIRE  # the default before 2018-12-01.8.0
    listed = call(emulator, "GET", f"/jobs/{uid}/tasks", None, SDK4)[1]["value"]
    assert [t["resourceFiles"] for t in listed] == [source, source]
    assert call(emulator, "GET", f"/jobs/{uid}/tasks/t1")[1]["resourceFiles"][0]["httpUrl"] == files.url("data.txt")

    counts = {"active": 0, "running": 0, "completed": 2, "succeeded": 2, "failed": 0}
    assert call(emulator, "GET", f"/jobs/{uid}/taskcounts", None, SDK4)[1] == counts | {"validationStatus": "validated"}
    assert call(emulator, "GET", f"/jobs/{uid}/taskcounts", None, "2020-03-01.11.0")[1] == counts
    assert call(emulator, "GET", f"/jobs/{uid}/taskcounts")[1]["taskCounts"] == counts
    assert call(emulator, "DELETE", f"/jobs/{uid}", None, SDK4)[0] == 202
    assert call(emulator, "DELETE", f"/pools/{uid}", None, SDK4)[0] == 202


def test_stdout_of_a_blob_source_task(emulator: Emulator, client: BatchClient, uid: str, files: _Files) -> None:
    make_pool(client, uid)
    make_job(client, uid, uid)
    task = {"id": "t", "commandLine": "/bin/cat data.txt", "resourceFiles": [{"blobSource": files.url("data.txt"),
                                                                             "filePath": "data.txt"}]}  # fmt: skip
    assert call(emulator, "POST", f"/jobs/{uid}/tasks", task, "2018-08-01.7.0")[0] == 201
    wait_for(lambda: client.get_task(uid, "t").state == "completed", what="the task")
    assert b"".join(client.download_task_file(uid, "t", "stdout.txt")) == b"from blobSource\n"
    client.begin_delete_job(uid, polling_interval=0.05).result()
    client.begin_delete_pool(uid, polling_interval=0.05).result()


@pytest.mark.parametrize(("version", "wait"), [("2019-06-01.9.0", False), ("2019-08-01.10.0", True)])
def test_start_task_wait_default_follows_the_version(emulator: Emulator, uid: str, version: str, wait: bool) -> None:
    pool = {"id": uid, **VM, "startTask": {"commandLine": "/bin/true"}}
    assert call(emulator, "POST", "/pools", pool, version)[0] == 201
    assert call(emulator, "GET", f"/pools/{uid}")[1]["startTask"].get("waitForSuccess", True) is wait
    assert call(emulator, "DELETE", f"/pools/{uid}")[0] == 202


def test_names_from_another_version_are_refused(emulator: Emulator, uid: str) -> None:
    url = [{"httpUrl": "http://127.0.0.1:9/x", "filePath": "x"}]
    job = {"id": uid, "poolInfo": {"poolId": uid}}
    assert call(emulator, "POST", "/pools", {"id": uid, **VM})[0] == 201
    assert call(emulator, "POST", "/jobs", job)[0] == 201
    task = {"id": "t", "commandLine": "/bin/true"}
    assert refused(emulator, "POST", f"/jobs/{uid}/tasks", task | {"resourceFiles": url}, SDK4) == {
        "code": "UnsupportedProperty",
        "message": f"The property resourceFiles[0].httpUrl is not supported in api-version {SDK4}: "
        "it exists from 2018-12-01.8.0 on.",
        "PropertyName": "resourceFiles[0].httpUrl",
    }
    error = refused(emulator, "POST", f"/jobs/{uid}/tasks", task | {"resourceFiles": [{"filePath": "x"}]}, SDK4)
    assert (error["code"], error["PropertyName"]) == ("MissingRequiredProperty", "resourceFiles[0].blobSource")
    error = refused(emulator, "POST", "/pools", {"id": uid + "x", **VM, "taskSlotsPerNode": 2}, "2020-03-01.11.0")
    assert (error["code"], error["PropertyName"]) == ("UnsupportedProperty", "taskSlotsPerNode")
    error = refused(emulator, "POST", "/pools", {"id": uid + "x", **VM, "maxTasksPerNode": 0}, "2020-03-01.11.0")
    assert (error["code"], error["PropertyName"]) == ("InvalidPropertyValue", "maxTasksPerNode")  # told in its names
    assert "maxTasksPerNode is invalid" in error["message"]

    old = [{"blobSource": "http://127.0.0.1:9/x", "filePath": "x"}]
    error = refused(emulator, "POST", f"/jobs/{uid}/tasks", task | {"resourceFiles": old})  # the current version
    assert (error["code"], error["PropertyName"]) == ("UnsupportedProperty", "resourceFiles[0].blobSource")
    assert "called httpUrl from 2018-12-01.8.0 on" in error["message"]
    error = refused(emulator, "POST", "/pools", {"id": uid + "x", **VM, "maxTasksPerNode": 2})
    assert (error["code"], error["PropertyName"]) == ("UnsupportedProperty", "maxTasksPerNode")
    assert call(emulator, "DELETE", f"/jobs/{uid}")[0] == 202
    assert call(emulator, "DELETE", f"/pools/{uid}")[0] == 202


def test_sdk15_is_unaffected(client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0, slots=3)
    pool = client.get_pool(uid)
    assert pool.task_slots_per_node == 3 and pool.target_dedicated_nodes == 0
    assert [p.task_slots_per_node for p in client.list_pools(filter=f"id eq '{uid}'", select=["taskSlotsPerNode"])] == [
        3
    ]
    client.begin_delete_pool(uid, polling_interval=0.05).result()


def test_sdk15_string_numbers_reach_the_emulator_as_strings(client: BatchClient, uid: str) -> None:
    """SDK 15's models send a str given for an int field as is: the way the Azure CLI's flags arrive."""
    image = m.BatchVmImageReference(publisher="canonical", offer="ubuntu-24_04-lts", sku="server")
    vm = m.VirtualMachineConfiguration(image_reference=image, node_agent_sku_id="batch.node.ubuntu 24.04")
    options = m.BatchPoolCreateOptions(id=uid, vm_size="standard_d2s_v3", virtual_machine_configuration=vm)
    options.target_dedicated_nodes, options.task_slots_per_node = "0", "4"  # as the CLI's argparse values
    client.create_pool(options)
    assert client.get_pool(uid).task_slots_per_node == 4
    client.begin_delete_pool(uid, polling_interval=0.05).result()
