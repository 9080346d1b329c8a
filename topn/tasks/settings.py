"""Settings from environment variables `TOPN_*` or a `.env` file, in three layers:
- `AzureConnection`: where Batch and Storage are and how topn signs in (what credential blocks replace);
- `BatchSettings`: that, plus the containers, the pool and the job: what every Batch workload's steps read;
- a workload's own settings on top, e.g. `TopnSettings` (the word count's packing).

With no Azure endpoint set, everything points at the local stack (Azurite + the Batch emulator).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Literal, Self, TypeVar

from pydantic import ByteSize, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from topn.tasks.policy import BATCH_TASK_RETRIES

ENV_PREFIX = "TOPN_"
# The local stack's well-known development accounts, public as Azurite's is: the Batch emulator's (checked
# against the emulator's own by tests/test_layers.py: the plugin never imports the emulator) and Azurite's.
DEV_ACCOUNT_NAME = "devbatchaccount1"
DEV_ACCOUNT_KEY = "ZGV2YmF0Y2hhY2NvdW50MS1sb2NhbC1lbXVsYXRvci1rZXktbm90LWEtc2VjcmV0IQ=="
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER_NAME = r"^[a-z0-9]([a-z0-9]|-[a-z0-9]){2,62}$"  # Azure: 3-63 chars, no leading, trailing or double hyphen
PoolMode = Literal["keep", "autoscale", "per-job"]
BATCH_ID = r"^[A-Za-z0-9_-]{1,64}$"


class SettingsError(ValueError):
    """Settings that cannot work, with what to change."""


class AzureConnection(BaseSettings):
    """Where topn runs (Azure or the local stack) and how it signs in."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    batch_endpoint: str | None = Field(None, description="https://<account>.<region>.batch.azure.com; unset: local")
    batch_account_name: str | None = None
    batch_account_key: SecretStr | None = None
    storage_account_name: str | None = None
    storage_account_key: SecretStr | None = None
    storage_blob_endpoint: str | None = Field(None, description="default https://<account>.blob.core.windows.net")
    use_entra_id: bool = Field(False, description="Microsoft Entra ID tokens for Batch and Storage instead of keys")
    entra_credential: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:name of the TokenCredential to use (a class, factory or instance), e.g. "
        "azure.identity:AzureCliCredential; unset: DefaultAzureCredential, or on the local stack its own",
    )

    local_batch_port: int = Field(10100, ge=1, le=65535)
    local_prefect_port: int = Field(4200, ge=1, le=65535, description="where `topn server start` serves Prefect")
    temporary_prefect_server: bool = Field(
        False,
        description="without PREFECT_API_URL, each `topn run` on a temporary Prefect server of its own (15-30 s "
        "more, its runs gone with it) instead of the one `topn server start` keeps, started if need be",
    )
    local_blob_port: int = Field(10000, ge=1, le=65535)
    local_dir: Path = Field(Path(".topn"), description="local stack state: Azurite data, node folders, logs")

    @property
    def local(self) -> bool:
        """True when nothing points at Azure: the local stack is used."""
        return self.batch_endpoint is None and self.storage_account_name is None

    @model_validator(mode="after")
    def _connection_coherent(self) -> Self:
        problems = [] if self.local else _azure_problems(self)
        if self.use_entra_id:
            problems += _entra_key_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def local_scheme(self) -> str:
        """The local stack speaks HTTPS in Entra ID mode (the SDKs send tokens over HTTPS only), else HTTP."""
        return "https" if self.use_entra_id else "http"

    @property
    def local_tls(self) -> tuple[Path, Path]:
        """The local stack's development certificate (the CA clients trust) and its private key."""
        folder = self.local_dir.resolve() / "tls"
        return folder / "cert.pem", folder / "key.pem"

    @property
    def ca_file(self) -> str | None:
        """The certificate to trust on the local stack over HTTPS; None: the system's trust store."""
        return str(self.local_tls[0]) if self.local and self.use_entra_id else None

    @property
    def batch_url(self) -> str:
        if self.batch_endpoint:
            return self.batch_endpoint.rstrip("/")
        return f"{self.local_scheme}://127.0.0.1:{self.local_batch_port}"

    @property
    def batch_account(self) -> tuple[str, str]:
        if self.local:
            return DEV_ACCOUNT_NAME, "" if self.use_entra_id else DEV_ACCOUNT_KEY
        return (
            self.batch_account_name or "",
            self.batch_account_key.get_secret_value() if self.batch_account_key else "",
        )

    @property
    def storage_account(self) -> tuple[str, str]:
        if self.local:
            return AZURITE_ACCOUNT, "" if self.use_entra_id else AZURITE_KEY
        key = self.storage_account_key.get_secret_value() if self.storage_account_key else ""
        return self.storage_account_name or "", key

    @property
    def blob_url(self) -> str:
        if self.storage_blob_endpoint:
            return self.storage_blob_endpoint.rstrip("/")
        if self.local:
            return f"{self.local_scheme}://127.0.0.1:{self.local_blob_port}/{AZURITE_ACCOUNT}"
        return f"https://{self.storage_account_name}.blob.core.windows.net"


