"""What a topn run costs at scale: thousands of small files (plus a few large ones), and one 1 GB file.

    ./dev bench scale [--sizes 1000,10000] [--large 2] [--gb 1] [--no-baseline] [--fresh]

Starts its own stack on free ports: Azurite (its access log counts the Blob requests of the flow and of the
nodes), the Batch emulator as a process of its own (its /_emulator/stats count the Batch requests), one node
with 4 task slots, and a Prefect server. Each measured run is `topn run FOLDER --json` in a process of its own
(peak RSS from wait4), on files made at run time from shared/corpus; every run's files are new, so each run
uploads and counts everything. For each size it runs the defaults (files packed into tasks) and the baseline,
one file per task (`--files-per-task 1`), and prints both with the ratios, then where the packed run's time
went (its Prefect task runs). Then one 1 GB file end to end against the task application's own time on it.

Each run also says where its time and CPU went: reading the files, their upload, its job's watch and the
rest, each with its wall time, the core-seconds of the flow, Azurite, the emulator with its nodes' task
processes and the Prefect server, and how busy the whole machine was (bench/cpu.py samples /proc every
second).

With --fresh, as a new user runs it: no Prefect server is running and no pool exists before the first size's
first run (`topn run` starts its background server and the pool), then a second run of new files; the
baseline and the warm-up are skipped. Every size is set against the raw client's floor measured in the
same run: the plain azure-storage-blob client putting 2,000 of the same small files from 16 threads (its
PUT/s and CPU per PUT), and topn's own upload path on another 2,000 in this process (CPU per PUT, and its
PUT/s with nothing beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpu import CORES, CpuSampler  # noqa: E402

from tests.stack import free_port, spawn, start_azurite, stop, wait_for  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
SAMPLE = ROOT / "data" / "sample"
LARGE_BYTES = 80 << 20  # larger than a task's default 64 MiB: each is a task of its own
POLL_OPERATIONS = ("Job_GetTaskCounts", "get_job_task_counts", "job_task_counts")


@dataclass
class Run:
    label: str
    files: int
    bytes: int
    seconds: float
    batch: int
    polls: int
    blob: int
    tasks: int
    rss_mb: float
    result: dict
    cpu: float = 0.0
    steps: list[Step] | None = None  # where the time and the CPU went

    def row(self) -> str:
        other = self.batch - self.polls
        return (f"{self.label:<22} {self.seconds:>8.1f} {self.files / self.seconds:>8.0f} "
                f"{self.bytes / self.seconds / 1e6:>7.1f} {self.blob / self.files:>9.2f} {other / self.files:>9.3f} "
                f"{self.polls:>6} {self.tasks:>7} {self.rss_mb:>7.0f} {self.cpu:>6.1f}")  # fmt: skip


@dataclass
class Step:
    """A span of a run: its wall time, how busy the machine was and each service's CPU, in core-seconds."""

    name: str
    seconds: float
    busy: float
    cpu: dict[str, float]

    def line(self) -> str:
        share = self.busy / (self.seconds * CORES) if self.seconds else 0.0
        services = "  ".join(f"{k} {v:5.1f}" for k, v in self.cpu.items())
        busy = f"machine {self.busy:5.1f} ({share:.0%} of {CORES} cores)"
        return f"  {self.name:<18} {self.seconds:6.1f} s  {services}  {busy}"


HEADER = (f"{'run':<22} {'wall s':>8} {'files/s':>8} {'MB/s':>7} {'blob/file':>9} {'batch/file':>9} "
          f"{'polls':>6} {'tasks':>7} {'RSS MB':>7} {'CPU s':>6}")  # fmt: skip


def corpus_text() -> bytes:
    texts = [p.read_bytes() for p in sorted(CORPUS.rglob("*.txt"))] or [p.read_bytes() for p in SAMPLE.iterdir()]
    return b"\n".join(texts)


def make_files(folder: Path, count: int, large: int, seed: int, tag: str, text: bytes) -> tuple[int, int]:
    """`count` files of 2-20 KB and `large` files of LARGE_BYTES, each starting with a line of its own: with
    the same seed, files of two tags hold the same words but for the tag, so that both upload anew."""
    rng, total = random.Random(seed), 0
    for i in range(count):
        size = rng.randint(2_000, 20_000)
        start = rng.randrange(0, len(text) - size)
        path = folder / f"d{i // 1000:03}" / f"f{i:06}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = f"{tag} file {i}\n".encode() + text[start : start + size]
        path.write_bytes(data)
        total += len(data)
    for i in range(large):
        total += write_large(folder / f"large-{i}.txt", LARGE_BYTES, f"{tag} large {i}", text)
    return count + large, total


