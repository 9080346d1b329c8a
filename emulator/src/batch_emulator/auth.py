"""Shared Key verification, exactly as both SDKs sign (docs/batch-wire.md 4.1-4.2),
and the request time check: Azure refuses a request dated more than 15 minutes from its clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs

from batch_emulator import tokens, wire
from batch_emulator.errors import BatchError

MAX_CLOCK_SKEW = timedelta(minutes=15)

_SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


def string_to_sign(
    method: str, path: str, query: str, headers: Mapping[str, str], account: str, doc_variant: bool = False
) -> str:
    """The SDKs' string-to-sign; `doc_variant` lower-cases query names and joins repeated values,
    as the published REST description says."""
    lowered = {k.lower(): v for k, v in headers.items() if v}
    if method not in ("GET", "HEAD") and "content-length" not in lowered:
        lowered["content-length"] = "0"
    parts = [method.upper()] + [lowered.get(h, "") for h in _SIGNED_HEADERS]
    ocp = sorted((k, v) for k, v in lowered.items() if "ocp-" in k)
    text = "\n".join(parts) + "\n" + "".join(f"{k}:{v}\n" for k, v in ocp) + f"/{account}{path}"
    params = parse_qs(query)
    if doc_variant:
        merged: dict[str, list[str]] = {}
        for name, values in params.items():
            merged.setdefault(name.lower(), []).extend(values)
        return text + "".join(f"\n{n}:{','.join(sorted(merged[n]))}" for n in sorted(merged))
    return text + "".join(f"\n{n}:{params[n][0]}" for n in sorted(params))


def sign(key: str, text: str) -> str:
    digest = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class SharedKeyAuth:
    """Checks the Authorization header and the request time of a request against one account."""

    def __init__(
        self,
        account: str,
        key: str,
        accept_bearer: bool = False,
        now: Callable[[], datetime] = wire.now,
        entra: bool = False,
        shared_key: bool = True,
    ) -> None:
        """`accept_bearer`: any bearer token, unchecked; `entra`: Entra ID tokens, their claims checked
        (tokens.check); `shared_key=False`: Shared Key refused, as on an account whose
        allowedAuthenticationModes lacks SharedKey."""
        self.account, self._key, self._accept_bearer, self._now = account, key, accept_bearer, now
        self._entra, self._shared_key = entra, shared_key

    def check(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> None:
        header = headers.get("Authorization") or headers.get("authorization") or ""
        scheme, _, credential = header.partition(" ")
        if scheme == "Bearer" and self._entra:
            if not credential.strip():
                raise tokens.TokenError("The Authorization header is missing the access token.")
            tokens.check(credential.strip(), self._now())
            if _date_header(headers) is not None:
                self.check_time(headers)
            return
        if scheme == "Bearer" and credential:
            if not self._accept_bearer:
                raise failed("Bearer tokens are not accepted: start the emulator with --entra or --accept-bearer.")
            if _date_header(headers) is not None:  # the SDKs send none with a token; one that is sent must be right
                self.check_time(headers)
            return
        if not header and self._entra:  # the same 401 AuthenticationFailed, with a Bearer challenge
            raise tokens.TokenError("The request has no Authorization header: an Entra ID bearer token is required.")
        if scheme == "SharedKey" and not self._shared_key:
            raise failed("The specified type of authentication SharedKey is not allowed for this account.")
        if scheme != "SharedKey" or ":" not in credential:
            raise BatchError(
                401 if not header else 400,
                "InvalidAuthenticationInfo" if header else "AuthenticationFailed",
                "The Authorization header is missing or malformed: expected 'SharedKey <account>:<signature>'.",
            )
        account, _, signature = credential.partition(":")
        if account != self.account:
            raise failed(f"Unknown account {account!r}: this emulator serves {self.account!r}.")
        self.check_time(headers)
        for doc_variant in (False, True):
            expected = sign(self._key, string_to_sign(method, path, query, headers, account, doc_variant))
            if hmac.compare_digest(expected, signature):
                return
        raise failed(
            "The MAC signature found in the HTTP request is not the same as any computed signature: "
            "check the account key."
        )

    def check_admin(self, method: str, path: str, query: str, headers: Mapping[str, str], action: str) -> None:
        """An admin request that changes state (admin.py) must carry the account's Shared Key signature,
        whatever else the account accepts: no bearer token opens it. 403 AuthenticationFailed otherwise,
        naming the `action` refused."""
        header = headers.get("Authorization") or headers.get("authorization") or ""
        if not header.startswith("SharedKey ") or ":" not in header:
            raise failed(f"{action} needs the account's Shared Key signature.")
        self.check(method, path, query, headers)

    def check_time(self, headers: Mapping[str, str]) -> None:
        """The signed `ocp-date` (both SDKs send it), else `Date`, must be within 15 minutes of our clock:
        a captured request cannot be replayed later."""
        found = _date_header(headers)
        if found is None:
            raise failed("The request has no ocp-date or Date header: its time cannot be checked.")
        name, value = found
        try:
            stamp = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            stamp = None
        if stamp is None:
            raise failed(f"The {name} header {value!r} is not an RFC 1123 date.")
        now = self._now()
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        if abs(now - stamp) > MAX_CLOCK_SKEW:
            raise failed(
                f"The request time ({name}: {value}) is too {'old' if stamp < now else 'far in the future'}: "
                f"it is outside the allowed skew of {MAX_CLOCK_SKEW.seconds // 60} minutes from the server "
                f"time ({wire.rfc1123(now)})."
            )


def _date_header(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(name, value) of the request time header: `ocp-date` wins over `Date`, as the REST docs say."""
    lowered = {k.lower(): v for k, v in headers.items() if v}
    for name in ("ocp-date", "date"):
        if name in lowered:
            return name, lowered[name]
    return None


def failed(detail: str) -> BatchError:
    return BatchError(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of "
        "Authorization header is formed correctly including the signature.",
        AuthenticationErrorDetail=detail,
    )
