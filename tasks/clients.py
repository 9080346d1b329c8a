"""Azure SDK clients built from the settings: the only place credentials are turned into clients."""

from __future__ import annotations

from functools import cache

from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential, TokenCredential
from azure.storage.blob import BlobServiceClient

from tasks.settings import TopnSettings

# azure-storage-blob 12.31 speaks a newer service version than Azurite accepts (shared/spec/local-stack.md).
AZURITE_API_VERSION = "2025-11-05"


@cache
def _entra_credential() -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def batch_client(settings: TopnSettings) -> BatchClient:
    """A BatchClient for the configured account: Shared Key, or Entra ID when use_entra_id is set."""
    if settings.use_entra_id and not settings.local:
        return BatchClient(settings.batch_url, _entra_credential())
    return BatchClient(settings.batch_url, AzureNamedKeyCredential(*settings.batch_account))


def blob_service(settings: TopnSettings) -> BlobServiceClient:
    """A BlobServiceClient for the configured storage account (Azurite when local)."""
    extra = {"api_version": AZURITE_API_VERSION} if settings.local else {}
    if settings.use_entra_id and not settings.local:
        return BlobServiceClient(settings.blob_url, credential=_entra_credential(), **extra)
    name, key = settings.storage_account
    return BlobServiceClient(settings.blob_url, credential={"account_name": name, "account_key": key}, **extra)
