"""Shared access signatures, least privilege and expiring; and keeping them out of anything printed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    UserDelegationKey,
    generate_blob_sas,
    generate_container_sas,
)

from topn.tasks.settings import DELEGATION_SAS_MAX, AzureConnection

_SIGNATURE = re.compile(r"(?i)(sig=)[^&\s'\"]+")


def redact(text: str) -> str:
    """`text` with every SAS signature replaced, safe for logs, errors and artifacts."""
    return _SIGNATURE.sub(r"\1REDACTED", text)


class SasIssuer:
    """Issues SAS URLs that expire at one moment, signed by the account key, or with Entra ID by a user
    delegation key (Get User Delegation Key) valid until that moment."""

    def __init__(self, settings: AzureConnection, service: BlobServiceClient, expiry: datetime) -> None:
        self._account, self._key = settings.storage_account
        self._base = settings.blob_url
        self.expiry = expiry
        self._service = service if settings.use_entra_id else None
        self._delegation = self._delegation_key() if self._service else None

    def _delegation_key(self) -> UserDelegationKey:
        assert self._service is not None
        start = datetime.now(UTC) - timedelta(minutes=5)  # Storage's clock may be behind ours
        return self._service.get_user_delegation_key(start, self.expiry)

    @classmethod
    def for_lifetime(cls, issuer: SasIssuer, lifetime: timedelta) -> SasIssuer:
        """The same signer with another expiry. A user delegation key lives 7 days at most, so with Entra ID
        the lifetime is capped to that, and signed by a key of its own."""
        twin = object.__new__(cls)
        twin.__dict__.update(issuer.__dict__)
        if issuer._service:
            lifetime = min(lifetime, DELEGATION_SAS_MAX)
        twin.expiry = datetime.now(UTC) + lifetime
        if issuer._service:
            twin._delegation = twin._delegation_key()
        return twin

    def __repr__(self) -> str:  # never the key: a SasIssuer is a task parameter
        signer = "a user delegation key" if self._delegation else "the account key"
        return f"SasIssuer(expiry={self.expiry.isoformat()}, signed with {signer})"

    def _signing(self) -> dict:
        if self._delegation:
            return {"user_delegation_key": self._delegation}
        return {"account_key": self._key}

    def blob_read(self, container: str, blob: str) -> str:
        """Read one blob, nothing else."""
        sas = generate_blob_sas(
            self._account,
            container,
            blob,
            permission=BlobSasPermissions(read=True),
            expiry=self.expiry,
            **self._signing(),
        )
        return f"{self._base}/{container}/{quote(blob, safe='/~')}?{sas}"

    def container(self, container: str, permission: str) -> str:
        """A container SAS: "cw" create and write only (outputs), "rl" read and list (gathering outputs)."""
        sas = generate_container_sas(
            self._account,
            container,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=self.expiry,
            **self._signing(),
        )
        return f"{self._base}/{container}?{sas}"
