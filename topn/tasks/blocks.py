"""Credentials kept in Prefect blocks, in place of the TOPN_* credential settings.

`AzureBatchCredentials` is topn's block for an Azure Batch account; storage uses prefect-azure's
`AzureBlobStorageCredentials`. Register both block types with the Prefect server once:

    prefect block register -m tasks.blocks

then create block documents in the UI (Blocks, +) or in Python, e.g.
`AzureBatchCredentials(endpoint=..., account_name=..., account_key=...).save("prod-batch")`.
`load_settings_from_blocks(batch="prod-batch", storage="prod-storage")` (or `settings_from_blocks` on
settings already loaded) then gives settings whose credentials come from those blocks; either block may be
left out, and that side keeps its TOPN_* settings.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from prefect_azure import AzureBlobStorageCredentials
from pydantic import ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings

from topn.tasks.settings import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    ENV_PREFIX,
    AzureConnection,
    S,
    SettingsError,
    TopnSettings,
    load_settings,
)

__all__ = [
    "AzureBatchCredentials",
    "AzureBlobStorageCredentials",
    "load_settings_from_blocks",
    "parse_connection_string",
    "settings_from_blocks",
]

REGISTER = "prefect block register -m tasks.blocks"
AZURITE_BLOB = f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}"  # what UseDevelopmentStorage=true means
SERVICE_PRINCIPAL = ("client_id", "tenant_id", "client_secret")
B = TypeVar("B", bound=Block)


class AzureBatchCredentials(Block):
    """Credentials for an Azure Batch account: its endpoint, and a Shared Key (account name and key) or
    Entra ID (DefaultAzureCredential: a managed identity, `az login`, or AZURE_CLIENT_ID / AZURE_TENANT_ID /
    AZURE_CLIENT_SECRET in the environment)."""

    _block_type_name = "Azure Batch Credentials"
    _description = (
        "Credentials for an Azure Batch account: its endpoint, and a Shared Key (account name and key) "
        "or Entra ID (DefaultAzureCredential)."
    )
    # Never echo what was given in a validation error: it may hold the key.
    model_config = ConfigDict(hide_input_in_errors=True)

    endpoint: str = Field(
        ...,
        title="Endpoint",
        description="The account URL, https://<account>.<region>.batch.azure.com (the local emulator: "
        "http://127.0.0.1:10100).",
    )
    account_name: str | None = Field(None, title="Account name", description="For Shared Key authentication.")
    account_key: SecretStr | None = Field(
        None, title="Account key", description="Shared Key: the account's primary or secondary access key."
    )
    use_entra_id: bool = Field(
        False,
        title="Use Entra ID",
        description="Authenticate with DefaultAzureCredential instead of the account key.",
    )

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("https://", "http://")):
            raise ValueError("endpoint: expected https://<account>.<region>.batch.azure.com")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_way_in(self) -> Self:
        if self.use_entra_id:
            if self.account_key is not None:
                raise ValueError("give either an account key or use_entra_id, not both")
        elif not (self.account_name and self.account_key and self.account_key.get_secret_value()):
            raise ValueError("give an account name and an account key (Shared Key), or set use_entra_id")
        return self


def parse_connection_string(connection_string: str) -> dict[str, Any]:
    """A storage connection string as topn settings: storage_account_name, storage_account_key (SecretStr),
    storage_blob_endpoint. Keys are matched case-insensitively, as the Azure SDK does; errors never quote
    values."""
    parts: dict[str, str] = {}
    for item in connection_string.strip().strip(";").split(";"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError("storage connection string: expected Key=Value pairs separated by ';'")
        parts[key.strip().lower()] = value.strip()
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return {
            "storage_account_name": AZURITE_ACCOUNT,
            "storage_account_key": SecretStr(AZURITE_KEY),
            "storage_blob_endpoint": AZURITE_BLOB,
        }
    name, key = parts.get("accountname"), parts.get("accountkey")
    if not (name and key):
        missing = " and ".join(k for k, v in (("AccountName", name), ("AccountKey", key)) if not v)
        sas = (
            " (a SharedAccessSignature is not enough: topn needs the account key)"
            if "sharedaccesssignature" in parts
            else ""
        )
        raise SettingsError(f"storage connection string: no {missing}{sas}")
    endpoint = parts.get("blobendpoint")
    if not endpoint:
        protocol = parts.get("defaultendpointsprotocol") or "https"
        suffix = parts.get("endpointsuffix") or "core.windows.net"
        endpoint = f"{protocol}://{name}.blob.{suffix}"
    return {
        "storage_account_name": name,
        "storage_account_key": SecretStr(key),
        "storage_blob_endpoint": endpoint.rstrip("/"),
    }


def _account_from_url(account_url: str) -> tuple[str, str]:
    """(account name, blob endpoint) from a blob service URL: the first label of the host
    (https://<account>.blob.core.windows.net), or the first path segment when the host is an IP address or
    a single label such as localhost (Azurite's http://127.0.0.1:10000/devstoreaccount1)."""
    url = urlsplit(account_url.strip())
    host = url.hostname or ""
    if url.scheme not in ("https", "http") or not host:
        raise SettingsError("storage account URL: expected https://<account>.blob.core.windows.net")
    try:
        ipaddress.ip_address(host)
        path_style = True
    except ValueError:
        path_style = "." not in host
    name = url.path.strip("/").split("/")[0] if path_style else host.split(".")[0]
    if not name:
        raise SettingsError(
            "storage account URL: no account name in it; expected https://<account>.blob.core.windows.net "
            "(or http://127.0.0.1:10000/<account> for Azurite)"
        )
    return name, account_url.strip().rstrip("/")


def storage_settings(block: AzureBlobStorageCredentials) -> dict[str, Any]:
    """The settings an AzureBlobStorageCredentials block stands for."""
    if any(getattr(block, f, None) for f in SERVICE_PRINCIPAL):
        raise SettingsError(
            "service principal fields (client_id, tenant_id, client_secret) are not used by topn: it "
            "authenticates with DefaultAzureCredential, which reads AZURE_CLIENT_ID, AZURE_TENANT_ID and "
            "AZURE_CLIENT_SECRET from the environment; set those where the flow runs and keep only the "
            "account URL in the block (or use a connection string)"
        )
    if block.connection_string is not None:
        return {**parse_connection_string(block.connection_string.get_secret_value()), "use_entra_id": False}
    if block.account_url:
        name, endpoint = _account_from_url(block.account_url)
        return {
            "storage_account_name": name,
            "storage_account_key": None,
            "storage_blob_endpoint": endpoint,
            "use_entra_id": True,
        }
    raise SettingsError("neither a connection string nor an account URL")


def batch_settings(block: AzureBatchCredentials) -> dict[str, Any]:
    """The settings an AzureBatchCredentials block stands for."""
    return {
        "batch_endpoint": block.endpoint,
        "batch_account_name": block.account_name,
        "batch_account_key": None if block.use_entra_id else block.account_key,
        "use_entra_id": block.use_entra_id,
    }


def _load(kind: type[B], name: str) -> B:
    what = f"{kind.get_block_type_name()} block {name!r}"
    try:
        # `load` returns a coroutine when it believes it runs in async code (an event loop runs, or an async
        # flow or task is current); this function is sync, so ask for the sync path whatever the caller.
        return kind.load(name, _sync=True)
    except ValueError:  # not found: Prefect says so with a ValueError
        pass
    except RuntimeError as e:  # found, but its fields do not validate
        cause = e.__cause__
        reasons = (
            "; ".join(err["msg"].removeprefix("Value error, ") for err in cause.errors())
            if isinstance(cause, ValidationError)
            else "its fields do not validate"
        )
        raise SettingsError(f"{what}: {reasons}; fix it in the Prefect UI (Blocks)") from None
    example = (
        f'AzureBatchCredentials(endpoint=..., account_name=..., account_key=...).save("{name}")'
        if kind is AzureBatchCredentials
        else f'AzureBlobStorageCredentials(connection_string=...).save("{name}")'
    )
    raise SettingsError(
        f"no {what} (block type {kind.get_block_type_slug()!r}) on the Prefect server: register the block "
        f"types with `{REGISTER}`, then create it in the Prefect UI (Blocks, +) or in Python with "
        f"`from topn.tasks.blocks import {kind.__name__}; {example}`"
    )


class _Credentials(BaseSettings):
    """The TOPN_* credential switches alone, read as TopnSettings reads them but without its checks: what
    the side without a block uses, even when the rest cannot validate until the block fills it in."""

    model_config = TopnSettings.model_config

    batch_endpoint: str | None = None
    storage_account_name: str | None = None
    use_entra_id: bool = False


def _block_credentials(
    batch: str | None, storage: str | None, topn: AzureConnection | _Credentials
) -> tuple[dict[str, Any], str]:
    """The settings the named blocks stand for, and what they are (for messages). Batch and Storage must
    agree on Entra ID or keys, where a side without a block counts only when TOPN_* configures it."""
    update: dict[str, Any] = {}
    modes: dict[str, bool] = {}
    if batch is not None:
        update |= batch_settings(_load(AzureBatchCredentials, batch))
        modes[f"Azure Batch Credentials block {batch!r}"] = update["use_entra_id"]
    elif topn.batch_endpoint:
        modes[f"{ENV_PREFIX}USE_ENTRA_ID for {ENV_PREFIX}BATCH_*"] = topn.use_entra_id
    if storage is not None:
        found = storage_settings(_load(AzureBlobStorageCredentials, storage))
        modes[f"Azure Blob Storage Credentials block {storage!r}"] = found["use_entra_id"]
        update |= found
    elif topn.storage_account_name:
        modes[f"{ENV_PREFIX}USE_ENTRA_ID for {ENV_PREFIX}STORAGE_*"] = topn.use_entra_id
    if len(set(modes.values())) > 1:
        says = "; ".join(f"{where}: {'Entra ID' if entra else 'keys'}" for where, entra in modes.items())
        raise SettingsError(
            f"Batch and Storage credentials disagree ({says}): topn uses either Entra ID for both or account "
            "keys for both; a storage block with an account URL (no connection string) means Entra ID"
        )
    named = {"Azure Batch Credentials": batch, "Azure Blob Storage Credentials": storage}
    return update, " and ".join(f"{kind} block {name!r}" for kind, name in named.items() if name is not None)


def _validated(kind: type[S], values: dict[str, Any], sources: str) -> S:
    try:
        return load_settings(kind, **values)
    except SettingsError as e:
        raise SettingsError(f"{e} (with the credentials of the {sources})") from None


def settings_from_blocks(settings: S, batch: str | None, storage: str | None) -> S:
    """`settings` with the credentials of the named blocks in place of the TOPN_* ones: `batch` names an
    Azure Batch Credentials block, `storage` an Azure Blob Storage Credentials block; either may be None,
    and that side keeps its settings. topn uses one way in for both services (TOPN_USE_ENTRA_ID), so the
    two must agree. Raises SettingsError (never quoting a secret) when a block is missing or the result
    cannot work. Call it from sync code (it loads the blocks from the Prefect API).

    `settings` must be valid on its own: when TOPN_* holds only part of the credentials (the rest being in
    a block), use `load_settings_from_blocks`."""
    if batch is None and storage is None:
        return settings
    update, sources = _block_credentials(batch, storage, settings)
    return _validated(
        type(settings), {**settings.model_dump(exclude_unset=True), **update}, sources
    )  # defaults stay defaults


def load_settings_from_blocks(
    batch: str | None, storage: str | None, kind: type[S] = TopnSettings, **overrides: object
) -> S:
    """`load_settings(kind, **overrides)` with the named blocks' credentials in place of the TOPN_* ones, checked
    once all is merged: the TOPN_* side without a block may need the block's half to be valid (storage
    in TOPN_STORAGE_*, Batch in a block)."""
    if batch is None and storage is None:
        return load_settings(kind, **overrides)
    try:
        switches = _Credentials(**{k: v for k, v in overrides.items() if k in _Credentials.model_fields})
    except ValidationError:
        switches = _Credentials.model_construct()  # a bad TOPN_USE_ENTRA_ID: load_settings says so below
    update, sources = _block_credentials(batch, storage, switches)
    return _validated(kind, {**overrides, **update}, sources)
