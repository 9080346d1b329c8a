"""The flow on Microsoft Entra ID only, on the local stack as `topn stack start --entra` runs it: HTTPS, bearer
tokens for Batch and Storage, user delegation SAS for the nodes, Shared Key refused; and the errors users
meet: no credential, a token for the wrong audience or expired, a principal without the role."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobServiceClient
from batch_emulator import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

from tests.conftest import SAMPLE
from tests.faults import FaultProxy
from tests.flow.test_pools import sas_expiry, set_topn, sign_start_task_until
from tests.stack import free_port
from topn.flows.local_stack import azurite_up, ensure_local_stack, stop_local_stack
from topn.flows.topn import topn
from topn.tasks import puts
from topn.tasks.clients import AZURITE_API_VERSION, batch_client, blob_service
from topn.tasks.entra import LocalStackCredential
from topn.tasks.preflight import AccessError
from topn.tasks.settings import AZURITE_ACCOUNT, AZURITE_KEY, TopnSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]


class WrongAudience(LocalStackCredential):
    """Tokens for Azure Resource Manager, whatever is asked: a credential set up for the wrong resource."""

    def get_token(self, *scopes: str, **options: object):
        return super().get_token("https://management.azure.com/.default", **options)


class WrongStorageAudience(LocalStackCredential):
    """Right for Batch, wrong for Storage: the Storage SDK's error path."""

    def get_token(self, *scopes: str, **options: object):
        storage = scopes[0].startswith("https://storage.")
        return super().get_token("https://management.azure.com/.default" if storage else scopes[0], **options)


def expired() -> LocalStackCredential:
    return LocalStackCredential(lifetime=-900)  # ended 15 minutes ago, beyond any clock-skew allowance


