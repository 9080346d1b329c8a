"""Credentials from Prefect blocks: connection strings and URLs (no service), then blocks saved to a real
Prefect server whose settings reach the real local stack."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import pytest
from batch_emulator.server import Emulator
from prefect import flow
from prefect_azure import AzureBlobStorageCredentials
from pydantic import SecretStr, ValidationError

from tests.stack import AZURITE_ACCOUNT, Azurite
from topn.tasks.blocks import (
    AzureBatchCredentials,
    _account_from_url,
    load_settings_from_blocks,
    parse_connection_string,
    settings_from_blocks,
    storage_settings,
)
from topn.tasks.clients import batch_client, blob_service
from topn.tasks.settings import AZURITE_KEY, SettingsError, TopnSettings, load_settings

SECRET = base64.b64encode(b"topn-block-secret-never-shown!!").decode()  # a valid-looking key, easy to spot
CREDENTIAL_ENV = ("BATCH_ENDPOINT", "BATCH_ACCOUNT_NAME", "BATCH_ACCOUNT_KEY", "STORAGE_ACCOUNT_NAME",
                  "STORAGE_ACCOUNT_KEY", "STORAGE_BLOB_ENDPOINT", "USE_ENTRA_ID")  # fmt: skip


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


# ---- connection strings and account URLs ---------------------------------------------------------


@pytest.mark.parametrize(("connection_string", "name", "endpoint"), [
    (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={SECRET};EndpointSuffix=core.windows.net",
     "acct", "https://acct.blob.core.windows.net"),
    (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={SECRET};EndpointSuffix=core.chinacloudapi.cn;",
     "acct", "https://acct.blob.core.chinacloudapi.cn"),
    (f"AccountName=acct;AccountKey={SECRET}", "acct", "https://acct.blob.core.windows.net"),
    (f"accountname=acct;ACCOUNTKEY={SECRET};blobendpoint=https://files.example.com/", "acct",
     "https://files.example.com"),
    (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={SECRET};"
     "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;", "devstoreaccount1",
     "http://127.0.0.1:10000/devstoreaccount1"),
])  # fmt: skip
def test_connection_strings(connection_string: str, name: str, endpoint: str) -> None:
    parsed = parse_connection_string(connection_string)
    assert parsed["storage_account_name"] == name
    assert parsed["storage_blob_endpoint"] == endpoint
    assert secret(parsed["storage_account_key"]) == SECRET  # the '=' padding of the key survives


def test_development_storage_shorthand_is_azurite() -> None:
    parsed = parse_connection_string("UseDevelopmentStorage=true")
    assert parsed["storage_account_name"] == AZURITE_ACCOUNT
    assert secret(parsed["storage_account_key"]) == AZURITE_KEY
    assert parsed["storage_blob_endpoint"] == f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}"


@pytest.mark.parametrize(("connection_string", "says"), [
    (f"AccountName=acct;Key={SECRET}", "no AccountKey"),
    (f"AccountKey={SECRET}", "no AccountName"),
    (f"BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=2024&sig={SECRET}",
     "SharedAccessSignature is not enough"),
    ("AccountName=acct;just-text", "Key=Value pairs"),
    ("", "Key=Value pairs"),
])  # fmt: skip
def test_unusable_connection_strings_say_why_without_the_secret(connection_string: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says) as e:
        parse_connection_string(connection_string)
    assert SECRET not in str(e.value) and "sig=" not in str(e.value)


@pytest.mark.parametrize(("url", "name"), [
    ("https://acct.blob.core.windows.net", "acct"),
    ("https://acct.blob.core.windows.net/", "acct"),
    ("http://127.0.0.1:10000/devstoreaccount1", "devstoreaccount1"),
    ("https://localhost:10000/devstoreaccount1/", "devstoreaccount1"),
    ("http://azurite:10000/devstoreaccount1", "devstoreaccount1"),
])  # fmt: skip
def test_account_urls(url: str, name: str) -> None:
    assert _account_from_url(url) == (name, url.rstrip("/"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:10000", "acct.blob.core.windows.net", "ftp://acct.example.com"])
def test_account_urls_without_an_account(url: str) -> None:
    with pytest.raises(SettingsError, match="storage account URL"):
        _account_from_url(url)


def test_account_url_block_means_entra_id() -> None:
    block = AzureBlobStorageCredentials(account_url="https://acct.blob.core.windows.net")
    assert storage_settings(block) == {
        "storage_account_name": "acct",
        "storage_account_key": None,
        "storage_blob_endpoint": "https://acct.blob.core.windows.net",
        "use_entra_id": True,
    }


def test_service_principal_blocks_are_refused_naming_the_environment() -> None:
    block = AzureBlobStorageCredentials(
        account_url="https://acct.blob.core.windows.net", client_id="id", tenant_id="tenant", client_secret=SECRET
    )
    with pytest.raises(SettingsError, match="DefaultAzureCredential") as e:
        storage_settings(block)
    for variable in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        assert variable in str(e.value)
    assert SECRET not in str(e.value) and SECRET not in repr(block)


@pytest.mark.parametrize(("fields", "says"), [
    ({"account_name": "acct"}, "account key"),
    ({"account_key": SECRET}, "account name"),
    ({"account_name": "acct", "account_key": ""}, "account key"),
    ({"account_name": "acct", "account_key": SECRET, "use_entra_id": True}, "not both"),
    ({"endpoint": "acct.westeurope.batch.azure.com", "account_name": "acct", "account_key": SECRET}, "https://"),
])  # fmt: skip
def test_batch_block_needs_one_way_in(fields: dict, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as e:
        AzureBatchCredentials(**{"endpoint": "https://acct.westeurope.batch.azure.com", **fields})
    assert SECRET not in str(e.value)


def test_batch_block_forms_and_repr() -> None:
    keyed = AzureBatchCredentials(endpoint="https://a.b.batch.azure.com/", account_name="a", account_key=SECRET)
    assert keyed.endpoint == "https://a.b.batch.azure.com"
    assert SECRET not in repr(keyed) and SECRET not in str(keyed)
    assert AzureBatchCredentials(endpoint="https://a.b.batch.azure.com", use_entra_id=True).account_key is None
    assert AzureBatchCredentials.get_block_type_slug() == "azure-batch-credentials"


def test_no_block_names_keep_the_settings() -> None:
    settings = load_settings(pool_id="kept")
    assert settings_from_blocks(settings, None, None) is settings


# ---- blocks on a real Prefect server, credentials for the real local stack ------------------------


@pytest.fixture
def clean(prefect_api: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No TOPN_* credentials from the environment or a .env file."""
    for name in CREDENTIAL_ENV:
        monkeypatch.delenv(f"TOPN_{name}", raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def azurite_connection_string(azurite: Azurite) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={azurite.blob_endpoint};"
    )


