"""Checking access before anything is created: a bad key or endpoint fails the run at once, clearly."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from urllib.parse import urlsplit

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

from topn.tasks import entra
from topn.tasks.clients import batch_client, blob_service
from topn.tasks.policy import task_options
from topn.tasks.settings import AzureConnection
from topn.tasks.tags import service_task


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


def unreachable(settings: AzureConnection) -> str:
    """Which service does not answer, and how to bring it back."""
    down = [
        (name, url, hint)
        for name, url, hint in (
            ("the Batch emulator" if settings.local else "Azure Batch", settings.batch_url, "TOPN_BATCH_ENDPOINT"),
            ("Azurite" if settings.local else "Azure Storage", settings.blob_url, "TOPN_STORAGE_BLOB_ENDPOINT"),
        )
        if not _answers(url)
    ]
    if not down:
        return "lost the connection to Azure Batch or Storage and could not finish: run the same command again"
    names = " and ".join(f"{name} at {url}" for name, url, _ in down)
    if settings.local:
        return f"{names} did not answer: start the local stack with `topn stack start`, then run again"
    local = any(url.startswith(("http://127.0.0.1:", "http://localhost:")) for _, url, _ in down)
    hint = " (the local stack: `topn stack start`)" if local else ""
    return f"{names} did not answer{hint}: check {', '.join(h for _, _, h in down)} and the network, then run again"


class _Probe(NamedTuple):
    service: str
    url: str
    hint: str  # the settings to check when the credentials are refused
    role: str  # the role to grant when an Entra ID identity is refused
    first_page: Callable[[], Iterable]  # a call whose first answer proves access


def _explain(settings: AzureConnection, probe: _Probe, error: Exception) -> AccessError:
    if isinstance(error, ServiceRequestError):
        return AccessError(unreachable(settings))
    if settings.use_entra_id:
        if isinstance(error, entra.NoToken):  # the credential's own failure
            return AccessError(entra.no_token(error))
        said = isinstance(error, HttpResponseError) and entra.refused(error, probe.service, probe.url, probe.role)
        if said:
            return AccessError(said)
    status = getattr(error, "status_code", None)
    code = getattr(getattr(error, "error", None), "code", None) or getattr(error, "error_code", None) or ""
    return AccessError(f"{probe.service} at {probe.url} refused the credentials ({status} {code}): check {probe.hint}")


def _probes(settings: AzureConnection) -> list[_Probe]:
    keys = not settings.use_entra_id
    batch_hint = "TOPN_BATCH_ENDPOINT" + (", TOPN_BATCH_ACCOUNT_NAME and TOPN_BATCH_ACCOUNT_KEY" if keys else "")
    blob_hint = "TOPN_STORAGE_ACCOUNT_NAME" + (" and TOPN_STORAGE_ACCOUNT_KEY" if keys else "")
    probes = [
        _Probe(
            "Azure Batch",
            settings.batch_url,
            batch_hint,
            entra.BATCH_ROLE,
            lambda: batch_client(settings).list_pools(max_results=1, select=["id"]),
        ),
        _Probe(
            "Azure Storage",
            settings.blob_url,
            blob_hint,
            entra.STORAGE_ROLE,
            lambda: blob_service(settings).list_containers(results_per_page=1),
        ),
    ]
    if settings.use_entra_id:  # the nodes' access is signed by a user delegation key: its role, checked now
        now = datetime.now(UTC)
        key = lambda: [blob_service(settings).get_user_delegation_key(now, now + timedelta(minutes=5))]  # noqa: E731
        probes.append(_Probe("Azure Storage", settings.blob_url, blob_hint, entra.DELEGATOR_ROLE, key))
    return probes


@service_task(
    name="check-access",
    task_run_name="check-access",
    **task_options("azure-batch", "azure-storage"),
)
def check_access(settings: AzureConnection) -> None:
    """One cheap authenticated read each from Batch (list_pools) and Storage (list_containers); with Entra
    ID, a short user delegation key too (get_user_delegation_key), as the run signs the nodes' access so."""
    for probe in _probes(settings):
        try:
            next(iter(probe.first_page()), None)
        except (ClientAuthenticationError, HttpResponseError, ServiceRequestError) as e:
            if isinstance(e, HttpResponseError) and (e.status_code or 0) >= 500:
                raise  # transient: retried
            raise _explain(settings, probe, e) from None
