"""The emulator's settings: one object, `EmulatorConfig`, for the command line (`azure-batch-emulator
--port ...`, read by `from_command_line`) and for `Emulator(...)` inside a test process."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from batch_emulator import capacity, throttle
from batch_emulator.devaccount import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

MAX_BODY_BYTES = 1_000_000  # what SDK 15 documents for a task collection; larger bodies get 413
COMMAND_LINE_PORT = 10100  # the command line's default port; Emulator() takes any free one


@dataclass(frozen=True)
class EmulatorConfig:
    """How an emulator listens, whom it lets in, and how fast its nodes and autoscale go."""

    host: str = "127.0.0.1"  # loopback only
    port: int = 0  # 0: any free port
    data_dir: Path | str | None = None  # where the state is kept across restarts; None: a temporary folder
    account: str = DEV_ACCOUNT_NAME
    key: str = DEV_ACCOUNT_KEY
    boot_seconds: float = 0.2  # how long a node takes to start
    accept_bearer: bool = False  # any bearer token, unread
    max_body_bytes: int = MAX_BODY_BYTES
    preempt_rate: float = 0.0  # spot nodes pre-empted at random, per node-minute on average
    autoscale_min_interval: float | None = None  # seconds: below the service's 5 minutes, for tests
    autoscale_sample_seconds: float | None = None  # None: the service's 30 s
    entra: bool = False  # check Entra ID bearer tokens' claims (tokens.py)
    shared_key: bool = True  # False: Shared Key refused
    cert: Path | str | None = None  # PEM: served over HTTPS (TLS 1.2+)
    cert_key: Path | str | None = None  # PEM: the certificate's key, else it is in `cert`
    trust_ca: Path | str | None = None  # PEM: CA certificates the nodes trust besides the system's
    # bad days (injections.py): the account's quotas (None: no limit), the region's capacity, failures at random
    dedicated_core_quota: int | None = None
    low_priority_core_quota: int | None = None
    active_job_quota: int | None = None
    pool_quota: int | None = None
    capacity: tuple[int | None, int | None] | None = None  # nodes per pool (dedicated, low priority); None: no end
    unusable_rate: float = 0.0  # nodes turned unusable at random, per node-hour on average
    unusable_recover_seconds: float | None = None  # how long a randomly unusable node stays so; None: until removed
    seed: int | None = None  # of the random pre-emptions and unusable nodes
    throttle_seconds: float = 0.0  # every REST request answered 429 for this long from the start
    throttle_retry_after: int = 1  # the 429's Retry-After, seconds

    def __post_init__(self) -> None:
        if not self.shared_key and not (self.entra or self.accept_bearer):
            raise ValueError("shared_key=False needs entra=True (or accept_bearer=True): nothing could authenticate")


def from_command_line(argv: list[str] | None = None) -> EmulatorConfig:
    """The settings of `azure-batch-emulator ARGS`; a usage error exits with status 2, as argparse does."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.no_shared_key and not (args.entra or args.accept_bearer):
        parser.error("--no-shared-key needs --entra (or --accept-bearer): nothing could authenticate")
    if args.cert_key and not args.cert:
        parser.error("--cert-key needs --cert")
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        account=args.account,
        key=args.key,
        boot_seconds=args.boot_seconds,
        accept_bearer=args.accept_bearer,
        preempt_rate=args.preempt_rate,
        autoscale_min_interval=args.autoscale_interval_min,
        autoscale_sample_seconds=args.autoscale_sample_seconds,
        entra=args.entra,
        shared_key=not args.no_shared_key,
        cert=args.cert,
        cert_key=args.cert_key,
        trust_ca=args.trust_ca,
        dedicated_core_quota=args.dedicated_core_quota,
        low_priority_core_quota=args.low_priority_core_quota,
        active_job_quota=args.active_job_quota,
        pool_quota=args.pool_quota,
        capacity=args.capacity,
        unusable_rate=args.unusable_rate,
        unusable_recover_seconds=args.unusable_recover_seconds,
        seed=args.seed,
        throttle_seconds=args.throttle[0] if args.throttle else 0.0,
        throttle_retry_after=args.throttle[1] if args.throttle else 1,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azure-batch-emulator", description="A local Azure Batch service.")
    option = parser.add_argument
    option("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    option("--port", type=int, default=COMMAND_LINE_PORT, help="port (default 10100; 0 picks a free one)")
    option(
        "--data-dir",
        type=Path,
        help="where the state and the nodes' folders are kept, across restarts (default: a temporary folder)",
    )
    option("--account", default=DEV_ACCOUNT_NAME, help=f"account name (default {DEV_ACCOUNT_NAME})")
    option("--key", default=DEV_ACCOUNT_KEY, help="account key, Base64 (default: the development key)")
    option("--boot-seconds", type=float, default=0.2, help="how long a node takes to start (0.2)")
    option("--accept-bearer", action="store_true", help="accept any bearer token, unchecked")
    option(
        "--entra",
        action="store_true",
        help="check Entra ID bearer tokens: audience, issuer, lifetime (not the signature)",
    )
    option(
        "--no-shared-key",
        action="store_true",
        help="refuse Shared Key, as an account without SharedKey in allowedAuthenticationModes (needs --entra)",
    )
    option("--cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (chain)")
    option("--cert-key", type=Path, metavar="PEM", help="the certificate's private key (default: inside --cert)")
    option(
        "--trust-ca",
        type=Path,
        metavar="PEM",
        help="CA certificate(s) the nodes trust, besides the system's, when they download resource files and "
        "upload output files: e.g. Azurite's development certificate",
    )
    option(
        "--preempt-rate",
        type=float,
        default=0.0,
        help="pre-empt spot nodes at random, this many times per node-minute on average (default 0: never)",
    )
    _bad_days(option)
    option(
        "--autoscale-interval-min",
        type=float,
        metavar="SECONDS",
        help="the shortest autoScaleEvaluationInterval accepted (default 300, the service's)",
    )
    option(
        "--autoscale-sample-seconds",
        type=float,
        metavar="SECONDS",
        help="how often an autoscale pool's metrics are sampled (default 30, the service's)",
    )
    return parser


def _bad_days(option) -> None:
    """The injections' options (README, "Bad days")."""
    count = _whole_number
    option("--dedicated-core-quota", type=count, metavar="N", help="the account's dedicated core quota (default none)")
    option("--low-priority-core-quota", type=count, metavar="N", help="the account's low-priority (spot) core quota")
    option("--active-job-quota", type=count, metavar="N", help="how many jobs may be active at once (default no limit)")
    option("--pool-quota", type=count, metavar="N", help="how many pools the account may have (default no limit)")
    option(
        "--capacity",
        type=_argument(capacity.parse),
        metavar="DEDICATED,LOWPRIORITY",
        help="the region's capacity: at most this many nodes of each kind per pool (empty: no end), e.g. 4,0",
    )
    option("--unusable-rate", type=float, default=0.0, help="turn nodes unusable at random, per node-hour (default 0)")
    option(
        "--unusable-recover-seconds",
        type=float,
        metavar="SECONDS",
        help="a node --unusable-rate hit recovers after this long (default: never, until removed)",
    )
    option("--seed", type=int, help="seed of --preempt-rate and --unusable-rate (default: random)")
    option(
        "--throttle",
        type=_argument(throttle.parse),
        metavar="SECONDS[:RETRY_AFTER]",
        help="answer every REST request 429 TooManyRequests for SECONDS from the start, with Retry-After (default 1)",
    )


def _whole_number(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _argument(parse):
    """An argparse type from a parser raising ValueError: its message in the usage error."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None

    return convert