class BatchSettings(AzureConnection):
    """The connection, plus where a workload's blobs go and how its pool and job are shaped: what the generic
    Batch steps (tasks/) read. A workload's settings derive from it; `pool_ids` are its default pools."""

    pool_ids: ClassVar[dict[str, str]] = {"keep": "topn", "autoscale": "topn-autoscale", "per-job": "topn-job"}

    app_container: str = Field("topn-app", pattern=CONTAINER_NAME)
    input_container: str = Field("topn-input", pattern=CONTAINER_NAME)
    output_container: str = Field("topn-output", pattern=CONTAINER_NAME)

    pool_id: str = Field("topn", pattern=BATCH_ID)
    vm_size: str = "standard_d2s_v3"
    dedicated_nodes: int = Field(1, ge=0, le=1000)
    spot_nodes: int = Field(0, ge=0, le=1000)
    task_slots_per_node: int = Field(2, ge=1, le=256)
    image_publisher: str = "canonical"
    image_offer: str = "ubuntu-24_04-lts"
    image_sku: str = "server"
    node_agent_sku_id: str = "batch.node.ubuntu 24.04"

    job_timeout: timedelta = Field(timedelta(hours=1), gt=timedelta(0), description="the job's maxWallClockTime")
    sas_margin: timedelta = Field(timedelta(minutes=15), ge=timedelta(0))
    max_task_retries: int = Field(BATCH_TASK_RETRIES, ge=0, le=10)

    pool_mode: PoolMode = Field(
        "keep",
        description="keep: a fixed-size pool kept between runs; autoscale: grows with pending tasks, none idle; "
        "per-job: a pool of each run's own (an auto pool), gone with its job",
    )
    autoscale_interval: timedelta = Field(timedelta(minutes=5), gt=timedelta(0), description="formula evaluations")
    autoscale_idle: timedelta = Field(timedelta(minutes=10), ge=timedelta(0), description="idle time before zero nodes")

    output_retention: timedelta = Field(
        timedelta(days=7), description="how long outputs no lineage's catalog references are kept before removal"
    )

    def with_pool_mode(self, mode: PoolMode) -> Self:
        """These settings for a run in `mode`. Unless TOPN_POOL_ID names a pool, each mode has a pool of its
        own ("topn", "topn-autoscale"; per-job pools' ids start "topn-job"): a fixed pool and an autoscaled
        one never switch one pool back and forth (on Azure each switch drops or allocates nodes, minutes each)."""
        update: dict[str, object] = {"pool_mode": mode}
        if "pool_id" not in self.model_fields_set:
            update["pool_id"] = self.pool_ids[mode]
        return self.model_copy(update=update)

    @model_validator(mode="after")
    def _batch_coherent(self) -> Self:
        problems = []
        if self.dedicated_nodes + self.spot_nodes == 0:
            problems.append("TOPN_DEDICATED_NODES / TOPN_SPOT_NODES: the pool needs at least one node")
        cores = vm_cores(self.vm_size)
        if cores and self.task_slots_per_node > min(256, 4 * cores):
            problems.append(
                f"{ENV_PREFIX}TASK_SLOTS_PER_NODE: {self.task_slots_per_node} slots on {self.vm_size}, which has "
                f"{cores} cores: Batch allows at most {min(256, 4 * cores)} (4 a core), so tasks would never run; "
                f"set at most that, or a larger {ENV_PREFIX}VM_SIZE"
            )
        if self.use_entra_id and self.job_timeout + self.sas_margin >= DELEGATION_SAS_MAX:
            problems.append(
                f"{ENV_PREFIX}JOB_TIMEOUT + {ENV_PREFIX}SAS_MARGIN: with Entra ID, access for the nodes is signed by "
                "a user delegation key valid 7 days at most; give a job timeout under that"
            )
        if self.output_retention < self.job_timeout + self.sas_margin:
            problems.append(
                f"{ENV_PREFIX}OUTPUT_RETENTION: must be at least {ENV_PREFIX}JOB_TIMEOUT + {ENV_PREFIX}SAS_MARGIN, "
                "so that no output is removed while a run may still read it"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TopnSettings(BatchSettings):
    """The word count's settings: the Batch settings, and how its files are packed into tasks and merges."""

    files_per_task: int = Field(100, ge=1, le=10_000, description="files one count task takes, at most")
    bytes_per_task: ByteSize = Field(ByteSize(64 << 20), ge=1, description="bytes one count task takes, e.g. 64MiB")
    merge_fan_in: int = Field(100, ge=2, le=1_000, description="outputs one merge task reads, at most")


# A user delegation key, which signs every SAS with Entra ID, is valid for 7 days at most (Azure Storage);
# topn asks for a little less, as its clock and Storage's may differ.
DELEGATION_SAS_MAX = timedelta(days=7) - timedelta(minutes=10)


def _azure_problems(settings: AzureConnection) -> list[str]:
    """What is missing or malformed for using Azure."""
    problems = []
    needed = {"batch_endpoint": settings.batch_endpoint, "storage_account_name": settings.storage_account_name}
    if not settings.use_entra_id:
        needed |= {
            "batch_account_name": settings.batch_account_name,
            "batch_account_key": settings.batch_account_key,
            "storage_account_key": settings.storage_account_key,
        }
    if missing := [f"{ENV_PREFIX}{k.upper()}" for k, v in needed.items() if not v]:
        problems.append(
            f"{', '.join(missing)}: needed to use Azure (or unset every TOPN_BATCH_* and "
            "TOPN_STORAGE_* setting to use the local stack)"
        )
    for name in ("batch_account_key", "storage_account_key"):
        value = getattr(settings, name)
        if value and not _is_base64(value.get_secret_value()):
            problems.append(
                f"{ENV_PREFIX}{name.upper()}: not a Base64 account key; copy it from the "
                "account's Keys page in the Azure portal"
            )
    if settings.batch_endpoint and not settings.batch_endpoint.startswith(("https://", "http://")):
        problems.append(f"{ENV_PREFIX}BATCH_ENDPOINT: expected https://<account>.<region>.batch.azure.com")
    return problems


def _entra_key_problems(settings: AzureConnection) -> list[str]:
    keys = [f"{ENV_PREFIX}{k.upper()}" for k in ("batch_account_key", "storage_account_key") if getattr(settings, k)]
    if keys:
        return [
            f"{', '.join(keys)}: not used with {ENV_PREFIX}USE_ENTRA_ID=true; unset them, so that no key is kept "
            "where it is not needed"
        ]
    return []


# Azure's size names say their vCPUs (Standard_D2s_v3: 2; Standard_E8-4ds_v5: 4 of 8 active), from version 3
# on; in older names the number may be a rank (Standard_D4_v2 has 8), so those are not read.
_VM_CORES = re.compile(r"^standard_[a-z]+(\d+)(?:-(\d+))?[a-z]*(?:_[a-z0-9]+?)*?_v(\d+)$")


def vm_cores(vm_size: str) -> int | None:
    """The vCPUs a VM size's name says, or None for a name this does not read."""
    found = _VM_CORES.match(vm_size.strip().lower())
    if found is None or int(found.group(3)) < 3:
        return None
    return int(found.group(2) or found.group(1)) or None


def _is_base64(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) >= 16
    except (binascii.Error, ValueError):
        return False


S = TypeVar("S", bound="AzureConnection")


def load_settings(kind: type[S] | None = None, **overrides: object) -> S:
    """The settings (`TopnSettings` unless another `kind` is given), or one SettingsError naming each bad
    setting and how to fix it."""
    try:
        return (kind or TopnSettings)(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"])
            name = f"{ENV_PREFIX}{field.upper()}: " if field else ""
            lines.append(f"{name}{err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("bad settings: " + "; ".join(lines)) from None
