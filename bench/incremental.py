"""What a scheduled run costs when 1% of its files are new: content-keyed reuse against a full recount.

    ./dev bench incremental [--files 10000] [--days 3] [--new 100] [--changed 3]

Starts its own stack (as `./dev bench scale` does: Azurite with an access log, the emulator in a process of
its own with 1 node x 4 slots, a Prefect server). Uploads `--files` small files (2-20 KB, made at run time
from shared/corpus) under `incoming/` with `topn upload`, counts them once (`topn run --prefix incoming/`),
then for each day adds `--new` files whose names sort among the old ones and rewrites `--changed` old ones,
and runs the same command (the scheduled run), then a full recount of the same prefix in the same state
(`--run-id`, which counts everything anew). Per run it prints the wall time, the input blobs the nodes
downloaded and all Blob requests (Azurite's access log), the count and merge tasks, and the node time of
the tasks (their start to end, from Batch), and per day the ratios of the scheduled run to the full recount.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from scale import ROOT, Stack, corpus_text

PREFIX = "incoming/"


@dataclass
class Day:
    label: str
    seconds: float
    downloads: int
    blob: int
    counts: int
    merges: int
    count_seconds: float
    merge_seconds: float
    result: dict

    @property
    def task_seconds(self) -> float:
        return self.count_seconds + self.merge_seconds

    def row(self) -> str:
        return (f"{self.label:<26} {self.seconds:>7.1f} {self.downloads:>9,} {self.blob:>8,} {self.counts:>6} "
                f"{self.merges:>6} {self.task_seconds:>8.1f} {self.count_seconds:>8.1f} "
                f"{self.merge_seconds:>8.1f}")  # fmt: skip


HEADER = (f"{'run':<26} {'wall s':>7} {'inputs dl':>9} {'blob req':>8} {'counts':>6} {'merges':>6} {'task s':>8} "
          f"{'count s':>8} {'merge s':>8}")  # fmt: skip


def write(folder: Path, names: list[str], rng: random.Random, text: bytes, tag: str) -> None:
    for name in names:
        size = rng.randint(2_000, 20_000)
        start = rng.randrange(0, len(text) - size)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{tag} {name}\n".encode() + text[start : start + size])


def input_downloads(stack: Stack) -> int:
    """GETs of single input blobs (the nodes' downloads; the flow only lists the container)."""
    marker = f'"GET /devstoreaccount1/topn-input/{PREFIX}'.encode()
    with open(stack.access_log, "rb") as f:
        return sum(1 for line in f if marker in line)


def topn(stack: Stack, *args: str) -> dict:
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "topn"), *args], env=stack.env, cwd=stack.work,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"topn {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout) if "--json" in args else {}


def task_seconds(stack: Stack, job_id: str) -> tuple[float, float]:
    """The node time of the job's count and merge tasks (each from its start to its end), read before the
    job goes."""
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.exceptions import ResourceNotFoundError
    from batch_emulator import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

    client = BatchClient(f"http://127.0.0.1:{stack.batch_port}", AzureNamedKeyCredential(DEV_ACCOUNT_NAME,
                                                                                         DEV_ACCOUNT_KEY))  # fmt: skip
    try:
        spans = [(t.id.startswith("merge"), (t.execution_info.end_time - t.execution_info.start_time).total_seconds())
                 for t in client.list_tasks(job_id) if t.execution_info and t.execution_info.end_time]  # fmt: skip
        client.begin_delete_job(job_id).result()
    except ResourceNotFoundError:  # no job (nothing to count): no node time
        return 0.0, 0.0
    return sum(s for merge, s in spans if not merge), sum(s for merge, s in spans if merge)


def run(stack: Stack, label: str, *extra: str) -> Day:
    downloads, blob = input_downloads(stack), stack.blob_requests()
    began = time.perf_counter()
    result = topn(stack, "run", "--prefix", PREFIX, "--json", "--keep-job", *extra)
    seconds = time.perf_counter() - began
    stats = result["stats"]
    return Day(label, seconds, input_downloads(stack) - downloads, stack.blob_requests() - blob,
               stats["count_tasks"], stats["merge_tasks"], *task_seconds(stack, stats["job_id"]), result)  # fmt: skip


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1%}" if b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="files on the first day (default 10,000)")
    parser.add_argument("--days", type=int, default=3, help="days after the first (default 3)")
    parser.add_argument("--new", type=int, default=100, help="new files a day (default 100)")
    parser.add_argument("--changed", type=int, default=3, help="old files rewritten a day (default 3)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    text, rng = corpus_text(), random.Random(1)
    stack = Stack(work)
    os.environ.update(stack.env)
    try:
        names = [f"d{i // 1000:03}/f{i * 10:07}.txt" for i in range(args.files)]
        write(work / "day0" / "files", names, rng, text, "day0")
        began = time.perf_counter()
        topn(stack, "upload", str(work / "day0" / "files"), "--prefix", PREFIX)
        print(f"{args.files:,} files uploaded under {PREFIX} in {time.perf_counter() - began:.1f} s", flush=True)
        first = run(stack, "day 0: first count")
        print(HEADER, first.row(), sep="\n", flush=True)
        for day in range(1, args.days + 1):
            folder = work / f"day{day}" / "files"
            fresh = [f"d{(k := rng.randrange(len(names))) // 1000:03}/f{k * 10 + day:07}.txt" for _ in range(args.new)]
            changed = rng.sample(names, args.changed)
            write(folder, fresh + changed, rng, text, f"day{day}")
            names += fresh
            topn(stack, "upload", str(folder), "--prefix", PREFIX)
            scheduled = run(stack, f"day {day}: scheduled")
            spans = stack.where_time_went()
            full = run(stack, f"day {day}: full recount", "--run-id", f"full-{day}")
            same = all(scheduled.result[k] == full.result[k] for k in ("top", "words", "distinct", "files_counted"))
            s = scheduled.result["stats"]
            print(scheduled.row(), full.row(), sep="\n")
            print("  scheduled run, Prefect task runs: " + ", ".join(f"{n} {t:.1f}s" for n, t in spans))
            print(f"{'  scheduled / full':<26} {ratio(scheduled.seconds, full.seconds):>7} "
                  f"{ratio(scheduled.downloads, full.downloads):>9} {ratio(scheduled.blob, full.blob):>8} "
                  f"{ratio(scheduled.counts, full.counts):>6} {ratio(scheduled.merges, full.merges):>6} "
                  f"{ratio(scheduled.task_seconds, full.task_seconds):>8} "
                  f"{ratio(scheduled.count_seconds, full.count_seconds):>8} "
                  f"{ratio(scheduled.merge_seconds, full.merge_seconds):>8}   same result: {same}; "
                  f"{s['new']} new, {s['changed']} changed, {s['counted']} counted, {s['reused']:,} reused",
                  flush=True)  # fmt: skip
        quiet = run(stack, "no change: scheduled")
        print(quiet.row(), "  (no job: the root's result is in storage)", sep="\n", flush=True)
    finally:
        stack.close()


if __name__ == "__main__":
    main()
