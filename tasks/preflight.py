"""Checking access before anything is created: a bad key or endpoint fails the run at once, clearly."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from prefect import task

from tasks.clients import batch_client, blob_service
from tasks.retry import AZURE_TASK
from tasks.settings import TopnSettings


class AccessError(RuntimeError):
    """Azure refused the credentials or could not be reached."""


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=3):
            return True
    except OSError:
        return False


def unreachable(settings: TopnSettings) -> str:
    """Which service does not answer, and how to bring it back."""
    down = [(name, url, hint) for name, url, hint in (
        ("the Batch emulator" if settings.local else "Azure Batch", settings.batch_url, "TOPN_BATCH_ENDPOINT"),
        ("Azurite" if settings.local else "Azure Storage", settings.blob_url, "TOPN_STORAGE_BLOB_ENDPOINT"),
    ) if not _answers(url)]  # fmt: skip
    if not down:
        return "lost the connection to Azure Batch or Storage and could not finish: run the same command again"
    names = " and ".join(f"{name} at {url}" for name, url, _ in down)
    if settings.local:
        return f"{names} did not answer: start the local stack with `topn stack start`, then run again"
    local = any(url.startswith(("http://127.0.0.1:", "http://localhost:")) for _, url, _ in down)
    hint = " (the local stack: `topn stack start`)" if local else ""
    return f"{names} did not answer{hint}: check {', '.join(h for _, _, h in down)} and the network, then run again"


def _explain(settings: TopnSettings, service: str, url: str, settings_hint: str, error: Exception) -> AccessError:
    if isinstance(error, ServiceRequestError):
        return AccessError(unreachable(settings))
    status = getattr(error, "status_code", None)
    code = getattr(getattr(error, "error", None), "code", None) or getattr(error, "error_code", None) or ""
    return AccessError(f"{service} at {url} refused the credentials ({status} {code}): check {settings_hint}")


@task(
    name="check-access",
    task_run_name="check-access",
    **{**AZURE_TASK, "retries": 2, "tags": ["azure-batch", "azure-storage"]},
)
def check_access(settings: TopnSettings) -> None:
    """One cheap authenticated read each from Batch (list_pools) and Storage (list_containers)."""
    probes = [
        ("Azure Batch", settings.batch_url, "TOPN_BATCH_ENDPOINT, TOPN_BATCH_ACCOUNT_NAME and TOPN_BATCH_ACCOUNT_KEY",
         lambda: batch_client(settings).list_pools(max_results=1, select=["id"])),
        ("Azure Storage", settings.blob_url, "TOPN_STORAGE_ACCOUNT_NAME and TOPN_STORAGE_ACCOUNT_KEY",
         lambda: blob_service(settings).list_containers(results_per_page=1)),
    ]  # fmt: skip
    for service, url, hint, first_page in probes:
        try:
            next(iter(first_page()), None)
        except (ClientAuthenticationError, HttpResponseError, ServiceRequestError) as e:
            if isinstance(e, HttpResponseError) and (e.status_code or 0) >= 500:
                raise  # transient: retried
            raise _explain(settings, service, url, hint, e) from None
