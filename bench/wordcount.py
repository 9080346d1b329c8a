"""Throughput and peak memory of the task application against a port of the seed sample's counter.

    ./dev bench                      # ~100 MB input for both, then a 1 GB input for the task application
    uv run python bench/wordcount.py --size-mb 100 --big-mb 0 --repeat 1

Inputs are built at run time by repeating the sample corpus. Each measurement is one fresh process
(the task application is single-threaded, so it uses one core); peak RSS comes from wait4().
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "sample"


def build_input(path: Path, size_mb: int) -> int:
    texts = [p.read_bytes() for p in sorted(CORPUS.rglob("*.txt"))]
    target, written = size_mb * 1_000_000, 0
    with open(path, "wb") as f:
        while written < target:
            for text in texts:
                f.write(text)
                written += len(text)
    return written


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS in MB of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {cmd[2:4]} failed with exit status {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def run(name: str, cmd: list[str], size: int, repeat: int) -> dict[str, float]:
    runs = [measure(cmd) for _ in range(repeat)]
    seconds = statistics.median(s for s, _ in runs)
    rss = max(r for _, r in runs)
    mbs = size / 1e6 / seconds
    print(f"  {name:<24} {size / 1e6:>8.0f} MB  {seconds:>7.2f} s  {mbs:>7.1f} MB/s  {rss:>8.1f} MB peak RSS")
    return {"mbs": mbs, "rss": rss}


def taskapp_cmd(path: Path, work: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "topn_taskapp",
        "count",
        "--top",
        "10",
        "--output",
        str(work / "out.json"),
        "--counts",
        str(work / "out.counts"),
        str(path),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=100, help="input for the comparison (default 100)")
    parser.add_argument("--big-mb", type=int, default=1000, help="input for the memory check; 0 skips it")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="topn-bench-") as tmp:
        work = Path(tmp)
        data = work / "input.txt"
        size = build_input(data, args.size_mb)
        print(f"word count, {size / 1e6:.0f} MB built from {CORPUS.relative_to(ROOT)}, median of {args.repeat}:")
        seed = run(
            "seed port (baseline)",
            [sys.executable, str(Path(__file__).with_name("seed_port.py")), str(data), "10"],
            size,
            args.repeat,
        )
        app = run("topn-taskapp", taskapp_cmd(data, work), size, args.repeat)
        print(f"  throughput ratio taskapp/seed: {app['mbs'] / seed['mbs']:.2f}x (goal >= 3x)")
        print(f"  peak RSS ratio seed/taskapp:   {seed['rss'] / app['rss']:.1f}x")
        if args.big_mb:
            size = build_input(data, args.big_mb)
            print(f"memory on a {size / 1e9:.2f} GB input (task application only, one run):")
            big = run("topn-taskapp", taskapp_cmd(data, work), size, 1)
            print(f"  peak RSS {big['rss']:.1f} MB (goal < 100 MB); throughput {big['mbs'] / seed['mbs']:.2f}x seed")


if __name__ == "__main__":
    main()
