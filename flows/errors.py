"""One clear line for every way a run can fail that is not a bug: what went wrong and what to do."""

from __future__ import annotations

import errno

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from tasks.preflight import unreachable
from tasks.sas import redact
from tasks.settings import TopnSettings


def explain(error: BaseException, settings: TopnSettings | None) -> str | None:
    """The one line to print for `error`, or None when it is a bug (whose traceback must be seen)."""
    if isinstance(error, ServiceRequestError | ServiceResponseError | ConnectionError) and settings:
        return unreachable(settings)
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
        return f"a path is longer than this system allows ({error.filename!r}): use shorter folder or file names"
    if isinstance(error, HttpResponseError):
        code = getattr(getattr(error, "error", None), "code", None) or ""
        first = (str(error.message or error).splitlines() or [""])[0]
        return redact(f"Azure answered {error.status_code} {code}: {first}")
    return None