@pytest.fixture(scope="module")
def entra(stack_env: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TopnSettings]:
    """The local stack in Entra ID mode, started by topn itself, and TOPN_* settings for it."""
    env = {
        "TOPN_USE_ENTRA_ID": "true",
        "TOPN_LOCAL_DIR": str(tmp_path_factory.mktemp("entra")),
        "TOPN_LOCAL_BLOB_PORT": str(free_port()),
        "TOPN_LOCAL_BATCH_PORT": str(free_port()),
        "TOPN_POOL_ID": "topn-entra",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings = load_settings()
        try:
            assert ensure_local_stack(settings) == ["azurite", "batch-emulator"]
            yield settings
        finally:
            stop_local_stack(settings, grace=10)


def _sas_urls(client: BatchClient, job_id: str, pool_id: str) -> list[str]:
    urls = []
    for task in client.list_tasks(job_id):
        urls += [f.http_url for f in task.resource_files or [] if f.http_url]
        urls += [f.storage_container_url for f in task.resource_files or [] if f.storage_container_url]
        urls += [o.destination.container.container_url for o in task.output_files or []]
    start = client.get_pool(pool_id).start_task
    return urls + [f.http_url for f in start.resource_files]


def test_sample_corpus_with_entra_id_only(entra: TopnSettings) -> None:
    result = topn(paths=[str(SAMPLE)], top=5, delete_job=False)
    assert (result.files_counted, result.words, result.distinct) == (11, 196715, 12630)
    assert result.top == [("the", 12495), ("and", 6396), ("of", 5858), ("to", 4678), ("a", 4111)]

    assert entra.batch_url.startswith("https://") and entra.blob_url.startswith("https://")
    assert entra.batch_account[1] == entra.storage_account[1] == ""  # no key anywhere in the settings
    client = batch_client(entra)
    urls = _sas_urls(client, result.stats.job_id, result.stats.pool_id)
    assert len(urls) > 3
    for url in urls:  # inputs, outputs and the start task: all signed by a user delegation key
        query = parse_qs(urlsplit(url).query)
        assert query["skoid"] and query["sktid"] and query["skv"], url.split("?")[0]
        assert sas_expiry(url) <= datetime.now(UTC) + timedelta(days=7)  # a delegation key's longest life
    client.begin_delete_job(result.stats.job_id, polling_interval=0.2).result()

    # Shared Key is refused by both services: the well-known development keys no longer open anything.
    keyed_blob = BlobServiceClient(entra.blob_url, credential={"account_name": AZURITE_ACCOUNT,
                                   "account_key": AZURITE_KEY}, connection_verify=entra.ca_file,
                                   api_version=AZURITE_API_VERSION, retry_total=0)  # fmt: skip
    with pytest.raises(ClientAuthenticationError) as refused:
        next(iter(keyed_blob.list_containers()))
    assert refused.value.status_code == 400  # Azurite in OAuth mode: InvalidAuthenticationInfo (Azure: 403)
    keyed_batch = BatchClient(entra.batch_url, AzureNamedKeyCredential(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY),
                              connection_verify=entra.ca_file)  # fmt: skip
    with pytest.raises(HttpResponseError) as refused:
        next(iter(keyed_batch.list_pools()))
    assert refused.value.status_code == 403


def test_start_task_access_is_renewed_in_place(entra: TopnSettings) -> None:
    """A pool outlives a user delegation key (7 days): the run renews the start task's SAS in the pool
    (update_pool) instead of replacing the pool and its nodes."""
    topn(paths=[str(SAMPLE)], top=1)  # the pool exists
    client = batch_client(entra)
    pool = client.get_pool(entra.pool_id)
    nodes = sorted(n.id for n in client.list_nodes(pool.id))
    # As if the pool was made 6 days and 23 hours ago: its start task's access ends within the hour.
    sign_start_task_until(client, entra, pool.id, datetime.now(UTC) + timedelta(hours=1))

    result = topn(paths=[str(SAMPLE)], top=2, run_id="entra-renew")
    assert result.top == [("the", 12495), ("and", 6396)]
    renewed = client.get_pool(pool.id)
    expiries = [sas_expiry(f.http_url) for f in renewed.start_task.resource_files]
    assert all(timedelta(days=6) < e - datetime.now(UTC) <= timedelta(days=7) for e in expiries)
    assert sorted(n.id for n in client.list_nodes(pool.id)) == nodes  # the same nodes: nothing replaced


@pytest.mark.parametrize(
    ("credential", "said"),
    [
        ("WrongAudience", "Azure Batch at https://127.0.0.1:{batch} refused the Entra ID token (401 "
         "AuthenticationFailed: The access token has been obtained from wrong audience or resource "
         "'https://management.azure.com'"),
        ("WrongStorageAudience", "Azure Storage at https://127.0.0.1:{blob}/devstoreaccount1 refused the Entra ID "
         "token (403 AuthenticationFailed: Invalid token audience.): it must be a token from your tenant for "
         "https://storage.azure.com"),
        ("expired", "Azure Batch at https://127.0.0.1:{batch} refused the Entra ID token (401 AuthenticationFailed: "
         "Lifetime validation failed. The token is expired"),
    ],
)  # fmt: skip
def test_a_token_the_services_refuse_is_named(
    entra: TopnSettings, monkeypatch: pytest.MonkeyPatch, credential: str, said: str
) -> None:
    monkeypatch.setenv("TOPN_ENTRA_CREDENTIAL", f"{__name__}:{credential}")
    with pytest.raises(AccessError) as refused:
        topn(paths=[str(SAMPLE)], top=1)
    message = str(refused.value)
    assert message.startswith(said.format(batch=entra.local_batch_port, blob=entra.local_blob_port)), message
    assert "check TOPN_ENTRA_CREDENTIAL" in message


def test_no_credential_found_says_what_was_tried(entra: TopnSettings, tmp_path: Path) -> None:
    """As a user sees it: `topn run` against Azure-like endpoints (not the local stack, so
    DefaultAzureCredential) with no sign-in of any kind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "TOPN_", "IDENTITY_", "MSI_"))}
    env.update({
        "TOPN_USE_ENTRA_ID": "true", "TOPN_BATCH_ENDPOINT": entra.batch_url,
        "TOPN_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT, "TOPN_STORAGE_BLOB_ENDPOINT": entra.blob_url,
        "REQUESTS_CA_BUNDLE": entra.ca_file, "TOPN_LOCAL_DIR": str(tmp_path), "HOME": str(tmp_path),
        "PATH": str(Path(sys.executable).parent),  # no az, azd or pwsh
        # Managed identity's endpoint, moved to a closed loopback port: no request leaves this machine.
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": f"http://127.0.0.1:{free_port()}",
    })  # fmt: skip
    ran = subprocess.run([str(Path(sys.executable).with_name("topn")), "run", str(SAMPLE)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ran.returncode == 1, ran.stderr
    said = [line for line in ran.stderr.splitlines() if line.startswith("topn: ")]
    assert len(said) == 1, ran.stderr  # one line from topn; Prefect's own lines around it are timestamped
    message = said[0]
    assert message.startswith(
        "topn: no Microsoft Entra ID credential found: DefaultAzureCredential tried EnvironmentCredential, "
    ), message
    for hint in ("AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET", "`az login`", "TOPN_ENTRA_CREDENTIAL"):
        assert hint in message
    assert "Traceback" not in ran.stderr and "Attempted credentials" not in ran.stderr


@contextlib.contextmanager
def _as_azure_behind_a_proxy(
    entra: TopnSettings, monkeypatch: pytest.MonkeyPatch, answer: Callable[[str, str], tuple[int, str, str] | None]
) -> Iterator[FaultProxy]:
    """Settings as for Azure (endpoints, an account name, Entra ID) that reach the local stack through
    proxies answering `answer`'s refusals, as Azure answers a principal without a role; yields Storage's."""
    tls = entra.local_tls
    with (FaultProxy(entra.local_batch_port, 0, 1, tls=tls, answer=answer) as batch,
          FaultProxy(entra.local_blob_port, 0, 1, tls=tls, answer=answer) as blob):  # fmt: skip
        monkeypatch.setenv("TOPN_BATCH_ENDPOINT", f"https://127.0.0.1:{batch.port}")
        monkeypatch.setenv("TOPN_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT)
        monkeypatch.setenv("TOPN_STORAGE_BLOB_ENDPOINT", f"https://127.0.0.1:{blob.port}/{AZURITE_ACCOUNT}")
        monkeypatch.setenv("TOPN_ENTRA_CREDENTIAL", "topn.tasks.entra:LocalStackCredential")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[0]))  # Azure-like settings trust the system's CAs
        yield blob


def test_small_files_go_up_signed_by_a_user_delegation_key(
    entra: TopnSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With Entra ID the one PUT of a small file carries a user delegation SAS, not a token: one request each
    (the key itself is one more, a POST with the token)."""
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"f{i}.txt")
        paths[-1].write_text(f"file {i}")
    with _as_azure_behind_a_proxy(entra, monkeypatch, lambda method, path: None) as blob:
        settings = load_settings()
        container = f"entra-puts-{os.urandom(4).hex()}"
        blob_service(settings).create_container(container)
        blob.reset_counts()
        puts.put_files(settings, container, [str(p) for p in paths], lambda i, _: f"blob-{i}")
        assert (blob.requests, blob.sas_signed) == (6, 5)
        stored = blob_service(settings).get_container_client(container)
        assert stored.download_blob("blob-4").readall() == b"file 4"


