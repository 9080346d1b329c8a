"""The `topn` command: run the flow (on the local stack unless Azure is configured), manage the local stack."""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import shlex
import sys
from pathlib import Path

from topn import __version__
from topn.tasks.sas import redact
from topn.tasks.settings import SettingsError, TopnSettings, load_settings

DEFAULT_PREFIX = "incoming/"  # what the deployment topn/default counts


def _batch_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise argparse.ArgumentTypeError("a Batch job id has 1 to 64 letters, digits, hyphens and underscores")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topn", description="Top N words across files, with Azure Batch and Prefect.")
    parser.add_argument("--version", action="version", version=f"topn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="count words in files or folders (in a checkout, default: its sample corpus)",
        description="Count words in files or folders with the topn flow. Prefect: the server PREFECT_API_URL names, "
        "else the one `topn server start` keeps on 127.0.0.1 (TOPN_LOCAL_PREFECT_PORT), started in the background "
        "the first time (TOPN_TEMPORARY_PREFECT_SERVER=true: a temporary server for this run alone instead).",
    )
    run.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to upload and count")
    run.add_argument("--top", type=int, default=10, metavar="N", help="how many words (1-10000, default 10)")
    run.add_argument("--prefix", metavar="PREFIX", help="count the blobs under PREFIX in the input container instead")
    run.add_argument(
        "--run-id", type=_batch_id, help="the Batch job id to use (default: derived from the inputs, so re-runs resume)"
    )
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument(
        "--files-per-task",
        type=int,
        metavar="N",
        help="files one task counts, at most (default TOPN_FILES_PER_TASK, 100)",
    )
    run.add_argument(
        "--bytes-per-task",
        metavar="SIZE",
        help="bytes one task counts, at most, e.g. 64MiB (default TOPN_BYTES_PER_TASK)",
    )
    run.add_argument("--keep-job", action="store_true", help="keep the Batch job afterwards")
    run.add_argument("--delete-pool", action="store_true", help="delete the pool afterwards (default: keep it)")
    run.add_argument("--delete-uploads", action="store_true", help="delete the uploaded inputs afterwards")
    run.add_argument("--delete-outputs", action="store_true", help="delete this run's outputs afterwards")
    upload = commands.add_parser(
        "upload", help="upload files or folders to the input container under a prefix, with readable names"
    )
    upload.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to upload")
    upload.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"where in the input container (default {DEFAULT_PREFIX}: what the deployment topn/default counts)",
    )
    _map_parser(commands)
    stack = commands.add_parser("stack", help="the local stack: Azurite and the Batch emulator")
    stack.add_argument("action", choices=["start", "stop", "status"])
    stack.add_argument(
        "--entra",
        action="store_true",
        help="Entra ID mode: HTTPS and bearer tokens only, Shared Key refused "
        "(as TOPN_USE_ENTRA_ID=true, which topn run then needs too)",
    )
    server = commands.add_parser("server", help="a Prefect server in the background that every topn run uses")
    server.add_argument("action", choices=["start", "stop", "status"])
    _deploy_parser(commands)
    return parser


def _deploy_parser(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser(
        "deploy",
        help="register the deployment topn/default on a Prefect work pool whose workers have topn installed",
        description="Register topn/default (daily, the blobs under incoming/) on a work pool; its entrypoint is the "
        "installed module topn.flows.topn, so workers need topn installed and nothing else (docs/deployment.md).",
    )
    deploy.add_argument("--work-pool", required=True, help="the Prefect work pool, e.g. one of type process")
    deploy.add_argument("--name", default="default", help="the deployment's name (default: default, so topn/default)")
    deploy.add_argument("--cron", help="when it runs (default TOPN_SCHEDULE, else '0 6 * * *', UTC)")
    deploy.add_argument("--batch-credentials", metavar="BLOCK", help='an "Azure Batch Credentials" block to use')
    deploy.add_argument(
        "--storage-credentials", metavar="BLOCK", help='a prefect-azure "Azure Blob Storage Credentials" block'
    )


def _map_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "map",
        help="run a command over every blob under a prefix, one output blob per input (the batch-map flow)",
        description="Run a shell command over every blob under PREFIX in the input container on Azure Batch; each "
        "output goes to the output container under --output-prefix. Inputs unchanged since an earlier run of the "
        "same command are not run again. Example: topn map photos/ --output-prefix thumbs/ --suffix .jpg "
        "--command 'convert {input} -thumbnail 256x256 {output}'",
    )
    run.add_argument("prefix", metavar="PREFIX", help="the blobs to run the command over, e.g. photos/")
    run.add_argument(
        "--command",
        dest="map_command",
        required=True,
        help="with {input} and {output}, e.g. 'gzip -c {input} > {output}'",
    )
    run.add_argument("--output-prefix", required=True, help="where outputs go in the output container, e.g. out/")
    run.add_argument("--suffix", default="", help="appended to each output's name, e.g. .gz")
    run.add_argument("--app", metavar="FILE", help="a wheel, zip or tar archive the nodes unpack at $TOPN_APP")
    run.add_argument("--files-per-task", type=int, metavar="N", help="inputs one task takes (default 10)")
    run.add_argument("--run-id", type=_batch_id, help="the Batch job id to use: a clean start that runs every input")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument("--keep-job", action="store_true", help="keep the Batch job afterwards")
    run.add_argument("--delete-pool", action="store_true", help="delete the pool afterwards (default: keep it)")


