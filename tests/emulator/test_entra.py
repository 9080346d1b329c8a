"""Microsoft Entra ID bearer tokens over HTTPS: the SDK 15 client with a token credential, the claims the
emulator checks (audience, issuer, lifetime; never the signature) and Shared Key refused when disabled."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AccessToken, AzureNamedKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from batch_emulator.auth import SharedKeyAuth
from batch_emulator.errors import BatchError
from batch_emulator.server import Emulator, main
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.emulator.conftest import make_pool

TENANT = "72f988bf-0000-4000-8000-2d7cd011db47"
GOOD = {"aud": "https://batch.core.windows.net/", "iss": f"https://sts.windows.net/{TENANT}/"}


def jwt(claims: dict, lifetime: float = 3600, **header: str) -> str:
    """An unsigned-in-spirit JWT: the emulator reads the claims and never checks the (fake) signature."""
    now = int(time.time())
    body = {"iat": now, "nbf": now, "exp": now + lifetime, "oid": "00000000-0000-0000-0000-000000000001", **claims}
    body = {k: v for k, v in body.items() if v is not None}

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'typ': 'JWT', 'alg': 'RS256', **header})}.{part(body)}.ZmFrZS1zaWduYXR1cmU"


class FakeEntraCredential:
    """A TokenCredential minting tokens for whatever scope the SDK asks, as Entra would (aud = the resource)."""

    def __init__(self, lifetime: float = 3600, token: str | None = None, **claims: object) -> None:
        self.lifetime, self.token, self.claims, self.scopes = lifetime, token, claims, []

    def get_token(self, *scopes: str, **_kwargs: object) -> AccessToken:
        self.scopes.extend(scopes)
        resource = scopes[0].removesuffix("/.default")  # "https://batch.core.windows.net//.default"
        token = self.token or jwt({**GOOD, "aud": resource, **self.claims}, self.lifetime)
        return AccessToken(token, int(time.time()) + 3600)  # the SDK caches by this, not by the token's exp


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files, the key unencrypted PKCS8) in `folder`:
    the client's CA file is the cert."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def entra(tls: tuple[Path, Path]) -> Iterator[Emulator]:
    with Emulator(cert=tls[0], cert_key=tls[1], entra=True, shared_key=False, boot_seconds=0.05) as emu:
        yield emu


def client_for(emu: Emulator, ca: Path, credential: object) -> BatchClient:
    return BatchClient(emu.endpoint, credential, connection_verify=str(ca))


def raw(emu: Emulator, ca: Path, authorization: str | None) -> tuple[int, dict, dict]:
    """(status, headers, body) of GET /pools with this Authorization header, over verified TLS."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    req = urllib.request.Request(f"{emu.endpoint}/pools?api-version=2025-06-01", headers=headers)
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca)), timeout=10) as res:
            return res.status, dict(res.headers), json.loads(res.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_https_endpoint_and_token_flow(entra: Emulator, tls: tuple[Path, Path], uid: str) -> None:
    assert entra.endpoint.startswith("https://127.0.0.1:")
    credential = FakeEntraCredential()
    client = client_for(entra, tls[0], credential)
    make_pool(client, uid, nodes=0)
    assert client.get_pool(uid).id == uid
    assert uid in [p.id for p in client.list_pools()]
    assert credential.scopes and set(credential.scopes) == {"https://batch.core.windows.net//.default"}


def test_v2_issuer_and_audience_list_accepted(entra: Emulator, tls: tuple[Path, Path]) -> None:
    token = jwt(
        {"aud": ["x", "https://batch.core.windows.net/"], "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0"}
    )
    assert raw(entra, tls[0], f"Bearer {token}")[0] == 200


@pytest.mark.parametrize(
    ("claims", "lifetime", "detail"),
    [
        ({"aud": "https://management.azure.com/"}, 3600, "wrong audience"),
        ({"aud": "https://batch.core.windows.net"}, 3600, "including forward slash"),
        ({"aud": None}, 3600, "wrong audience"),
        ({"iss": "https://evil.example.com/"}, 3600, "not Microsoft Entra ID"),
        ({"iss": "https://sts.windows.net/"}, 3600, "not Microsoft Entra ID"),
        ({}, -3600, "The token is expired"),
        ({"exp": None}, 3600, "no 'exp' claim"),
        ({"nbf": int(time.time()) + 3600}, 7200, "not yet valid"),
    ],
)
def test_bad_token_refused(entra: Emulator, tls: tuple[Path, Path], claims: dict, lifetime: float, detail: str) -> None:
    token = jwt({**GOOD, **claims}, lifetime)
    status, headers, body = raw(entra, tls[0], f"Bearer {token}")
    assert (status, body["code"]) == (401, "AuthenticationFailed")
    values = {v["key"]: v["value"] for v in body["values"]}
    assert detail in values["AuthenticationErrorDetail"]
    assert token not in json.dumps(body) and token.split(".")[1] not in json.dumps(body)
    assert headers["WWW-Authenticate"].startswith('Bearer authorization_uri="https://login.microsoftonline.com/')
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        ("Bearer not-a-jwt", "three base64url parts"),
        ("Bearer a.b.c", "not base64url JSON"),
        (f"Bearer {base64.urlsafe_b64encode(b'[]').decode()}.{base64.urlsafe_b64encode(b'[1]').decode()}.x", "object"),
        ("Bearer ", "missing the access token"),
        (None, "no Authorization header"),
    ],
)
def test_malformed_or_missing_refused(
    entra: Emulator, tls: tuple[Path, Path], authorization: str | None, detail: str
) -> None:
    status, headers, body = raw(entra, tls[0], authorization)
    assert (status, body["code"]) == (401, "AuthenticationFailed")
    assert detail in {v["key"]: v["value"] for v in body["values"]}["AuthenticationErrorDetail"]
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]