BATCH_FORBIDDEN = (403, "AuthorizationFailure", "This request is not authorized to perform this operation.")
STORAGE_FORBIDDEN = (403, "AuthorizationPermissionMismatch",
                     "This request is not authorized to perform this operation using this permission.")  # fmt: skip


@pytest.mark.parametrize(
    ("refuse", "role"),
    [
        ({("GET", "/pools")}, "grant it Azure Batch Data Contributor on the Batch account"),
        ({("GET", "/devstoreaccount1")}, "grant it Storage Blob Data Contributor on the storage account"),
        ({("POST", "/devstoreaccount1")}, "grant it Storage Blob Delegator (or Storage Blob Data Contributor, "
                                           "which includes it) on the storage account"),
    ],
)  # fmt: skip
def test_a_principal_without_the_role_is_told_which_to_grant(
    entra: TopnSettings, monkeypatch: pytest.MonkeyPatch, refuse: set, role: str
) -> None:
    """Azure answers 403 to a principal without a role (Batch: AuthorizationFailure; Storage:
    AuthorizationPermissionMismatch); the local stack checks no roles, so a proxy on the wire answers so."""

    def forbid(method: str, path: str) -> tuple[int, str, str] | None:
        if (method, path.rstrip("/")) not in refuse:
            return None
        return BATCH_FORBIDDEN if path == "/pools" else STORAGE_FORBIDDEN

    with _as_azure_behind_a_proxy(entra, monkeypatch, forbid), pytest.raises(AccessError) as refused:
        topn(paths=[str(SAMPLE)], top=1)
    message = str(refused.value)
    assert "refused the request (403 " in message and role in message, message