class _WithoutTraceback(logging.Formatter):
    """Formats as `inner` does, minus tracebacks: the terminal gets one line per failure (the run's logs,
    written by Prefect's API handler, keep the whole traceback)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _quiet_tracebacks_in_terminal() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter))
    # DefaultAzureCredential warns with a 15-line dump of every credential it tried: topn's one line says
    # what was tried and why the one set up failed.
    logging.getLogger("azure.identity").setLevel(logging.ERROR)


def _run(args: argparse.Namespace, settings: TopnSettings) -> int:
    from topn.flows.local_stack import ensure_local_stack
    from topn.flows.topn import DEFAULT_SAMPLE, topn
    from topn.tasks.storage import expand_paths

    _quiet_tracebacks_in_terminal()

    paths = args.paths or ([] if args.prefix is not None else [DEFAULT_SAMPLE])
    if paths == [DEFAULT_SAMPLE] and not Path(DEFAULT_SAMPLE).is_dir():
        raise ValueError("name the files or folders to count (topn run PATH ...), or --prefix PREFIX for blobs")
    expand_paths(paths)  # a missing path fails here, before any service starts
    if settings.local:
        ensure_local_stack(settings)
    with _prefect_server(settings):
        result = topn(
            paths=paths or None,
            top=args.top,
            blob_prefix=args.prefix,
            run_id=args.run_id,
            delete_job=not args.keep_job,
            delete_pool=args.delete_pool,
            delete_uploads=args.delete_uploads,
            delete_outputs=args.delete_outputs,
            files_per_task=args.files_per_task,
            bytes_per_task=args.bytes_per_task,
        )
    print(result.model_dump_json(indent=2) if args.json else result.table())
    return 0


def _map(args: argparse.Namespace, settings: TopnSettings) -> int:
    from topn.flows.batch_map import batch_map
    from topn.flows.local_stack import ensure_local_stack

    _quiet_tracebacks_in_terminal()
    if args.files_per_task is not None and not 1 <= args.files_per_task <= 1_000:
        raise ValueError("--files-per-task must be a whole number from 1 to 1000")
    if settings.local:
        ensure_local_stack(settings)
    with _prefect_server(settings):
        result = batch_map(
            blob_prefix=args.prefix,
            command=args.map_command,
            output_prefix=args.output_prefix,
            output_suffix=args.suffix,
            app=args.app,
            files_per_task=args.files_per_task,
            run_id=args.run_id,
            delete_job=not args.keep_job,
            delete_pool=args.delete_pool,
        )
    print(result.model_dump_json(indent=2) if args.json else result.table())
    return 0


def _prefect_server(settings: TopnSettings) -> contextlib.AbstractContextManager:
    """Where the run's Prefect API is: PREFECT_API_URL (environment or profile) if set; else the server of
    `topn server start`, started in the background the first time, so that later runs start at once and
    every run stays in its UI; with TOPN_TEMPORARY_PREFECT_SERVER, Prefect's temporary server for this run."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from topn.flows.local_stack import ensure_prefect_server, prefect_url

    if PREFECT_API_URL.value() or settings.temporary_prefect_server:
        return contextlib.nullcontext()
    if ensure_prefect_server(settings):
        print(
            f"started a Prefect server in the background, UI at {prefect_url(settings).removesuffix('/api')}: "
            "later runs use it too (`topn server stop` ends it)",
            file=sys.stderr,
        )
    return temporary_settings({PREFECT_API_URL: prefect_url(settings)})


def _upload(args: argparse.Namespace, settings: TopnSettings) -> int:
    from topn.flows.local_stack import ensure_local_stack
    from topn.tasks.storage import expand_paths, upload_named

    expand_paths(args.paths)  # a missing path fails here, before any service starts
    if settings.local:
        ensure_local_stack(settings)
    names = upload_named(settings, args.paths, args.prefix)
    print(
        f"uploaded {len(names)} files to container {settings.input_container} under {args.prefix!r}; count them "
        f"with `topn run --prefix {shlex.quote(args.prefix)}` or the deployment topn/default"
    )
    return 0


