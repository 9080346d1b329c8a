"""One task attempt on a node: resource files, the command as a local process, output files.

A node is a fresh machine: the process gets a clean environment (no inherited virtualenv or
PYTHONPATH), `python3` is whatever the system has on its standard PATH, and the command line is
split like a POSIX shell would but never run through one (docs/batch-wire.md 7.3).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import ssl
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from batch_emulator import storage, wire
from batch_emulator.processes import ProcessTable, kill_group

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DOWNLOADS_AT_ONCE = 8
_WILDCARD = re.compile(r"[*?\[]")
_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


@dataclass
class Outcome:
    """How one attempt ended. `kind` is exit, preprocessing, upload, timeout, or the cancel reason."""

    kind: str
    start_time: datetime
    end_time: datetime
    exit_code: int | None = None
    failure: dict | None = None

    @property
    def succeeded(self) -> bool:
        return self.kind == "exit" and self.exit_code == 0


def failure(category: str, code: str, message: str, **details: str) -> dict:
    info = {"category": category, "code": code, "message": message}
    if details:
        info["details"] = [{"name": k, "value": v} for k, v in details.items()]
    return info


def environment(node_root: Path, task_dir: Path, settings: dict[str, str]) -> dict[str, str]:
    root, task = str(node_root), str(task_dir)
    wd = f"{task}/wd"
    env = {
        "PATH": f"{SYSTEM_PATH}:{root}/shared:{wd}",
        "HOME": wd,
        "PWD": wd,
        "USER": "_azbatch",
        "LANG": "C.UTF-8",
        "AZ_BATCH_NODE_ROOT_DIR": root,
        "AZ_BATCH_NODE_SHARED_DIR": f"{root}/shared",
        "AZ_BATCH_NODE_STARTUP_DIR": f"{root}/startup",
        "AZ_BATCH_NODE_MOUNTS_DIR": f"{root}/fsmounts",
        "AZ_BATCH_TASK_DIR": task,
        "AZ_BATCH_TASK_WORKING_DIR": wd,
        "AZ_BATCH_CERTIFICATES_DIR": f"{task}/certs",
    }
    return {**env, **settings}


class TaskRun:
    """One cancellable attempt at a task (or a start task) on a node."""

    def __init__(
        self,
        command_line: str,
        task_dir: Path,
        env: dict[str, str],
        resource_files: list[dict],
        output_files: list[dict],
        processes: ProcessTable,
        max_wall_clock: timedelta = wire.INFINITE,
    ) -> None:
        self.command_line, self.task_dir, self.env = command_line, task_dir, env
        self.processes = processes
        self.resource_files, self.output_files = resource_files, output_files
        self.max_wall_clock = max_wall_clock
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.cancelled: str | None = None

    def cancel(self, reason: str) -> None:
        """Stops the attempt; it ends with outcome kind `reason`. Kills the whole process tree."""
        with self._lock:
            self.cancelled = self.cancelled or reason
            if self._process and self._process.poll() is None:
                kill_group(self._process.pid)

    def run(self) -> Outcome:
        start = wire.now()
        wd = self.task_dir / "wd"
        wd.mkdir(parents=True, exist_ok=True)
        problem = fetch_resource_files(self.resource_files, wd, lambda: self.cancelled is not None)
        if self.cancelled:
            return Outcome(self.cancelled, start, wire.now())
        if problem:
            return Outcome("preprocessing", start, wire.now(), failure=problem)
        kind, code, problem = self._execute(wd)
        upload_problem = self._upload(code) if kind == "exit" and not self.cancelled else None
        if upload_problem and not self.cancelled:  # an upload cut off by a cancel ends as the cancel says
            return Outcome("upload", start, wire.now(), code, upload_problem)
        return Outcome(self.cancelled or kind, start, wire.now(), code, problem)

    def _execute(self, wd: Path) -> tuple[str, int | None, dict | None]:
        try:
            argv = shlex.split(self.command_line)
        except ValueError as e:
            return (
                "exit",
                None,
                failure("usererror", "CommandLineInvalid", f"The command line cannot be parsed: {e}"),
            )
        if not argv:
            return "exit", None, failure("usererror", "CommandLineInvalid", "The command line is empty.")
        with open(self.task_dir / "stdout.txt", "ab") as out, open(self.task_dir / "stderr.txt", "ab") as err:
            with self._lock:
                if self.cancelled:
                    return self.cancelled, None, None
                try:
                    self._process = self.processes.spawn(
                        argv, cwd=wd, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
                    )
                except OSError as e:
                    return (
                        "exit",
                        None,
                        failure(
                            "usererror",
                            "CommandProgramNotFound" if isinstance(e, FileNotFoundError) else "CommandLaunchFailed",
                            f"{argv[0]}: {e.strerror or e}",
                        ),
                    )
                if self._process is None:  # the emulator is shutting down
                    self.cancelled = self.cancelled or "requeue"
                    return self.cancelled, None, None
            limit = self.max_wall_clock.total_seconds() if self.max_wall_clock < wire.INFINITE else None
            try:
                code = self._process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                kill_group(self._process.pid)
                code = self._process.wait()
                self.processes.release(self._process)
                return (
                    "timeout",
                    _exit_code(code),
                    failure(
                        "servererror",
                        "TaskEnded",
                        "The task was ended because it exceeded its maximum wall clock time.",
                    ),
                )
            self.processes.release(self._process)  # what the command left running in the background dies with it
        return "exit", _exit_code(code), None

    def _upload(self, exit_code: int | None) -> dict | None:
        log = self.task_dir / "fileuploadout.txt"
        for spec in self.output_files:
            if self.cancelled:
                return None
            condition = spec["uploadOptions"]["uploadCondition"].lower()
            if (condition == "tasksuccess" and exit_code != 0) or (condition == "taskfailure" and exit_code == 0):
                continue
            container = spec["destination"]["container"]
            try:
                for source, name in matched_outputs(
                    spec["filePattern"], container.get("path"), self.task_dir, self.env
                ):
                    storage.upload(container["containerUrl"], name, source, lambda: self.cancelled is not None)
                    with open(log, "a", encoding="utf-8") as f:
                        f.write(
                            f"uploaded {source} to {storage.shown(storage.blob_url(container['containerUrl'], name))}\n"
                        )
            except OSError as e:
                return _upload_failure(e, container["containerUrl"], self.task_dir)
        return None


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it


def matched_outputs(pattern: str, path: str | None, task_dir: Path, env: dict[str, str]) -> list[tuple[Path, str]]:
    """The files a filePattern matches and the blob name each gets (docs/batch-wire.md 7.5)."""
    pattern = _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), pattern)
    base = Path(pattern) if os.path.isabs(pattern) else task_dir / "wd" / pattern
    files = sorted(Path(p) for p in glob.glob(str(base), recursive=True) if os.path.isfile(p))
    if not _WILDCARD.search(pattern):
        return [(f, path or f.name) for f in files]
    fixed = Path(*[p for p in _prefix_parts(base)])
    prefix = (path or "").strip("/")
    return [(f, "/".join(filter(None, [prefix, f.relative_to(fixed).as_posix()]))) for f in files]


def _prefix_parts(pattern: Path) -> list[str]:
    parts = []
    for part in pattern.parts:
        if _WILDCARD.search(part):
            break
        parts.append(part)
    return parts


def _upload_failure(error: OSError, container_url: str, task_dir: Path) -> dict:
    status = storage.http_status(error)
    code = {403: "FileUploadAccessDenied", 404: "FileUploadContainerNotFound", 409: "FileUploadConflict"}.get(
        status or 0, "FileUploadMiscError"
    )
    message = f"Uploading output files to {storage.shown(container_url)} failed: {_reason(error)}"
    with open(task_dir / "fileuploaderr.txt", "a", encoding="utf-8") as f:
        f.write(message + "\n")
    return failure("usererror", code, message)


def fetch_resource_files(files: list[dict], wd: Path, cancelled: Callable[[], bool] = lambda: False) -> dict | None:
    """Downloads resource files into the working directory, DOWNLOADS_AT_ONCE at a time as the node agent
    does; the failureInfo of the first that fails (the others are not started then)."""
    targets: list[tuple[dict, str, Path]] = []
    for rf in files:
        url = rf.get("httpUrl") or rf["storageContainerUrl"]
        if rf.get("httpUrl"):
            targets.append((rf, url, wd / rf["filePath"]))
            continue
        try:
            names = storage.list_blobs(url, rf.get("blobPrefix") or "", cancelled)
        except OSError as e:  # storage retried what was transient; this failure stands
            return None if cancelled() else _resource_failure(e, url, container=True)
        folder = wd / (rf.get("filePath") or "")
        targets += [(rf, storage.blob_url(url, n), folder / n) for n in names]
    failed: list[dict] = []
    stop = lambda: bool(failed) or cancelled()  # noqa: E731

    def one(target: tuple[dict, str, Path]) -> None:
        rf, source, dest = target
        if stop():
            return
        try:
            storage.download(source, dest, stop)
            os.chmod(dest, int(str(rf.get("fileMode") or "0770"), 8))
        except OSError as e:
            if not stop():
                failed.append(_resource_failure(e, source, container="httpUrl" not in rf))

    if len(targets) == 1:
        one(targets[0])
    else:
        with ThreadPoolExecutor(DOWNLOADS_AT_ONCE) as pool:
            list(pool.map(one, targets))
    return None if cancelled() or not failed else failed[0]


def _resource_failure(error: OSError, url: str, container: bool) -> dict:
    status = storage.http_status(error)
    if status in (403, 404):
        code = ("ResourceContainer" if container else "Blob") + ("AccessDenied" if status == 403 else "NotFound")
        category = "usererror"
    else:
        kind = "TimedOut" if storage.timed_out(error) else "MiscError"
        code, category = ("ResourceContainerList" if container else "BlobDownload") + kind, "servererror"
    message = f"Downloading resource file {storage.shown(url)} failed: {_reason(error)}"
    return failure(category, code, message, FilePath=storage.shown(url))


def _reason(error: OSError) -> str:
    status = storage.http_status(error)
    if status:
        return f"HTTP {status}"
    reason = getattr(error, "reason", None)
    if isinstance(reason, ssl.SSLCertVerificationError):  # Azurite over HTTPS with its own certificate, say
        return (
            f"the server's certificate is not trusted ({reason.verify_message}): give the emulator its CA "
            "with --trust-ca (Emulator(trust_ca=...))"
        )
    return str(reason or error.strerror or error)