def write_large(path: Path, size: int, tag: str, text: bytes) -> int:
    with open(path, "wb") as out:
        out.write(f"{tag}\n".encode())
        written = 0
        while written < size:
            written += out.write(text[: size - written])
    return path.stat().st_size


class Stack:
    """Azurite with an access log, the emulator in its own process, a Prefect server: all on free ports."""

    def __init__(self, work: Path, fresh: bool = False) -> None:
        self.work, self.fresh = work, fresh
        self.access_log = work / "azurite-access.log"
        self.azurite = start_azurite(access_log=self.access_log)
        self.batch_port, self.prefect_port = free_port(), free_port()
        python = str(ROOT / ".venv" / "bin" / "python")
        self.emulator = spawn([python, "-m", "batch_emulator", "--port", str(self.batch_port),
                               "--data-dir", str(work / "emulator"), "--boot-seconds", "0.2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        self.env = {**os.environ, "TOPN_LOCAL_BLOB_PORT": str(self.azurite.port),
                    "TOPN_LOCAL_BATCH_PORT": str(self.batch_port), "TOPN_LOCAL_DIR": str(work / "topn"),
                    "TOPN_DEDICATED_NODES": "1", "TOPN_TASK_SLOTS_PER_NODE": "4", "TOPN_POOL_ID": "bench-scale",
                    "PREFECT_API_URL": f"http://127.0.0.1:{self.prefect_port}/api", "DO_NOT_TRACK": "1",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(work / "prefect"),
                    "PREFECT_SERVER_API_PORT": str(self.prefect_port)}  # fmt: skip
        self.prefect = None
        if fresh:  # `topn run` starts the server `topn server start` keeps, on this port, the first time
            del self.env["PREFECT_API_URL"]
            self.env["TOPN_LOCAL_PREFECT_PORT"] = str(self.prefect_port)
        else:
            self.prefect = spawn([str(ROOT / ".venv" / "bin" / "prefect"), "server", "start", "--host", "127.0.0.1",
                                  "--port", str(self.prefect_port)], env=self.env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: self._answers(f"http://127.0.0.1:{self.batch_port}/_emulator/stats"), 120, what="emulator")
        if not fresh:
            wait_for(lambda: self._answers(f"http://127.0.0.1:{self.prefect_port}/api/health"), 180, what="Prefect")

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except OSError:
            return False

    def batch_stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.batch_port}/_emulator/stats", timeout=30) as r:
            return json.load(r)

    def blob_requests(self) -> int:
        with open(self.access_log, "rb") as f:
            return sum(1 for line in f if b'" 2' in line or b'" 3' in line or b'" 4' in line or b'" 5' in line)

    def run(self, label: str, folder: Path, files: int, size: int, *args: str) -> Run:
        before, blob_before = self.batch_stats()["requests"], self.blob_requests()
        out_path, err_path = self.work / "run.out", self.work / "run.err"
        flow: list[int] = []
        with open(out_path, "wb") as out, open(err_path, "wb") as err, CpuSampler(self._services(flow)) as cpu:
            began, wall = time.perf_counter(), time.time()
            process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "topn"), "run", str(folder), "--json", *args],
                                       env=self.env, cwd=self.work, stdout=out, stderr=err)  # fmt: skip
            flow.append(process.pid)
            _, status, usage = os.wait4(process.pid, 0)  # not Popen.wait: wait4 tells this child's peak RSS
            seconds, ended = time.perf_counter() - began, time.time()
        process.returncode = os.waitstatus_to_exitcode(status)
        rss = usage.ru_maxrss / 1024
        if process.returncode != 0:
            raise SystemExit(f"{label}: topn run failed:\n{err_path.read_text(errors='replace')[-3000:]}")
        out = out_path.read_bytes()
        after = self.batch_stats()["requests"]
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        polls = sum(v for k, v in delta.items() if any(p.lower() in k.lower() for p in POLL_OPERATIONS))
        result = json.loads(out)
        steps = self.steps(cpu, wall, ended)
        return Run(label, files, size, seconds, sum(delta.values()), polls, self.blob_requests() - blob_before,
                   result["stats"]["tasks_added"], rss, result, usage.ru_utime + usage.ru_stime, steps)  # fmt: skip

    def _services(self, flow: list[int]) -> dict:
        """The processes whose CPU the bench follows: the flow's (once started), Azurite, the emulator with its
        nodes' task processes, and the Prefect server (in a fresh run, once `topn run` started it)."""
        pid_file = self.work / "topn" / "prefect-server.pid"

        def prefect() -> int | None:
            if self.prefect is not None:
                return self.prefect.pid
            return int(pid_file.read_text()) if pid_file.exists() else None

        return {"flow": lambda: flow[0] if flow else None, "Azurite": lambda: self.azurite.process.pid,
                "emulator+nodes": lambda: self.emulator.pid, "Prefect": prefect}  # fmt: skip

    def steps(self, cpu: CpuSampler, began: float, ended: float) -> list[Step]:
        """The run's long steps (reading its files, uploading them and the job's watch, from the Prefect API; a
        step of several task runs is their sum) and the rest."""
        steps, runs = [], self.task_spans()
        for step in ("read-inputs", "upload-inputs", "watch-job"):
            spans = [(start, end) for name, start, end in runs if name.split(" ")[0] == step]
            parts = [Step(step, end - start, *cpu.between(start, end)) for start, end in spans]
            if parts:
                name = f"{step} x{len(parts)}" if len(parts) > 1 else step
                cpu_of = {k: sum(p.cpu[k] for p in parts) for k in parts[0].cpu}
                steps.append(Step(name, sum(p.seconds for p in parts), sum(p.busy for p in parts), cpu_of))
        busy, whole = cpu.between(began, ended)
        rest = {k: v - sum(s.cpu[k] for s in steps) for k, v in whole.items()}
        steps.append(Step("the rest", ended - began - sum(s.seconds for s in steps),
                          busy - sum(s.busy for s in steps), rest))  # fmt: skip
        return steps

    def task_spans(self) -> list[tuple[str, float, float]]:
        """The task runs of the latest flow run: name, start and end (time.time() values)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        with get_client(sync_client=True) as client:
            run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        return [(t.name, t.start_time.timestamp(), t.end_time.timestamp()) for t in tasks
                if t.start_time and t.end_time]  # fmt: skip

    def where_time_went(self) -> list[tuple[str, float]]:
        """The task runs of the latest flow run and their durations, from the Prefect API."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        with get_client(sync_client=True) as client:
            run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        steps: dict[str, list[float]] = {}  # a step of several task runs (upload-inputs, add-tasks) as one
        for t in tasks:
            if t.total_run_time:
                steps.setdefault(t.name.split(" ")[0], []).append(t.total_run_time.total_seconds())
        spans = [(f"{name} x{len(s)}" if len(s) > 1 else name, sum(s)) for name, s in steps.items()]
        return sorted(spans, key=lambda s: -s[1])[:12]

    def close(self) -> None:
        if self.fresh:
            subprocess.run([str(ROOT / ".venv" / "bin" / "topn"), "server", "stop"], env=self.env, cwd=self.work,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)  # fmt: skip
        for process in (self.prefect, self.emulator, self.azurite.process):
            if process is not None:
                stop(process)


