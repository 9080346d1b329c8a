"""Nodes trust an extra CA for their blob transfers (trust_ca, --trust-ca): Azurite over HTTPS with a self-signed
certificate, through SDK 15. Trust is process-wide: each test here gets a fresh context, so none leaks into another."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    generate_blob_sas,
    generate_container_sas,
)
from batch_emulator import storage
from batch_emulator.server import Emulator, main

from tests.emulator.conftest import make_job, make_pool, read_file, wait_task
from tests.emulator.test_entra import self_signed
from tests.emulator.test_execution import output
from tests.stack import AZURITE_ACCOUNT, AZURITE_KEY, ROOT, free_port, spawn, stop, wait_for


class HttpsAzurite:
    """Azurite's blob service over HTTPS with a self-signed certificate (`cert`, also its CA file)."""

    def __init__(self, folder: Path) -> None:
        self.cert, key = self_signed(folder)
        self.port = free_port()
        self.process = spawn(
            [str(ROOT / "node_modules" / ".bin" / "azurite-blob"), "--blobHost", "127.0.0.1", "--blobPort",
             str(self.port), "--inMemoryPersistence", "--cert", str(self.cert), "--key", str(key),
             "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.endpoint = f"https://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def listening(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"Azurite exited: {self.process.stderr.read().decode(errors='replace')}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def client(self) -> BlobServiceClient:
        credential = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
        return BlobServiceClient(self.endpoint, credential, connection_verify=str(self.cert), api_version="2025-11-05")

    def blob_url(self, container: str, blob: str) -> str:
        expiry = datetime.now(UTC) + timedelta(hours=1)
        sas = generate_blob_sas(AZURITE_ACCOUNT, container, blob, account_key=AZURITE_KEY,
                                permission=BlobSasPermissions(read=True), expiry=expiry)  # fmt: skip
        return f"{self.endpoint}/{container}/{blob}?{sas}"

    def container_url(self, container: str, permission: str) -> str:
        permissions = ContainerSasPermissions.from_string(permission)
        expiry = datetime.now(UTC) + timedelta(hours=1)
        sas = generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY, permission=permissions,
                                     expiry=expiry)  # fmt: skip
        return f"{self.endpoint}/{container}?{sas}"


@pytest.fixture(scope="module")
def azurite_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsAzurite]:
    azurite = HttpsAzurite(tmp_path_factory.mktemp("azurite-tls"))
    try:
        wait_for(azurite.listening, timeout=120, what="Azurite over HTTPS to listen")
        yield azurite
    finally:
        stop(azurite.process)


@pytest.fixture(autouse=True)
def fresh_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the system's CAs, whatever another test trusted; what this test trusts goes with it."""
    monkeypatch.setattr(storage, "_tls", ssl.create_default_context())


def blobs(emu: Emulator, azurite: HttpsAzurite, uid: str) -> tuple[BatchClient, str]:
    """A pool and job on the emulator, and a container of two blobs on Azurite (its name)."""
    name = uid.rstrip("-")  # a container's name cannot end with one
    container = azurite.client().create_container(name)
    container.upload_blob("data.txt", b"over-https\n")
    container.upload_blob("dir/more.txt", b"more\n")
    client = BatchClient(emu.endpoint, emu.credential())
    make_pool(client, uid, nodes=1)
    make_job(client, uid, uid)
    return client, name


def run(client: BatchClient, job: str, task_id: str, command: str, **extra) -> m.BatchTask:
    client.create_task(job, m.BatchTaskCreateOptions(id=task_id, command_line=command, **extra))
    return wait_task(client, job, task_id)  # within 30 s: an untrusted certificate is not retried for a minute


def test_nodes_trust_the_given_ca(tmp_path: Path, azurite_tls: HttpsAzurite, uid: str) -> None:
    with Emulator(data_dir=tmp_path, boot_seconds=0.05, trust_ca=azurite_tls.cert) as emu:
        client, name = blobs(emu, azurite_tls, uid)
        task = run(
            client, uid, "t", "/bin/sh -c 'cat data.txt listed/dir/more.txt > copy.txt; cat copy.txt'",
            resource_files=[
                m.ResourceFile(http_url=azurite_tls.blob_url(name, "data.txt"), file_path="data.txt"),
                m.ResourceFile(storage_container_url=azurite_tls.container_url(name, "rl"), blob_prefix="dir/",
                               file_path="listed"),
            ],
            output_files=[output(azurite_tls.container_url(name, "cw"), "copy.txt", path="out/copy.txt")],
        )  # fmt: skip
        assert task.execution_info.result == "success", task.execution_info.failure_info
        assert read_file(client, uid, "t", "stdout.txt") == "over-https\nmore\n"
    uploaded = azurite_tls.client().get_blob_client(name, "out/copy.txt").download_blob().readall()
    assert uploaded == b"over-https\nmore\n"


def test_an_untrusted_certificate_fails_the_resource_file(tmp_path: Path, azurite_tls: HttpsAzurite, uid: str) -> None:
    with Emulator(data_dir=tmp_path, boot_seconds=0.05) as emu:
        client, name = blobs(emu, azurite_tls, uid)
        blob = m.ResourceFile(http_url=azurite_tls.blob_url(name, "data.txt"), file_path="data.txt")
        listed = m.ResourceFile(storage_container_url=azurite_tls.container_url(name, "rl"))
        for task_id, resource, code in (("blob", blob, "BlobDownloadMiscError"),
                                        ("listed", listed, "ResourceContainerListMiscError")):  # fmt: skip
            info = run(client, uid, task_id, "/bin/true", resource_files=[resource]).execution_info
            assert (info.result, info.exit_code) == ("failure", None)
            assert (info.failure_info.category, info.failure_info.code) == ("servererror", code)
            message = info.failure_info.message
            assert "certificate is not trusted (self-signed certificate)" in message and "--trust-ca" in message
            assert f"https://127.0.0.1:{azurite_tls.port}/" in message and "sig=" not in message  # no SAS shown


def test_bad_ca_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        Emulator(trust_ca=bad)
    with pytest.raises(FileNotFoundError):
        Emulator(trust_ca=tmp_path / "missing.pem")
    capsys.readouterr()
    for path, reason in ((tmp_path / "missing.pem", "cannot read --trust-ca"), (bad, "not a PEM CA certificate")):
        assert main(["--port", "0", "--trust-ca", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err and str(path) in err