def _deploy(args: argparse.Namespace, settings: TopnSettings) -> int:
    from prefect.exceptions import ObjectNotFound

    from topn.deployments.default import CRON
    from topn.deployments.deploy import deploy

    try:
        deploy(args.work_pool, args.name, args.cron or CRON, args.batch_credentials, args.storage_credentials)
    except ObjectNotFound:
        raise ValueError(
            f"there is no work pool {args.work_pool!r} on this Prefect server: create it "
            f"(prefect work-pool create {shlex.quote(args.work_pool)} --type process) or name another"
        ) from None
    print(
        f"deployed topn/{args.name} on work pool {args.work_pool!r}: start a worker where topn is installed "
        f"(prefect worker start --pool {shlex.quote(args.work_pool)}), then: prefect deployment run topn/{args.name}"
    )
    return 0


def _server(args: argparse.Namespace, settings: TopnSettings) -> int:
    from topn.flows.local_stack import ensure_prefect_server, prefect_up, prefect_url, stop_prefect_server

    if args.action == "start":
        print("started a Prefect server" if ensure_prefect_server(settings) else "a Prefect server is running already")
    elif args.action == "stop":
        print("\n".join(stop_prefect_server(settings)) or "nothing to stop (only a server topn started is stopped)")
    ui = prefect_url(settings).removesuffix("/api")
    if prefect_up(settings):
        print(f"Prefect server {ui}: up (the UI; topn run uses it unless PREFECT_API_URL names another)")
    else:
        print(f"Prefect server {ui}: down")
    return 0


def _stack(args: argparse.Namespace, settings: TopnSettings) -> int:
    from topn.flows.local_stack import azurite_up, emulator_up, ensure_local_stack, stop_local_stack

    if args.entra:
        settings = settings.model_copy(update={"use_entra_id": True})
    if args.action == "start":
        started = ensure_local_stack(settings)
        print(f"started: {', '.join(started) or 'nothing (already running)'}")
    elif args.action == "stop":
        print("\n".join(stop_local_stack(settings)) or "nothing to stop")
    print(f"Azurite (Blob) {settings.blob_url}: {'up' if azurite_up(settings) else 'down'}")
    batch = "up" if emulator_up(settings) else "down"
    print(f"Batch emulator {settings.batch_url} (account devbatchaccount1): {batch}")
    if settings.use_entra_id:
        print(
            f"Entra ID mode: tokens only (topn makes its own for the local stack), Shared Key refused; the "
            f"development certificate to trust is {settings.local_tls[0]} (e.g. SSL_CERT_FILE or "
            "REQUESTS_CA_BUNDLE for other clients)"
        )
    return 0


def _bad_run_options(args: argparse.Namespace) -> str | None:
    """What is wrong with `topn run`'s options, found before any service starts."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

    if args.paths and args.prefix is not None:
        return "give PATHs to upload and count, or --prefix to count blobs already in storage, not both"
    if not 1 <= args.top <= 10_000:
        return "--top must be a whole number from 1 to 10000"
    if args.files_per_task is not None and not 1 <= args.files_per_task <= 10_000:
        return "--files-per-task must be a whole number from 1 to 10000"
    if args.bytes_per_task is not None:
        try:
            args.bytes_per_task = TypeAdapter(ByteSize).validate_python(args.bytes_per_task)
        except ValidationError:
            return f"--bytes-per-task: expected a size such as 64MiB or 1000000, got {args.bytes_per_task!r}"
        if args.bytes_per_task < 1:
            return "--bytes-per-task must be at least 1 byte"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run" and (problem := _bad_run_options(args)):
        print(f"topn: {problem}", file=sys.stderr)
        return 2
    settings = None
    try:
        settings = load_settings()
        commands = {"run": _run, "map": _map, "upload": _upload, "stack": _stack, "server": _server, "deploy": _deploy}
        return commands[args.command](args, settings)
    except SettingsError as e:
        print(f"topn: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("topn: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the flow failed: one clear message, no traceback, never a secret
        from topn.flows.errors import explain

        message = str(e) if isinstance(e, _expected_errors()) else explain(e, settings)
        if message is None:
            raise
        print(f"topn: {redact(message)}", file=sys.stderr)
        return 1


def _expected_errors() -> tuple[type[BaseException], ...]:
    from prefect.exceptions import ParameterTypeError

    from topn.flows.local_stack import StackError
    from topn.flows.topn import TopnFailed
    from topn.tasks.batch import PoolConflict, RunConflict
    from topn.tasks.preflight import AccessError
    from topn.tasks.quotas import QuotaReached
    from topn.tasks.storage import InputError

    return (
        TopnFailed,
        InputError,
        StackError,
        AccessError,
        PoolConflict,
        RunConflict,
        QuotaReached,
        ParameterTypeError,
        ValueError,
    )
