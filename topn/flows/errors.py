"""One clear line for every way a run can fail that is not a bug: what went wrong and what to do."""

from __future__ import annotations

import errno

from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from topn.tasks import entra
from topn.tasks.preflight import unreachable
from topn.tasks.quotas import code_of
from topn.tasks.sas import redact
from topn.tasks.settings import TopnSettings


def explain(error: BaseException, settings: TopnSettings | None) -> str | None:
    """The one line to print for `error`, or None when it is a bug (whose traceback must be seen)."""
    if isinstance(error, ServiceRequestError | ServiceResponseError | ConnectionError) and settings:
        return unreachable(settings)
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
        return f"a path is longer than this system allows ({error.filename!r}): use shorter folder or file names"
    if settings and settings.use_entra_id and (said := _entra(error, settings)):
        return redact(said)
    if isinstance(error, HttpResponseError):
        code = code_of(error)
        first = (str(error.message or error).splitlines() or [""])[0]
        return redact(f"Azure answered {error.status_code} {code}: {first}")
    return None


def _entra(error: BaseException, settings: TopnSettings) -> str | None:
    """With Entra ID: no token to be had, a token refused, or a role missing."""
    if isinstance(error, entra.NoToken):
        return entra.no_token(error)
    if not isinstance(error, HttpResponseError) or error.status_code not in (401, 403):
        return None
    if hasattr(error, "error_code"):  # the Storage SDK's errors carry it, Batch's do not
        return entra.refused(error, "Azure Storage", settings.blob_url, entra.STORAGE_ROLE)
    return entra.refused(error, "Azure Batch", settings.batch_url, entra.BATCH_ROLE)