def test_entra_settings_mistakes_are_told_before_anything_starts(entra: TopnSettings) -> None:
    from topn.tasks.entra import credential
    from topn.tasks.settings import SettingsError

    with pytest.raises(SettingsError, match="TOPN_STORAGE_ACCOUNT_KEY: not used with TOPN_USE_ENTRA_ID=true"):
        load_settings(storage_account_name="acct", batch_endpoint="https://b", storage_account_key=AZURITE_KEY)
    with pytest.raises(SettingsError, match="user delegation key valid 7 days at most"):
        load_settings(job_timeout=timedelta(days=7))
    with pytest.raises(SettingsError, match="TOPN_ENTRA_CREDENTIAL: String should match pattern"):
        load_settings(entra_credential="not a path")
    with pytest.raises(SettingsError, match=r"TOPN_ENTRA_CREDENTIAL=nowhere\.at_all:Cred: cannot load it"):
        credential(load_settings(entra_credential="nowhere.at_all:Cred"))
    with pytest.raises(SettingsError, match="TopnSettings is not a TokenCredential"):
        credential(load_settings(entra_credential="topn.tasks.settings:load_settings"))


def test_the_stack_in_the_other_mode_is_named(entra: TopnSettings) -> None:
    from topn.flows.local_stack import StackError

    keys = entra.model_copy(update={"use_entra_id": False})
    with pytest.raises(StackError, match=r"runs in Entra ID mode \(HTTPS\), and topn is set for Shared Key mode"):
        azurite_up(keys)


