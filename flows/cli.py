"""The `topn` command: run the flow (on the local stack unless Azure is configured), manage the local stack."""

from __future__ import annotations

import argparse
import logging
import re
import sys

from tasks.sas import redact
from tasks.settings import SettingsError, TopnSettings, load_settings


def _batch_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise argparse.ArgumentTypeError("a Batch job id has 1 to 64 letters, digits, hyphens and underscores")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topn", description="Top N words across files, with Azure Batch and Prefect.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="count words in files or folders (default: the bundled sample corpus)")
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
    stack = commands.add_parser("stack", help="the local stack: Azurite and the Batch emulator")
    stack.add_argument("action", choices=["start", "stop", "status"])
    return parser


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


def _run(args: argparse.Namespace, settings: TopnSettings) -> int:
    from flows.local_stack import ensure_local_stack
    from flows.topn import DEFAULT_SAMPLE, topn
    from tasks.storage import expand_paths

    _quiet_tracebacks_in_terminal()

    paths = args.paths or ([] if args.prefix is not None else [DEFAULT_SAMPLE])
    expand_paths(paths)  # a missing path fails here, before any service starts
    if settings.local:
        ensure_local_stack(settings)
    result = topn(paths=paths or None, top=args.top, blob_prefix=args.prefix, run_id=args.run_id,
                  delete_job=not args.keep_job, delete_pool=args.delete_pool, delete_uploads=args.delete_uploads,
                  delete_outputs=args.delete_outputs, files_per_task=args.files_per_task,
                  bytes_per_task=args.bytes_per_task)  # fmt: skip
    print(result.model_dump_json(indent=2) if args.json else result.table())
    return 0


def _stack(args: argparse.Namespace, settings: TopnSettings) -> int:
    from flows.local_stack import azurite_up, emulator_up, ensure_local_stack, stop_local_stack

    if args.action == "start":
        started = ensure_local_stack(settings)
        print(f"started: {', '.join(started) or 'nothing (already running)'}")
    elif args.action == "stop":
        print("\n".join(stop_local_stack(settings)) or "nothing to stop")
    print(
        f"Azurite (Blob) http://127.0.0.1:{settings.local_blob_port}/devstoreaccount1: "
        f"{'up' if azurite_up(settings) else 'down'}"
    )
    print(
        f"Batch emulator http://127.0.0.1:{settings.local_batch_port} (account devbatchaccount1): "
        f"{'up' if emulator_up(settings) else 'down'}"
    )
    return 0


def _bad_run_options(args: argparse.Namespace) -> str | None:
    """What is wrong with `topn run`'s options, found before any service starts."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

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
        return _run(args, settings) if args.command == "run" else _stack(args, settings)
    except SettingsError as e:
        print(f"topn: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("topn: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the flow failed: one clear message, no traceback, never a secret
        from flows.errors import explain

        message = str(e) if isinstance(e, _expected_errors()) else explain(e, settings)
        if message is None:
            raise
        print(f"topn: {redact(message)}", file=sys.stderr)
        return 1


def _expected_errors() -> tuple[type[BaseException], ...]:
    from prefect.exceptions import ParameterTypeError

    from flows.local_stack import StackError
    from flows.topn import TopnFailed
    from tasks.batch import PoolConflict, RunConflict
    from tasks.preflight import AccessError
    from tasks.storage import InputError

    return TopnFailed, InputError, StackError, AccessError, PoolConflict, RunConflict, ParameterTypeError, ValueError
