"""What transient faults cost a run: the topn flow on the sample corpus at 0%, 5% and 15% injected faults.

    ./dev bench faults [--runs 3]

In one process: Azurite, the Batch emulator, and a FaultProxy (tests/faults.py) in front of each, so the
flow's own calls and the nodes' transfers all cross faults (503, 500, 429, connections reset before the
request or in the middle of the answer). Each run counts every file anew (its own run id). Prints the
median run time per fault rate as a ratio to the fault-free time, the faults injected, and the task
executions (more than the run's tasks means a task ran again). Flow-run heartbeats are off (see below).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batch_emulator.server import Emulator  # noqa: E402

import topn.flows  # noqa: E402, F401 - telemetry off before Prefect loads
from tests.faults import FaultProxy  # noqa: E402
from tests.stack import start_azurite, stop  # noqa: E402

SAMPLE = ROOT / "data" / "sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per fault rate (default 3)")
    parser.add_argument("--retry-after", type=int, help="Retry-After on 429 and 503, in seconds (default: none)")
    args = parser.parse_args()
    azurite = start_azurite()
    emulator = Emulator(data_dir=tempfile.mkdtemp(prefix="bench-faults-"), boot_seconds=0.05).start()
    batch_port = int(emulator.endpoint.rsplit(":", 1)[1])
    admin = lambda _method, path: path.startswith("/_emulator/")  # noqa: E731
    try:
        with (
            FaultProxy(azurite.port, 0, 0, retry_after=args.retry_after) as blob,
            FaultProxy(batch_port, 0, 0, spare=admin, retry_after=args.retry_after) as batch,
        ):
            os.environ.update({"TOPN_LOCAL_BLOB_PORT": str(blob.port), "TOPN_LOCAL_BATCH_PORT": str(batch.port),
                               "TOPN_LOCAL_DIR": tempfile.mkdtemp(prefix="bench-faults-topn-"),
                               "TOPN_DEDICATED_NODES": "2", "TOPN_TASK_SLOTS_PER_NODE": "4"})  # fmt: skip
            from prefect import flow_engine

            from topn.flows.topn import topn

            # Prefect's heartbeat thread makes each run wait up to 1 s as it ends: a whole-second noise on
            # runs of a few seconds that would hide what retries cost. Off here, and only here.
            flow_engine.BaseFlowRunEngine.heartbeat_seconds = property(lambda _self: None)

            topn(paths=[str(SAMPLE)], top=5, run_id="warm-up")  # the pool, the wheel, Prefect: not measured
            rows = []
            for rate in (0.0, 0.05, 0.15):
                times, faults, executions = [], 0, 0
                for run in range(args.runs):
                    for proxy, offset in ((blob, 0), (batch, 1000)):
                        proxy.seed, proxy.rate = 100 * run + offset + int(rate * 100), rate
                        proxy.reset_counts()
                    scheduled, began = emulator.service.scheduled, time.perf_counter()
                    result = topn(paths=[str(SAMPLE)], top=5, run_id=f"bench-{int(rate * 100)}-{run}")
                    tasks = result.stats.tasks_added
                    times.append(time.perf_counter() - began)
                    assert result.top[0] == ("the", 12495) and result.words == 196715, "wrong result"
                    faults += sum(blob.faults.values()) + sum(batch.faults.values())
                    executions += emulator.service.scheduled - scheduled
                rows.append((rate, statistics.median(times), faults / args.runs, executions / args.runs))
    finally:
        emulator.stop()
        stop(azurite.process)
    base = rows[0][1]
    header = f"Retry-After: {args.retry_after} s on 429 and 503" if args.retry_after else "no Retry-After"
    print(
        f"\ntopn on the sample corpus (11 files, {tasks} tasks), median of {args.runs} runs per fault rate",
        f"({header})",
    )
    print(f"{'faults':>7} {'run time':>9} {'ratio':>6} {'faults/run':>11} {'task runs/run':>14}")
    for rate, seconds, faults, executions in rows:
        print(f"{rate:>7.0%} {seconds:>8.2f}s {seconds / base:>5.2f}x {faults:>11.1f} {executions:>14.1f}")


if __name__ == "__main__":
    main()
