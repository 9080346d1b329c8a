"""Shared Key against the golden vectors of docs/batch-wire.md 4.3 and the request time, durations, $filter;
the date check and the stats reset through SDK 15 and plain HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.core.exceptions import HttpResponseError
from batch_emulator import odata, wire
from batch_emulator.auth import SharedKeyAuth, sign, string_to_sign
from batch_emulator.errors import BatchError
from batch_emulator.server import Emulator

KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
DATE = "Thu, 02 Jan 2025 03:04:05 GMT"
THEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)  # DATE as the emulator's clock: the vectors are on time


def at_then(accept_bearer: bool = False) -> SharedKeyAuth:
    return SharedKeyAuth("devaccount", KEY, accept_bearer, now=lambda: THEN)


SDK15_JSON = "application/json; odata=minimalmetadata"

VECTORS = [
    ("GET", "/jobs/job1/tasks",
     "api-version=2025-06-01&timeOut=30&maxresults=10&$filter=state%20eq%20%27completed%27&$select=id,state",
     {}, "ODJ0tIufDirYXZ2E2o14As1DI3GMaXr0NClUCnurl3w="),
    ("POST", "/jobs/job1/addtaskcollection", "api-version=2025-06-01",
     {"Content-Length": "66", "content-type": SDK15_JSON}, "VtB09Gvni9UvWjWAsc/L1mp6ibWwqWnrhvfxSsK0Hpg="),
    ("DELETE", "/jobs/job1", "api-version=2025-06-01", {}, "/KGA/ZxPHv0uJSk1/VufG38J+OVJkXq7aLNGw9P/iTU="),
    ("POST", "/jobs/job1/terminate", "api-version=2024-02-01.19.0&timeout=30",
     {"Content-Length": "0", "Content-Type": SDK15_JSON + "; charset=utf-8"},
     "nmYRPVXOTh1MQQXT4tH3G/ix3F4IUxp287FpponqQTo="),
    ("HEAD", "/pools/pool1", "api-version=2024-02-01.19.0&timeout=30", {},
     "VRn80V13Fb15DS2ENCTCjLiouCIjJT83yg4U2JegNKc="),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "query", "headers", "signature"), VECTORS)
def test_golden_vectors(method: str, path: str, query: str, headers: dict, signature: str) -> None:
    headers = {**headers, "ocp-date": DATE}
    assert sign(KEY, string_to_sign(method, path, query, headers, "devaccount")) == signature
    at_then().check(method, path, query, {**headers, "Authorization": f"SharedKey devaccount:{signature}"})


def test_query_names_keep_their_case() -> None:
    text = string_to_sign("GET", "/pools", "timeOut=30&api-version=x", {"ocp-date": DATE}, "a")
    assert text.endswith("\napi-version:x\ntimeOut:30")


@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        ("SharedKey devaccount:ODJ0tIufDirYXZ2E2o14As1DI3GMaXr0NClUCnurl3w=", 403, "AuthenticationFailed"),
        ("SharedKey other:ODJ0tIufDirYXZ2E2o14As1DI3GMaXr0NClUCnurl3w=", 403, "AuthenticationFailed"),
        ("Bearer token", 403, "AuthenticationFailed"),
        ("Basic abc", 400, "InvalidAuthenticationInfo"),
        ("", 401, "AuthenticationFailed"),
    ],
)
def test_bad_credentials(authorization: str, status: int, code: str) -> None:
    headers = {"ocp-date": DATE, "Authorization": authorization}
    with pytest.raises(BatchError) as e:
        at_then().check("GET", "/pools", "api-version=1&x=2", headers)
    assert (e.value.status, e.value.code) == (status, code)
    assert "ODJ0" not in str(e.value.values)  # the signature presented is never echoed
    assert "skew" not in str(e.value.values)


def test_bearer_when_accepted() -> None:
    at_then(accept_bearer=True).check("GET", "/pools", "", {"Authorization": "Bearer x.y.z"})  # no date: none to check
    with pytest.raises(BatchError) as e:
        at_then(accept_bearer=True).check("GET", "/pools", "", {"Authorization": "Bearer x", "ocp-date": "x"})
    assert (e.value.status, e.value.code) == (403, "AuthenticationFailed")


def signed(headers: dict[str, str], path: str = "/pools", query: str = "api-version=1") -> dict[str, str]:
    signature = sign(KEY, string_to_sign("GET", path, query, headers, "devaccount"))
    return {**headers, "Authorization": f"SharedKey devaccount:{signature}"}


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [
        ({"ocp-date": wire.rfc1123(THEN - timedelta(minutes=10))}, True),
        ({"ocp-date": wire.rfc1123(THEN + timedelta(minutes=14, seconds=59))}, True),
        ({"Date": wire.rfc1123(THEN)}, True),  # no ocp-date: the signed Date header counts
        ({"ocp-date": wire.rfc1123(THEN), "Date": "Mon, 01 Jan 2024 00:00:00 GMT"}, True),  # ocp-date wins
        ({"ocp-date": wire.rfc1123(THEN - timedelta(minutes=16))}, False),
        ({"ocp-date": wire.rfc1123(THEN + timedelta(minutes=16))}, False),
        ({"ocp-date": "Mon, 01 Jan 2024 00:00:00 GMT"}, False),
        ({"ocp-date": "Tue, 01 Jan 2030 00:00:00 GMT"}, False),
        ({"ocp-date": "yesterday"}, False),
        ({}, False),
    ],
)
def test_request_time(headers: dict[str, str], accepted: bool) -> None:
    if accepted:
        at_then().check("GET", "/pools", "api-version=1", signed(headers))
        return
    with pytest.raises(BatchError) as e:
        at_then().check("GET", "/pools", "api-version=1", signed(headers))
    assert (e.value.status, e.value.code) == (403, "AuthenticationFailed")
    assert "date" in e.value.values["AuthenticationErrorDetail"].lower()


@pytest.mark.parametrize("when", [datetime(2024, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)])
def test_sdk_requests_out_of_time_are_refused(client: BatchClient, when: datetime) -> None:
    with pytest.raises(HttpResponseError) as e:
        list(client.list_pools(ocp_date=when))  # SDK 15 signs the ocp-date it is given
    assert (e.value.status_code, e.value.error.code) == (403, "AuthenticationFailed")
    detail = {d.code: d.message for d in e.value.error.details}["AuthenticationErrorDetail"]
    assert "outside the allowed skew of 15 minutes" in detail


def test_sdk_request_ten_minutes_off_is_accepted(client: BatchClient) -> None:
    list(client.list_pools(ocp_date=wire.now() - timedelta(minutes=10)))
    list(client.list_pools(ocp_date=wire.now() + timedelta(minutes=10)))


def test_stats_reset_needs_the_account_key(tmp_path: Path) -> None:
    with Emulator(data_dir=tmp_path) as emu:
        client = BatchClient(emu.endpoint, emu.credential())
        list(client.list_pools())
        path = "/_emulator/stats/reset"

        def reset(headers: dict[str, str]) -> int:
            request = urllib.request.Request(emu.endpoint + path, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request) as response:
                    return response.status
            except urllib.error.HTTPError as e:
                assert json.load(e)["code"] == "AuthenticationFailed"
                return e.code

        def total() -> int:
            return json.load(urllib.request.urlopen(emu.endpoint + "/_emulator/stats"))["total"]  # open to all

        now = {"ocp-date": wire.rfc1123(wire.now())}
        signature = sign(emu.key, string_to_sign("POST", path, "", now, emu.account))
        wrong = sign(KEY, string_to_sign("POST", path, "", now, emu.account))
        stale = {"ocp-date": "Mon, 01 Jan 2024 00:00:00 GMT"}
        stale_signature = sign(emu.key, string_to_sign("POST", path, "", stale, emu.account))
        for headers in ({}, now, {**now, "Authorization": "Bearer x"},
                        {**now, "Authorization": f"SharedKey {emu.account}:{wrong}"},
                        {**stale, "Authorization": f"SharedKey {emu.account}:{stale_signature}"}):  # fmt: skip
            assert reset(headers) == 403
        assert total() == 1
        assert reset({**now, "Authorization": f"SharedKey {emu.account}:{signature}"}) == 204
        assert total() == 0
        health = json.load(urllib.request.urlopen(emu.endpoint + "/_emulator/health"))
        assert health["status"] == "ok"
        client.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT05M00S", timedelta(minutes=5)), ("PT5M", timedelta(minutes=5)), ("P1D", timedelta(days=1)),
        ("PT00.5S", timedelta(seconds=0.5)),
        ("P2DT03H04M05.123S", timedelta(days=2, hours=3, minutes=4, seconds=5.123)),
        ("PT01H00M00S", timedelta(hours=1)), (wire.INFINITE_WIRE, wire.INFINITE),
    ],
)  # fmt: skip
def test_durations(text: str, expected: timedelta) -> None:
    assert wire.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "5M", "PT5X", "1 hour", "P1DT"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        wire.parse_duration(text)


TASKS = [
    {"id": "a", "state": "completed", "executionInfo": {"result": "success", "exitCode": 0}},
    {"id": "b", "state": "completed", "executionInfo": {"result": "failure", "exitCode": 3}},
    {"id": "c", "state": "running", "executionInfo": {}},
    {"id": "it's", "state": "active", "executionInfo": {}},
]


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("state eq 'completed'", ["a", "b"]),
        ("state eq 'completed' and executionInfo/result eq 'failure'", ["b"]),
        ("state eq 'running' or executionInfo/result eq 'success'", ["a", "c"]),
        ("executionInfo/exitCode ne 0", ["b", "c", "it's"]),
        ("executionInfo/exitCode gt 0", ["b"]),
        ("(state eq 'active' or state eq 'running') and not (id eq 'c')", ["it's"]),
        ("id eq 'it''s'", ["it's"]),
        ("startswith(id, 'I')", ["it's"]),
        ("state eq 'COMPLETED'", ["a", "b"]),
    ],
)
def test_task_filters(text: str, ids: list[str]) -> None:
    keep = odata.parse_filter(text, "tasks")
    assert [t["id"] for t in TASKS if keep(t)] == ids


@pytest.mark.parametrize(
    "text",
    [
        "state eq",
        "state = 'x'",
        "vmSize eq 'x'",
        "state eq 'a' and",
        "(state eq 'a'",
        "state eq 'a' xor id eq 'b'",
        "'x' eq state",
    ],
)
def test_bad_filters(text: str) -> None:
    with pytest.raises(BatchError) as e:
        odata.parse_filter(text, "tasks")
    assert (e.value.status, e.value.code) == (400, "InvalidQueryParameterValue")