@pytest.fixture
def saved(clean: pytest.MonkeyPatch, azurite: Azurite, emulator: Emulator) -> tuple[str, str]:
    AzureBatchCredentials(endpoint=emulator.endpoint, account_name=emulator.account, account_key=emulator.key).save(
        "t-batch", overwrite=True
    )
    AzureBlobStorageCredentials(connection_string=azurite_connection_string(azurite)).save("t-storage", overwrite=True)
    return "t-batch", "t-storage"


def assert_reaches_the_stack(settings: TopnSettings, azurite: Azurite, emulator: Emulator) -> None:
    assert settings.batch_url == emulator.endpoint and settings.blob_url == azurite.blob_endpoint
    assert not settings.local and not settings.use_entra_id
    list(batch_client(settings).list_pools())
    list(blob_service(settings).list_containers())
    for shown in (repr(settings), str(settings)):
        assert emulator.key not in shown and AZURITE_KEY not in shown


def test_blocks_give_settings_that_reach_the_stack(saved: tuple[str, str], azurite: Azurite, emulator: Emulator):
    settings = settings_from_blocks(load_settings(pool_id="kept"), *saved)
    assert settings.pool_id == "kept"  # everything but the credentials stays
    assert (settings.batch_account_name, secret(settings.batch_account_key)) == (emulator.account, emulator.key)
    assert (settings.storage_account_name, secret(settings.storage_account_key)) == (AZURITE_ACCOUNT, AZURITE_KEY)
    assert_reaches_the_stack(settings, azurite, emulator)


def test_blocks_load_in_a_sync_flow_and_under_an_event_loop(saved: tuple[str, str]) -> None:
    @flow(persist_result=False)
    def with_blocks() -> str | None:
        return settings_from_blocks(load_settings(), *saved).batch_endpoint

    async def in_a_loop() -> str | None:
        return settings_from_blocks(load_settings(), *saved).batch_endpoint

    endpoint = settings_from_blocks(load_settings(), *saved).batch_endpoint
    assert with_blocks() == asyncio.run(in_a_loop()) == endpoint


def test_one_block_the_other_side_from_topn_settings(
    saved: tuple[str, str], clean: pytest.MonkeyPatch, azurite: Azurite, emulator: Emulator
) -> None:
    stack = {"TOPN_BATCH_ENDPOINT": emulator.endpoint, "TOPN_BATCH_ACCOUNT_NAME": emulator.account,
             "TOPN_BATCH_ACCOUNT_KEY": emulator.key, "TOPN_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
             "TOPN_STORAGE_ACCOUNT_KEY": AZURITE_KEY, "TOPN_STORAGE_BLOB_ENDPOINT": azurite.blob_endpoint}  # fmt: skip
    for batch, storage, from_env in ((saved[0], None, "TOPN_STORAGE"), (None, saved[1], "TOPN_BATCH")):
        for name, value in stack.items():
            clean.setenv(name, value)
        # Complete TOPN_* settings: the block replaces its side.
        assert_reaches_the_stack(settings_from_blocks(load_settings(), batch, storage), azurite, emulator)

        # TOPN_* holding only the other side: load_settings() alone fails, loading with the blocks works.
        for name in stack:
            if not name.startswith(from_env):
                clean.delenv(name)
        with pytest.raises(SettingsError, match="needed to use Azure"):
            load_settings()
        assert_reaches_the_stack(load_settings_from_blocks(batch, storage), azurite, emulator)
        assert load_settings_from_blocks(batch, storage, pool_id="kept").pool_id == "kept"

    clean.delenv("TOPN_BATCH_ENDPOINT")  # the other side is incomplete: the usual message, naming the block too
    with pytest.raises(SettingsError, match=r"TOPN_BATCH_ENDPOINT: needed.*'t-storage'") as e:
        load_settings_from_blocks(None, saved[1])
    assert emulator.key not in str(e.value) and AZURITE_KEY not in str(e.value)


