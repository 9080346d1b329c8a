"""Microsoft Entra ID: which credential topn uses, the local stack's development credential, and what to
tell the user when Entra ID or a service refuses."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import re
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from topn.tasks.settings import ENV_PREFIX, AzureConnection, SettingsError

BATCH_AUDIENCE = "https://batch.core.windows.net/"
STORAGE_AUDIENCE = "https://storage.azure.com"
BATCH_ROLE = "Azure Batch Data Contributor"  # or Contributor on the Batch account
STORAGE_ROLE = "Storage Blob Data Contributor"  # reads, writes and lists blobs; includes the delegator's action
DELEGATOR_ROLE = "Storage Blob Delegator"

# The local stack's own identity, like Azurite's well-known account: a made-up tenant and principal.
DEV_TENANT = "00000000-0000-4000-8000-000000000001"
DEV_PRINCIPAL = "00000000-0000-4000-8000-0000000000a1"


class LocalStackCredential:
    """Tokens for the local stack (`topn stack start --entra`): Entra ID's claims (issuer, audience = the
    resource asked for, lifetime, tenant, object id) and no valid signature. The local stack checks
    everything but the signature; Azure refuses them."""

    def __init__(self, lifetime: int = 3600) -> None:
        self.lifetime = lifetime

    def get_token(self, *scopes: str, **_options: Any) -> AccessToken:
        now = int(time.time())
        audience = scopes[0].removesuffix("/.default")  # as Entra ID: Batch's scope ends "//.default"
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{DEV_TENANT}/",
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "tid": DEV_TENANT,
            "oid": DEV_PRINCIPAL,
            "ver": "1.0",
        }
        token = ".".join(_b64(part) for part in ({"typ": "JWT", "alg": "none"}, claims)) + ".bm90LXNpZ25lZA"
        return AccessToken(token, now + self.lifetime)


def _b64(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def credential(settings: AzureConnection) -> TokenCredential:
    """TOPN_ENTRA_CREDENTIAL's credential if set; else the local stack's, or DefaultAzureCredential for Azure.
    One per process: credentials cache their tokens."""
    return _credential(settings.entra_credential, settings.local)


class NoToken(ClientAuthenticationError):
    """The credential itself got no token (as opposed to a service refusing one)."""


class _Guarded:
    """A credential whose every failure is a NoToken: azure-identity raises some with an HTTP response
    attached (Entra ID's, or the managed identity endpoint's), which must not pass for the service's."""

    def __init__(self, inner: TokenCredential) -> None:
        self.inner = inner

    def get_token(self, *scopes: str, **options: Any) -> AccessToken:
        try:
            return self.inner.get_token(*scopes, **options)
        except Exception as e:  # whatever it raised, the news is the same: no token, and the reason
            message = getattr(e, "message", None) or str(e) or type(e).__name__
            raise NoToken(message=str(message)) from None


class AsyncCredential:
    """A credential for the async clients, from a sync one: its token fetched in a thread (rarely: the
    clients cache a token until it nears its end), so the event loop never waits on it."""

    def __init__(self, inner: TokenCredential) -> None:
        self.inner = inner

    async def get_token(self, *scopes: str, **options: Any) -> AccessToken:
        return await asyncio.to_thread(self.inner.get_token, *scopes, **options)

    async def close(self) -> None:
        """The sync credential is shared by the process's clients: it stays open."""

    async def __aenter__(self) -> AsyncCredential:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None


@cache
def _credential(path: str | None, local: bool) -> TokenCredential:
    if path:
        return _Guarded(_load(path))
    if local:
        return _Guarded(LocalStackCredential())
    from azure.identity import DefaultAzureCredential

    return _Guarded(DefaultAzureCredential())


def _load(path: str) -> TokenCredential:
    """The credential `module:name` names: an instance, or a class or function called without arguments."""
    module_name, name = path.split(":")
    where = f"{ENV_PREFIX}ENTRA_CREDENTIAL={path}"
    try:
        found = getattr(importlib.import_module(module_name), name)
    except Exception as e:  # ImportError, AttributeError, or whatever the module raised while importing
        raise SettingsError(
            f"{where}: cannot load it ({e}); name a TokenCredential as module:name, "
            "e.g. azure.identity:AzureCliCredential"
        ) from None
    try:
        made = found() if isinstance(found, type) or not hasattr(found, "get_token") else found
    except Exception as e:  # a credential that cannot be made: say which and why, not a traceback
        raise SettingsError(f"{where}: making the credential failed: {type(e).__name__}: {e}") from None
    if not callable(getattr(made, "get_token", None)):
        raise SettingsError(f"{where}: {type(made).__name__} is not a TokenCredential (it has no get_token)")
    return made