@dataclass
class Floor:
    """The raw client's rate on small files, and CPU per PUT of it and of topn's upload path."""

    puts_per_s: float
    raw_cpu_ms: float
    topn_cpu_ms: float
    topn_puts_per_s: float

    def line(self) -> str:
        return (f"raw client floor: {self.puts_per_s:.0f} PUT/s from 16 threads, {self.raw_cpu_ms:.2f} ms of CPU "
                f"per PUT; topn's upload path: {self.topn_cpu_ms:.2f} ms of CPU per PUT "
                f"({self.topn_cpu_ms / self.raw_cpu_ms:.2f}x the raw client's), {self.topn_puts_per_s:.0f} PUT/s "
                f"({self.topn_puts_per_s / self.puts_per_s:.2f}x its rate; 10,000 files in "
                f"{10_000 / self.topn_puts_per_s:.1f} s) with nothing beside it")  # fmt: skip


def measure_floor(stack: Stack, work: Path, text: bytes, n: int = 2_000) -> Floor:
    """The plain azure-storage-blob client's PUT/s and CPU per PUT on `n` small files from 16 threads, and
    topn's read_inputs and upload_inputs on `n` others, in this process (CPU per PUT)."""
    import logging
    from concurrent.futures import ThreadPoolExecutor
    from unittest import mock

    from azure.storage.blob import BlobServiceClient

    from topn.tasks import storage
    from topn.tasks.settings import load_settings

    settings = load_settings()
    raw, ours = work / "floor-raw", work / "floor-topn"
    make_files(raw, n, 0, 7, "floor-raw", text)
    make_files(ours, n, 0, 7, "floor-topn", text)
    name, key = settings.storage_account
    container = BlobServiceClient(settings.blob_url, {"account_name": name, "account_key": key}).get_container_client(
        "floor"
    )
    container.create_container()
    files = sorted(raw.rglob("*.txt"))

    def put(path: Path) -> None:
        with open(path, "rb") as f:
            container.upload_blob(path.name, f)

    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # 16 threads on its 10 connections
    began, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, files))
    seconds, raw_cpu = time.perf_counter() - began, time.process_time() - cpu
    storage.ensure_containers.fn(settings, [settings.input_container])
    cpu = time.process_time()
    with mock.patch.object(storage, "get_run_logger", lambda: logging.getLogger("bench")):
        inputs = storage.read_inputs.fn(settings, [str(ours)])  # its hashing is in the CPU per PUT
        began = time.perf_counter()
        storage.upload_inputs.fn(settings, inputs)
        topn_seconds = time.perf_counter() - began
    topn_cpu = time.process_time() - cpu
    return Floor(n / seconds, raw_cpu * 1000 / n, topn_cpu * 1000 / n, n / topn_seconds)


