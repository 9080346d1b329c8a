"""Checking access before anything is created: a bad key or endpoint fails the run at once, clearly."""

from __future__ import annotations

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from prefect import task

from tasks.clients import batch_client, blob_service
from tasks.retry import AZURE_TASK
from tasks.sas import redact
from tasks.settings import TopnSettings


class AccessError(RuntimeError):
    """Azure refused the credentials or could not be reached."""


def _explain(service: str, url: str, settings_hint: str, error: Exception) -> AccessError:
    if isinstance(error, ServiceRequestError):
        return AccessError(
            f"cannot reach {service} at {url}: {redact(str(error)).splitlines()[0]}; check {settings_hint}"
        )
    status = getattr(error, "status_code", None)
    code = getattr(getattr(error, "error", None), "code", None) or getattr(error, "error_code", None) or ""
    return AccessError(f"{service} at {url} refused the credentials ({status} {code}): check {settings_hint}")


@task(name="check-access", **{**AZURE_TASK, "retries": 2})
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
            raise _explain(service, url, hint, e) from None
