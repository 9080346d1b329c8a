"""Microsoft Entra ID bearer tokens, checked as the Batch service does short of the signature.

A token must be a JWT (three base64url parts) whose claims say it was issued by Entra ID
(`iss` https://sts.windows.net/<tenant>/ or https://login.microsoftonline.com/<tenant>/v2.0) for the
Batch resource (`aud` exactly https://batch.core.windows.net/, with the slash: the service refuses the
form without it) and is within its lifetime (`nbf` <= now < `exp`, five minutes of clock skew allowed).
The signature is NOT verified: the emulator has no access to Entra's signing keys, and any token
with the right claims is accepted. A refused token gets 401 AuthenticationFailed, an
AuthenticationErrorDetail saying why (never the token itself) and a `WWW-Authenticate: Bearer` challenge.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from batch_emulator.errors import BatchError

BATCH_AUDIENCE = "https://batch.core.windows.net/"
CLOCK_SKEW = timedelta(minutes=5)  # Microsoft.IdentityModel's default allowance
AUTHORIZATION_URI = "https://login.microsoftonline.com/common/oauth2/authorize"
_ISSUERS = (
    re.compile(r"https://sts\.windows\.net/[^/\s]+/"),
    re.compile(r"https://login\.microsoftonline\.com/[^/\s]+/v2\.0"),
)


class TokenError(BatchError):
    """A refused bearer token: the error, and the challenge header the answer carries."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            401,
            "AuthenticationFailed",
            "Server failed to authenticate the request. "
            "Make sure the value of Authorization header is formed correctly.",
            AuthenticationErrorDetail=detail,
        )
        description = detail.replace("\\", "").replace('"', "'")
        self.headers = {
            "WWW-Authenticate": f'Bearer authorization_uri="{AUTHORIZATION_URI}", error="invalid_token", '
            f'error_description="{description}"'
        }


def _b64json(part: str, what: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenError(f"The access token is not a well-formed JWT: its {what} is not base64url JSON.") from None
    if not isinstance(value, dict):
        raise TokenError(f"The access token is not a well-formed JWT: its {what} is not a JSON object.")
    return value


def claims(token: str) -> dict:
    """The claims of a JWT, checked for shape only: header.payload.signature."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise TokenError(
            "The access token is not a well-formed JWT: expected three base64url parts (header.payload.signature)."
        )
    _b64json(parts[0], "header")
    return _b64json(parts[1], "payload")


def _time(payload: Mapping, name: str) -> datetime | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenError(f"The access token's '{name}' claim is not a number of seconds since the epoch.")
    return datetime.fromtimestamp(value, UTC)


def check(token: str, now: datetime) -> dict:
    """The claims of an acceptable token, else a TokenError saying what is wrong with it."""
    payload = claims(token)
    audiences = payload.get("aud")
    audiences = audiences if isinstance(audiences, list) else [audiences]
    if BATCH_AUDIENCE not in audiences:
        shown = ", ".join(repr(a) for a in audiences if isinstance(a, str)) or "none"
        raise TokenError(
            f"The access token has been obtained from wrong audience or resource {shown}. It should exactly "
            f"match (including forward slash) with one of the allowed audiences '{BATCH_AUDIENCE}'."
        )
    issuer = payload.get("iss")
    if not isinstance(issuer, str) or not any(p.fullmatch(issuer) for p in _ISSUERS):
        raise TokenError(
            f"The access token's issuer {issuer!r} is not Microsoft Entra ID: expected "
            "'https://sts.windows.net/<tenant>/' or 'https://login.microsoftonline.com/<tenant>/v2.0'."
        )
    expires, not_before = _time(payload, "exp"), _time(payload, "nbf")
    if expires is None:
        raise TokenError("The access token has no 'exp' claim: its lifetime cannot be checked.")
    if now >= expires + CLOCK_SKEW:
        raise TokenError(
            f"Lifetime validation failed. The token is expired: it expired at {expires.isoformat()}, "
            f"the server time is {now.isoformat()}."
        )
    if not_before is not None and now < not_before - CLOCK_SKEW:
        raise TokenError(
            f"Lifetime validation failed. The token is not yet valid: its 'nbf' is {not_before.isoformat()}, "
            f"the server time is {now.isoformat()}."
        )
    return payload