@pytest.mark.parametrize(("batch", "storage", "kind"), [
    ("t-no-such-batch", None, "Azure Batch Credentials"),
    (None, "t-no-such-storage", "Azure Blob Storage Credentials"),
])  # fmt: skip
def test_missing_blocks_say_how_to_make_them(clean: pytest.MonkeyPatch, batch, storage, kind: str) -> None:
    with pytest.raises(SettingsError) as e:
        settings_from_blocks(load_settings(), batch, storage)
    message = str(e.value)
    assert kind in message and repr(batch or storage) in message
    assert "prefect block register -m tasks.blocks" in message and ".save(" in message


def test_bad_stored_blocks_say_what_is_wrong_without_secrets(clean: pytest.MonkeyPatch, emulator: Emulator):
    # What the UI may store (it checks types only): neither a key nor Entra ID.
    AzureBatchCredentials.model_construct(endpoint=emulator.endpoint, account_name="acct").save(
        "t-batch-unusable", overwrite=True
    )
    with pytest.raises(SettingsError, match=r"'t-batch-unusable'.*account key.*use_entra_id"):
        settings_from_blocks(load_settings(), "t-batch-unusable", None)

    # A key that is no account key: the usual settings message, naming the block.
    not_a_key = "not-base64-" + SECRET
    AzureBatchCredentials(endpoint=emulator.endpoint, account_name="acct", account_key=not_a_key).save(
        "t-batch-bad-key", overwrite=True
    )
    AzureBlobStorageCredentials(connection_string=f"AccountName=acct;AccountKey={SECRET}").save(
        "t-storage-key", overwrite=True
    )
    with pytest.raises(SettingsError, match=r"TOPN_BATCH_ACCOUNT_KEY: not a Base64.*'t-batch-bad-key'") as e:
        settings_from_blocks(load_settings(), "t-batch-bad-key", "t-storage-key")
    assert SECRET not in str(e.value)


def test_entra_id_and_keys_do_not_mix(clean: pytest.MonkeyPatch, emulator: Emulator) -> None:
    AzureBatchCredentials(endpoint=emulator.endpoint, account_name="acct", account_key=SECRET).save(
        "t-batch-key", overwrite=True
    )
    AzureBlobStorageCredentials(account_url="https://acct.blob.core.windows.net").save("t-storage-url", overwrite=True)
    with pytest.raises(SettingsError, match="Entra ID for both or account keys for both") as e:
        settings_from_blocks(load_settings(), "t-batch-key", "t-storage-url")
    assert SECRET not in str(e.value)

    AzureBatchCredentials(endpoint="https://acct.westeurope.batch.azure.com", use_entra_id=True).save(
        "t-batch-entra", overwrite=True
    )
    settings = settings_from_blocks(load_settings(), "t-batch-entra", "t-storage-url")
    assert settings.use_entra_id and settings.storage_account_name == "acct"
    assert settings.batch_account_key is None and settings.storage_account_key is None

    # A side without a block counts with its TOPN_USE_ENTRA_ID when TOPN_* configures it.
    clean.setenv("TOPN_STORAGE_ACCOUNT_NAME", "acct")
    clean.setenv("TOPN_STORAGE_ACCOUNT_KEY", SECRET)
    with pytest.raises(SettingsError, match=r"TOPN_USE_ENTRA_ID for TOPN_BATCH_\*: keys; .* 't-storage-url': Entra ID"):
        load_settings_from_blocks(None, "t-storage-url", batch_endpoint=emulator.endpoint)
    clean.delenv("TOPN_STORAGE_ACCOUNT_KEY")
    clean.setenv("TOPN_USE_ENTRA_ID", "true")
    with pytest.raises(SettingsError, match=r"'t-batch-key': keys; TOPN_USE_ENTRA_ID for TOPN_STORAGE_\*: Entra"):
        load_settings_from_blocks("t-batch-key", None)


def test_prefect_block_register_finds_the_block_types(prefect_api: str) -> None:
    prefect = str(Path(sys.executable).with_name("prefect"))
    done = subprocess.run(
        [prefect, "block", "register", "-m", "topn.tasks.blocks"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Azure Batch Credentials" in done.stdout and "Azure Blob Storage Credentials" in done.stdout
