"""Small files put from one event loop (topn/tasks/puts.py), through faults on the wire: every blob lands
exactly once with its bytes, and the first failure that retries cannot cure stands, the others put."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

from tests.faults import STORAGE_KINDS, FaultProxy
from tests.stack import Azurite
from topn.tasks import puts, storage
from topn.tasks.settings import load_settings


def files(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    out = []
    for i in range(n):
        path = folder / f"f{i:04}.txt"
        path.write_bytes(os.urandom(16).hex().encode() + b" word" * (i % 50))
        out.append(path)
    return out


def test_puts_land_whole_through_faults(tmp_path: Path, azurite: Azurite, settings_env: pytest.MonkeyPatch) -> None:
    paths = files(tmp_path / "in", 300)
    container = f"puts-{os.urandom(4).hex()}"
    azurite.client().create_container(container)
    with FaultProxy(azurite.port, 0.2, 5, STORAGE_KINDS) as proxy:
        settings_env.setenv("TOPN_LOCAL_BLOB_PORT", str(proxy.port))
        settings = load_settings()

        def by_content(i: int, data: bytes) -> str:
            return hashlib.sha256(data).hexdigest()

        puts.put_files(settings, container, paths, by_content)
        puts.put_files(settings, container, paths, by_content)  # again: already there, nothing changes
        faults = sum(proxy.faults.values())
    assert faults > 0, "no fault was injected: the test proves nothing"
    client = azurite.client().get_container_client(container)
    stored = {b.name for b in client.list_blobs()}
    assert stored == {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    for path in paths[:20]:
        data = path.read_bytes()
        assert client.download_blob(hashlib.sha256(data).hexdigest()).readall() == data


def test_a_file_that_cannot_be_read_stands_and_the_others_are_put(
    tmp_path: Path, azurite: Azurite, settings_env: pytest.MonkeyPatch
) -> None:
    paths = files(tmp_path / "in", 40)
    paths[7].unlink()
    container = f"puts-{os.urandom(4).hex()}"
    azurite.client().create_container(container)
    with pytest.raises(FileNotFoundError):
        puts.put_files(load_settings(), container, paths, lambda i, _: f"blob-{i}")
    stored = {b.name for b in azurite.client().get_container_client(container).list_blobs()}
    assert "blob-7" not in stored and len(stored) >= 7  # what was put stays put


def test_upload_inputs_of_small_and_large_files_names_each_by_content(
    tmp_path: Path, azurite: Azurite, settings_env: pytest.MonkeyPatch
) -> None:
    """The loop takes the small files, the sync client's blocks the large one; both end content-addressed."""
    files(tmp_path / "in", 30)
    large = tmp_path / "in" / "large.txt"
    large.write_bytes(b"big " * ((5 << 20) // 4))  # over SINGLE_PUT_BYTES: blocks
    settings = load_settings()
    settings_env.setattr(storage, "get_run_logger", lambda: logging.getLogger("test"))  # outside a flow run
    storage.ensure_containers.fn(settings, [settings.input_container])
    inputs = storage.read_inputs.fn(settings, [str(tmp_path / "in")])
    client = azurite.client().get_container_client(settings.input_container)
    assert len(inputs) == 31
    storage.upload_inputs.fn(settings, inputs)
    for blob in inputs:
        data = (tmp_path / blob.name).read_bytes()  # a folder's files are named from the folder on
        assert (blob.version, blob.size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert blob.local_path == str(tmp_path / blob.name)
        assert client.download_blob(blob.blob).readall() == data


def test_a_file_changed_after_it_was_read_is_not_sent_under_its_old_content_name(
    tmp_path: Path, azurite: Azurite, settings_env: pytest.MonkeyPatch
) -> None:
    """A blob's name says its content: a file rewritten between the plan and its upload fails the upload with
    one line saying so, and its blob is never written with other bytes; the files around it go up."""
    files(tmp_path / "in", 5)
    large = tmp_path / "in" / "large.txt"
    large.write_bytes(os.urandom(16) + b"big " * ((5 << 20) // 4))  # not among other tests' uploads
    settings = load_settings()
    settings_env.setattr(storage, "get_run_logger", lambda: logging.getLogger("test"))
    storage.ensure_containers.fn(settings, [settings.input_container])
    inputs = storage.read_inputs.fn(settings, [str(tmp_path / "in")])
    changed = next(i for i in inputs if i.size < 1000)
    Path(changed.local_path).write_text("other words entirely")
    client = azurite.client().get_container_client(settings.input_container)
    with pytest.raises(storage.InputError, match=r"changed while the run read it: run again") as failed:
        storage.upload_inputs.fn(settings, inputs)
    assert str(failed.value).count("\n") == 0 and changed.name in str(failed.value)
    with pytest.raises(ResourceNotFoundError):
        client.download_blob(changed.blob).readall()
    large.write_bytes(b"bigger " * 1000 + large.read_bytes())
    with pytest.raises(storage.InputError, match=r"large\.txt' changed while the run read it"):
        storage.upload_inputs.fn(settings, [i for i in inputs if i.name.endswith("large.txt")])


def test_each_file_is_one_request_when_nothing_fails(
    tmp_path: Path, azurite: Azurite, settings_env: pytest.MonkeyPatch
) -> None:
    """The PUT straight to the SAS-signed container (not upload_blob's, signed with the key): one request a
    file, and one again for a file already there (409, left as it is), never a second through upload_blob."""
    paths = files(tmp_path / "in", 50)
    container = f"puts-{os.urandom(4).hex()}"
    azurite.client().create_container(container)
    with FaultProxy(azurite.port, 0.0, 1) as proxy:
        settings_env.setenv("TOPN_LOCAL_BLOB_PORT", str(proxy.port))
        settings = load_settings()
        puts.put_files(settings, container, paths, lambda i, _: f"blob-{i}")
        first = proxy.requests
        puts.put_files(settings, container, paths, lambda i, _: f"blob-{i}")
        assert (first, proxy.requests - first, proxy.sas_signed) == (50, 50, 100)
    stored = azurite.client().get_container_client(container)
    assert stored.download_blob("blob-3").readall() == paths[3].read_bytes()


def test_a_refused_put_fails_as_the_storage_sdk_says(
    tmp_path: Path, azurite: Azurite, settings_env: pytest.MonkeyPatch
) -> None:
    """A PUT refused (no such container) is tried through upload_blob, whose error stands: the usual one."""
    paths = files(tmp_path / "in", 3)
    with pytest.raises(ResourceNotFoundError) as refused:
        puts.put_files(load_settings(), f"missing-{os.urandom(4).hex()}", paths, lambda i, _: f"blob-{i}")
    assert refused.value.error_code == "ContainerNotFound"
    assert "sig=" not in str(refused.value)
