"""Pure parts of the flow, without any service: retries, redaction, naming, commands, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from prefect.states import Failed

from topn.flows.errors import explain
from topn.tasks.inputs import local_name
from topn.tasks.naming import _names
from topn.tasks.policy import is_transient, retry_transient
from topn.tasks.sas import redact
from topn.tasks.settings import SettingsError, load_settings


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code, self.reason, self.headers = status, "x", {}

    def text(self) -> str:
        return ""


def http_error(status: int) -> HttpResponseError:
    error = HttpResponseError(message=f"status {status}")
    error.status_code = status
    return error


@pytest.mark.parametrize(("error", "transient"), [
    (http_error(429), True), (http_error(500), True), (http_error(503), True), (http_error(504), True),
    (http_error(400), False), (http_error(403), False), (http_error(404), False), (http_error(409), False),
    (ServiceRequestError("connection refused"), True), (ConnectionResetError(), True), (TimeoutError(), True),
    (ClientAuthenticationError("bad key"), False), (ValueError("bad parameter"), False),
])  # fmt: skip
def test_only_transient_errors_are_retried(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
    assert retry_transient(None, None, Failed(data=error)) is transient


def test_redaction() -> None:
    url = "http://h/c/b.txt?se=2026&sp=r&sig=abc%2Bdef%3D&sv=1 and 'https://x?sig=Z9'"
    assert redact(url) == "http://h/c/b.txt?se=2026&sp=r&sig=REDACTED&sv=1 and 'https://x?sig=REDACTED'"


def test_local_names_are_safe_and_short() -> None:
    assert local_name("folder/with space ü.txt") == "with space ü.txt"
    assert local_name("a\nb\x00c\\d.txt") == "d.txt"
    long = local_name("x" * 300 + ".txt")
    assert len(long.encode()) <= 150 and long.endswith(".txt") and long != local_name("x" * 299 + ".txt")
    assert local_name("é" * 200).encode().__len__() <= 150
    assert local_name("..") == "input.."


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"batch_endpoint": "https://a.b.batch.azure.com"}, "TOPN_STORAGE_ACCOUNT_NAME"),
    ({"batch_endpoint": "ftp://x", "storage_account_name": "s", "batch_account_name": "a",
      "batch_account_key": "a2V5a2V5a2V5a2V5a2V5a2V5", "storage_account_key": "a2V5a2V5a2V5a2V5a2V5a2V5"},
     "TOPN_BATCH_ENDPOINT"),
    ({"batch_endpoint": "https://x", "storage_account_name": "s", "batch_account_name": "a",
      "batch_account_key": "not base64!", "storage_account_key": "a2V5a2V5a2V5a2V5a2V5a2V5"}, "TOPN_BATCH_ACCOUNT_KEY"),
    ({"dedicated_nodes": 0}, "at least one node"),
    ({"task_slots_per_node": 0}, "TOPN_TASK_SLOTS_PER_NODE"),
    ({"input_container": "Bad_Name"}, "TOPN_INPUT_CONTAINER"),
    ({"job_timeout": "soon"}, "TOPN_JOB_TIMEOUT"),
])  # fmt: skip
def test_bad_settings_name_the_variable(overrides: dict, needle: str) -> None:
    with pytest.raises(SettingsError) as e:
        load_settings(**overrides)
    assert needle in str(e.value)
    assert "not base64!" not in str(e.value)


def test_local_stack_is_the_default() -> None:
    settings = load_settings()
    assert settings.local and settings.batch_url.startswith("http://127.0.0.1:")
    assert (
        repr(
            load_settings(
                batch_endpoint="https://a",
                storage_account_name="s",
                batch_account_name="a",
                batch_account_key="c2VjcmV0c2VjcmV0c2VjcmV0",
                storage_account_key="c2VjcmV0c2VjcmV0c2VjcmV0",
            )
        ).count("c2VjcmV0")
        == 0
    )  # secrets never show in a repr


def test_an_unreachable_local_stack_says_how_to_start_it() -> None:
    from tests.stack import free_port

    settings = load_settings(local_batch_port=free_port(), local_blob_port=free_port())
    message = explain(ServiceRequestError("Connection refused"), settings)
    assert "the Batch emulator at http://127.0.0.1:" in message and "Azurite at" in message
    assert "topn stack start" in message


def test_an_unreachable_azure_names_the_settings() -> None:
    from tests.stack import free_port

    settings = load_settings(batch_endpoint=f"http://127.0.0.1:{free_port()}", storage_account_name="s",
                             storage_blob_endpoint=f"http://127.0.0.1:{free_port()}", batch_account_name="a",
                             batch_account_key="c2VjcmV0c2VjcmV0c2VjcmV0",
                             storage_account_key="c2VjcmV0c2VjcmV0c2VjcmV0")  # fmt: skip
    message = explain(ServiceRequestError("Connection refused"), settings)
    assert "Azure Batch at" in message and "TOPN_BATCH_ENDPOINT" in message and "secret" not in message


@pytest.mark.parametrize(("category", "code", "ours"), [
    ("servererror", "BlobDownloadMiscError", True), ("usererror", "FileUploadMiscError", True),
    ("servererror", "NodeUnusable", True), ("servererror", "TaskEnded", False),
    ("usererror", "FailureExitCode", False), ("usererror", "BlobNotFound", False),
])  # fmt: skip
def test_which_task_failures_are_run_again_in_place(category: str, code: str, ours: bool) -> None:
    from azure.batch import models as m

    from topn.tasks.monitor import _not_its_own

    assert _not_its_own(m.BatchTaskFailureInfo(category=category, code=code)) is ours


def test_task_run_names_show_the_first_paths_by_their_last_part() -> None:
    assert _names(["/data/books/"]) == "books"
    assert _names(["/data/books", "notes.txt", "/x/y", "/z"]) == "books, notes.txt, y +1 more"


def test_a_bounded_map_keeps_order_and_only_a_few_calls_in_flight() -> None:
    import threading
    import time

    from topn.tasks.bounded import bounded_map

    lock, state = threading.Lock(), {"now": 0, "most": 0, "taken": 0}

    def slow(i: int) -> int:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.001)
        with lock:
            state["now"] -= 1
        return i * 2

    def items():
        for i in range(2_000):
            state["taken"] = i  # how far the map has read ahead of what it gave back
            yield i

    out = []
    for value in bounded_map(slow, items(), workers=4, ahead=16):
        assert state["taken"] - value // 2 <= 16
        out.append(value)
    assert out == [i * 2 for i in range(2_000)] and state["most"] <= 4

    def boom(i: int) -> int:
        if i == 5:
            raise ValueError("five")
        return i

    with pytest.raises(ValueError, match="five"):
        list(bounded_map(boom, range(100), workers=2))


def test_paths_expand_to_their_files_named_from_the_folders_parent(tmp_path, monkeypatch) -> None:
    from topn.tasks.storage import InputError, expand_paths

    top = tmp_path / "corpus"
    for name in ("b.txt", "a/z.txt", "a/b/c.txt", "a-c.txt"):
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text(name)
    (top / "link.txt").symlink_to(top / "b.txt")  # links are not followed, as Path.rglob does not
    (top / "linked").symlink_to(top / "a", target_is_directory=True)
    found = expand_paths([str(top) + "/"])
    assert [name for _, name in found] == sorted(f"corpus/{n}" for n in ("b.txt", "a/z.txt", "a/b/c.txt", "a-c.txt"))
    assert all(Path(path).read_text() == name.removeprefix("corpus/") for path, name in found)
    monkeypatch.chdir(top)
    assert [name for _, name in expand_paths(["."])] == ["a-c.txt", "a/b/c.txt", "a/z.txt", "b.txt"]  # from within
    assert expand_paths(["b.txt"]) == [("b.txt", "b.txt")]
    (tmp_path / "empty").mkdir()
    for paths, message in (
        ([str(top / "b.txt"), str(tmp_path / "other" / "b.txt")], "no such file or folder"),
        ([str(tmp_path / "empty")], "holds no files to count"),
        ([str(top / "b.txt"), str(top / "a" / ".." / "b.txt")], "both called 'b.txt'"),
    ):
        with pytest.raises(InputError, match=message):
            expand_paths(paths)