def upload_line(run: Run, spans: list[tuple[str, float]], floor: Floor) -> str:
    upload = next((seconds for name, seconds in spans if name.startswith("upload-inputs")), None)
    if upload is None:
        return "upload-inputs: not among the run's task runs"
    return (f"upload-inputs {upload:.1f} s for {run.files:,} files ({run.files / upload:.0f} PUT/s): "
            f"{run.files / floor.puts_per_s / upload:.2f}x the raw client's floor rate")  # fmt: skip


def taskapp_seconds(path: Path, jobs: str) -> float:
    """The task application's own time on a file: one `count` on this machine, no Batch, no storage."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "taskapp" / "src")}
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "topn_taskapp", "count", "--top", "10", "--jobs", jobs, "--output",
                    str(path.with_suffix(".json")), str(path)], env=env, check=True)  # fmt: skip
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="numbers of small files (default 1000,10000)")
    parser.add_argument("--large", type=int, default=2, help=f"files of {LARGE_BYTES >> 20} MiB added to each")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the single large file in GB (0: none)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-file-per-task runs")
    parser.add_argument("--fresh", action="store_true", help="no Prefect server nor pool before the first run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    text = corpus_text()
    stack = Stack(work, fresh=args.fresh)
    os.environ.update(stack.env)  # before Prefect loads here: its client talks to the bench's server
    # Here alone (runs get stack.env): the server the first `topn run` starts, read after it ran.
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{stack.prefect_port}/api"
    try:
        floor = measure_floor(stack, work, text)
        print(floor.line(), flush=True)
        if not args.fresh:
            stack.run("warm-up (pool, wheel)", SAMPLE, 11, 0)
        for number, n in enumerate(map(int, args.sizes.split(","))):
            runs = []
            modes = [("packed", "runxa", [])]
            if args.fresh and number == 0:
                modes = [("fresh", "runxa", []), ("second run", "runxc", [])]
            elif not args.no_baseline and not args.fresh:
                modes.append(("1 file/task", "runxb", ["--files-per-task", "1"]))
            for label, tag, extra in modes:
                folder = work / f"files-{n}-{tag}"
                files, size = make_files(folder, n, args.large, n, tag, text)
                runs.append(stack.run(f"{n:,} {label}", folder, files, size, *extra))
                spans = stack.where_time_went()
                uploads = upload_line(runs[-1], spans, floor)
                where = f"{label} run, Prefect task runs: " + ", ".join(f"{n} {s:.1f}s" for n, s in spans)
                cpu = "where the time and the CPU went (core-seconds):\n" + "\n".join(s.line() for s in runs[-1].steps)
                print(f"{n:,} {label}: {runs[-1].seconds:.1f} s; {uploads}\n{where}\n{cpu}", flush=True)
            block = [f"\n{n:,} small files + {args.large} x {LARGE_BYTES >> 20} MiB", HEADER, *(r.row() for r in runs)]
            if len(runs) == 2 and not (args.fresh and number == 0):
                packed, base = runs
                same = all(packed.result[k] == base.result[k] for k in ("top", "words", "distinct", "files_counted"))
                block.append(f"{'ratio baseline/packed':<22} {base.seconds / packed.seconds:>7.1f}x "
                             f"blob {base.blob / packed.blob:.1f}x, batch {base.batch / packed.batch:.1f}x, "
                             f"tasks {base.tasks / max(packed.tasks, 1):.0f}x; same result: {same}")  # fmt: skip
            print("\n".join(block), flush=True)
        if args.gb:
            folder = work / "one-large"
            folder.mkdir()
            big = folder / "large.txt"
            size = write_large(big, int(args.gb * 1e9), "one large", text)
            own, cores = taskapp_seconds(big, "1"), taskapp_seconds(big, "0")
            run = stack.run(f"1 x {size / 1e9:.1f} GB", folder, 1, size)
            block = [
                f"\none {size / 1e9:.1f} GB file",
                HEADER,
                run.row(),
                f"task application alone: {own:.1f} s in one process ({cores:.1f} s on every core, as on the node); "
                f"end to end / alone: {run.seconds / own:.2f}x",
                "Prefect task runs: " + ", ".join(f"{n} {s:.1f}s" for n, s in stack.where_time_went()),
            ]
            print("\n".join(block), flush=True)
    finally:
        stack.close()


if __name__ == "__main__":
    main()