def test_sdk_sees_401_for_a_bad_token(entra: Emulator, tls: tuple[Path, Path]) -> None:
    client = client_for(entra, tls[0], FakeEntraCredential(lifetime=-3600))
    with pytest.raises(ClientAuthenticationError) as e:
        list(client.list_pools())
    assert e.value.status_code == 401
    assert "AuthenticationFailed" in str(e.value)


def test_shared_key_refused_when_disabled(entra: Emulator, tls: tuple[Path, Path]) -> None:
    client = client_for(entra, tls[0], AzureNamedKeyCredential(entra.account, entra.key))
    with pytest.raises(HttpResponseError) as e:
        list(client.list_pools())
    assert e.value.status_code == 403
    assert "SharedKey is not allowed for this account" in str(e.value)


def test_untrusted_certificate_fails_on_the_client(entra: Emulator) -> None:
    client = BatchClient(entra.endpoint, FakeEntraCredential())  # the system CAs do not know our certificate
    with pytest.raises(ServiceRequestError):
        list(client.list_pools(retry_total=0))


def test_plain_http_unchanged(client: BatchClient, emulator: Emulator) -> None:
    assert emulator.endpoint.startswith("http://")
    list(client.list_pools())  # Shared Key, as before
    with pytest.raises(ServiceRequestError, match="https"):  # SDK 15 sends no token over plain http
        list(BatchClient(emulator.endpoint, FakeEntraCredential()).list_pools())


def test_entra_with_shared_key_allowed(tls: tuple[Path, Path]) -> None:
    with Emulator(cert=tls[0], cert_key=tls[1], entra=True, boot_seconds=0.05) as emu:
        list(client_for(emu, tls[0], AzureNamedKeyCredential(emu.account, emu.key)).list_pools())
        list(client_for(emu, tls[0], FakeEntraCredential()).list_pools())


def test_accept_bearer_keeps_its_meaning() -> None:
    now = dt.datetime.now(dt.UTC)
    SharedKeyAuth("a", "a2V5", accept_bearer=True, now=lambda: now).check(
        "GET", "/pools", "", {"Authorization": "Bearer x"}
    )
    with pytest.raises(BatchError) as e:  # with entra, the same token is checked
        SharedKeyAuth("a", "a2V5", entra=True, now=lambda: now).check(
            "GET", "/pools", "", {"Authorization": "Bearer x"}
        )
    assert e.value.status == 401


def test_clock_skew_allowance() -> None:
    now = dt.datetime.now(dt.UTC)
    auth = SharedKeyAuth("a", "a2V5", entra=True, now=lambda: now)
    auth.check("GET", "/pools", "", {"Authorization": f"Bearer {jwt(GOOD, lifetime=-240)}"})  # 4 min late: ok
    with pytest.raises(BatchError):
        auth.check("GET", "/pools", "", {"Authorization": f"Bearer {jwt(GOOD, lifetime=-360)}"})


def test_options_checked() -> None:
    with pytest.raises(ValueError, match="shared_key=False"):
        Emulator(shared_key=False)
    with pytest.raises(SystemExit):
        main(["--no-shared-key"])


def test_bad_certificate_file(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        Emulator(cert=tmp_path / "bad.pem")
    assert main(["--port", "0", "--cert", str(tmp_path / "missing.pem")]) == 1


def test_pool_shape(entra: Emulator, tls: tuple[Path, Path], uid: str) -> None:
    client = client_for(entra, tls[0], FakeEntraCredential())
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=uid,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=m.BatchVmImageReference(publisher="canonical", offer="ubuntu-24_04-lts", sku="server"),
                node_agent_sku_id="batch.node.ubuntu 24.04",
            ),
            target_dedicated_nodes=0,
        )
    )
    pool = client.get_pool(uid)
    assert pool.url.startswith(entra.endpoint + "/pools/")