def test_a_named_credential_without_a_token_says_why(entra: TopnSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPN_ENTRA_CREDENTIAL", "azure.identity:AzureCliCredential")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no `az` to ask
    with pytest.raises(AccessError, match=r"^no Microsoft Entra ID token: Azure CLI not found on path"):
        topn(paths=[str(SAMPLE)], top=1)


def test_topn_stack_status_entra_names_the_mode_and_the_certificate(entra: TopnSettings) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TOPN_USE_ENTRA_ID"}  # --entra alone says it
    ran = subprocess.run([str(Path(sys.executable).with_name("topn")), "stack", "status", "--entra"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert f"Azurite (Blob) {entra.blob_url}: up" in ran.stdout
    assert f"Batch emulator {entra.batch_url} (account devbatchaccount1): up" in ran.stdout
    assert f"the development certificate to trust is {entra.local_tls[0]}" in ran.stdout
    plain = subprocess.run([str(Path(sys.executable).with_name("topn")), "stack", "status"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert plain.returncode == 1 and "runs in Entra ID mode (HTTPS)" in plain.stderr, plain.stderr


@pytest.mark.parametrize(
    ("refused", "role"),
    [
        (("POST", "/pools"), "grant it Azure Batch Data Contributor on the Batch account"),
        (("PUT", "/devstoreaccount1/topn-app"), "grant it Storage Blob Data Contributor on the storage account"),
    ],
)  # fmt: skip
def test_a_role_missing_for_a_later_step_is_named_too(
    entra: TopnSettings, monkeypatch: pytest.MonkeyPatch, refused: tuple[str, str], role: str
) -> None:
    """A principal that may read but not write (a Reader role) passes check-access and is refused later:
    the one line the command prints still names the role."""
    from topn.flows.errors import explain

    def forbid(method: str, path: str) -> tuple[int, str, str] | None:
        if (method, path.rstrip("/")) != refused:
            return None
        return BATCH_FORBIDDEN if path == "/pools" else STORAGE_FORBIDDEN

    monkeypatch.setenv("TOPN_POOL_ID", "topn-entra-reader")  # a pool that does not exist yet
    with _as_azure_behind_a_proxy(entra, monkeypatch, forbid):
        with pytest.raises(HttpResponseError) as failed:
            topn(paths=[str(SAMPLE)], top=1, run_id="entra-reader")  # an id of its own: work to do, a pool to make
        said = explain(failed.value, load_settings())
    assert said is not None and "refused the request (403 " in said and role in said, said


def test_the_development_certificate_is_for_loopback_only_and_never_swapped_under_the_stack(
    entra: TopnSettings, tmp_path: Path
) -> None:
    from cryptography import x509

    from topn.flows.local_stack import StackError, ensure_local_stack

    cert, key = entra.local_tls
    assert key.stat().st_mode & 0o777 == 0o600
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    constraints = loaded.extensions.get_extension_for_class(x509.NameConstraints).value
    assert {str(n.value) for n in constraints.permitted_subtrees} == {"127.0.0.1/32", "localhost"}
    # Another local folder (no certificate there) while this stack serves on the same ports: topn will not
    # make a new certificate that the running services do not serve.
    elsewhere = entra.model_copy(update={"local_dir": tmp_path})
    with pytest.raises(StackError, match=r"the local stack is running without Entra ID, or with a development"):
        ensure_local_stack(elsewhere)
    assert not (tmp_path / "tls" / "cert.pem").exists()


def test_a_pool_made_with_keys_serves_on_after_the_stack_turns_to_entra_id(
    stack_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an account that turns Shared Key off: the pool's start task SAS, signed by the account key, stop
    working; the next run gives it user delegation SAS (or a new pool, if a node already failed for want
    of them) and counts exactly."""
    set_topn(monkeypatch, local_dir=str(tmp_path), local_blob_port=str(free_port()),
             local_batch_port=str(free_port()), pool_id="turned", dedicated_nodes="1")  # fmt: skip
    monkeypatch.delenv("TOPN_USE_ENTRA_ID", raising=False)  # the module's stack fixture may have set it
    keys = load_settings()
    try:
        ensure_local_stack(keys)
        topn(paths=[str(SAMPLE)], top=1)
        assert all("skoid" not in f.http_url for f in batch_client(keys).get_pool("turned").start_task.resource_files)
        stop_local_stack(keys, grace=10)
        monkeypatch.setenv("TOPN_USE_ENTRA_ID", "true")
        entra = load_settings()
        ensure_local_stack(entra)
        assert topn(paths=[str(SAMPLE)], top=2).top == [("the", 12495), ("and", 6396)]
        client = batch_client(entra)
        assert all("skoid=" in f.http_url for f in client.get_pool("turned").start_task.resource_files)
        assert all(n.state != "starttaskfailed" for n in client.list_nodes("turned"))
    finally:
        stop_local_stack(keys, grace=10)  # whichever mode: the same pid files
