"""Shared Key verification, exactly as both SDKs sign (shared/spec/batch-wire-contract.md 4.1-4.2)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs

from batch_emulator.errors import BatchError

_SIGNED_HEADERS = (
    "content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
    "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range",
)  # fmt: skip


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
    """Checks the Authorization header of a request against one account."""

    def __init__(self, account: str, key: str, accept_bearer: bool = False) -> None:
        self.account, self._key, self._accept_bearer = account, key, accept_bearer

    def check(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> None:
        header = headers.get("Authorization") or headers.get("authorization") or ""
        scheme, _, credential = header.partition(" ")
        if scheme == "Bearer" and credential:
            if self._accept_bearer:
                return
            raise _failed("Bearer tokens are not accepted: start the emulator with --accept-bearer.")
        if scheme != "SharedKey" or ":" not in credential:
            raise BatchError(
                401 if not header else 400,
                "InvalidAuthenticationInfo" if header else "AuthenticationFailed",
                "The Authorization header is missing or malformed: expected 'SharedKey <account>:<signature>'.",
            )
        account, _, signature = credential.partition(":")
        if account != self.account:
            raise _failed(f"Unknown account {account!r}: this emulator serves {self.account!r}.")
        for doc_variant in (False, True):
            expected = sign(self._key, string_to_sign(method, path, query, headers, account, doc_variant))
            if hmac.compare_digest(expected, signature):
                return
        raise _failed(
            "The MAC signature found in the HTTP request is not the same as any computed signature: "
            "check the account key."
        )


def _failed(detail: str) -> BatchError:
    return BatchError(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of "
        "Authorization header is formed correctly including the signature.",
        AuthenticationErrorDetail=detail,
    )