# ---- what to say when Entra ID or a service refuses ------------------------------------------------------

_TRIED = re.compile(r"^\s*(\w+Credential):\s*(.*)$", re.M)
_HOW = {
    "EnvironmentCredential": "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or "
    "AZURE_CLIENT_CERTIFICATE_PATH) for a service principal",
    "WorkloadIdentityCredential": "workload identity (AZURE_FEDERATED_TOKEN_FILE, on Kubernetes)",
    "ManagedIdentityCredential": "a managed identity (on an Azure VM, container or function)",
    "AzureCliCredential": "`az login`",
    "AzureDeveloperCliCredential": "`azd auth login`",
    "AzurePowerShellCredential": "`Connect-AzAccount`",
}


_UNAVAILABLE = re.compile(r"unavailable|not installed|not found|could not be found|requires|no accounts", re.I)


def no_token(error: NoToken) -> str:
    """The credential got no token: what it tried and why each failed, and how to give it one."""
    message = str(error.message or error)
    tried = _TRIED.findall(message)
    if not tried:  # one credential (TOPN_ENTRA_CREDENTIAL), not the chain: its own first line says it all
        first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
        return f"no Microsoft Entra ID token: {first}"
    failed = [f"{name}: {reason.strip()[:300]}" for name, reason in tried if not _UNAVAILABLE.search(reason)]
    if failed:  # one was set up but did not work (a wrong secret, an expired login): that is the news
        return f"no Microsoft Entra ID token: {'; '.join(failed)}"
    ways = [_HOW[name] for name, _ in tried if name in _HOW]
    return (
        f"no Microsoft Entra ID credential found: DefaultAzureCredential tried {', '.join(n for n, _ in tried)}, "
        f"and none was set up. Give it one: {'; or '.join(ways)}. Or name a credential in "
        f"{ENV_PREFIX}ENTRA_CREDENTIAL"
    )


def refused(error: HttpResponseError, service: str, url: str, role: str) -> str | None:
    """What a 401/403 from Batch or Storage means with Entra ID (a bad token; a missing `role`), or None."""
    code = _code(error)
    detail = _detail(error)
    audience = BATCH_AUDIENCE if service == "Azure Batch" else STORAGE_AUDIENCE
    if error.status_code == 401 or code in ("AuthenticationFailed", "InvalidAuthenticationInfo"):
        return (
            f"{service} at {url} refused the Entra ID token ({error.status_code} {code}"
            f"{': ' + detail if detail else ''}): it must be a token from your tenant for {audience}, "
            f"not expired; check {ENV_PREFIX}ENTRA_CREDENTIAL (or the identity DefaultAzureCredential found)"
        )
    if error.status_code == 403:
        scope = "Batch account" if service == "Azure Batch" else "storage account"
        also = f" (or {STORAGE_ROLE}, which includes it)" if role == DELEGATOR_ROLE else ""
        grant = f"grant it {role}{also} on the {scope}, then run again (a new role assignment takes a few minutes)"
        if code == "AuthorizationPermissionMismatch":  # Storage: authenticated, but no role allows it
            return f"{service} at {url} refused the request (403 {code}): the identity has no role allowing it: {grant}"
        # Batch's AuthorizationFailure, and Storage's, mean a missing role or the account's network rules.
        return (
            f"{service} at {url} refused the request (403 {code}): the identity has no role allowing it, or "
            f"the account's network rules (firewall, private endpoints) refuse this machine: {grant}, or "
            "allow this network"
        )
    return None


def _code(error: HttpResponseError) -> str:
    code = getattr(error, "error_code", None) or getattr(getattr(error, "error", None), "code", None) or ""
    return str(getattr(code, "value", code))


def _detail(error: HttpResponseError) -> str:
    """The service's reason for refusing a token: Batch's AuthenticationErrorDetail, Storage's detail line."""
    model = getattr(error, "model", None)  # Batch's OData error: {"code", "message", "values": [{"key", "value"}]}
    for item in (model.get("values") if isinstance(model, Mapping) else None) or []:
        if isinstance(item, Mapping) and str(item.get("key", "")).lower() == "authenticationerrordetail":
            return str(item.get("value", ""))[:300]
    found = re.search(r"(?im)^authenticationerrordetail:\s*(.+)$", str(error.message or ""))
    return found.group(1).strip()[:200] if found else ""
