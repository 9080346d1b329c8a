"""What a run costs in node time, per pool mode: node-seconds while the run goes and until the pool is idle
(keep, autoscale) or gone (per-job).

    ./dev bench pools [--runs 3]

In one process: Azurite and the Batch emulator (autoscale evaluated every second on samples every 0.5 s:
the service's 5-minute minimum would make this take hours). Each mode counts the sample corpus anew
(`--runs` times, each with its own run id); a thread samples the pool's nodes every 0.1 s from the run's
start until, for autoscale, the pool is back at zero nodes. Prints node-seconds per run, the time the
pool still held nodes after the run, and what an idle day costs in each mode.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batch_emulator.server import Emulator  # noqa: E402

import topn.flows  # noqa: E402, F401 - telemetry off before Prefect loads
from tests.stack import start_azurite, stop  # noqa: E402

SAMPLE = ROOT / "data" / "sample"
TICK = 0.1


class NodeClock:
    """Integrates the number of nodes the pools whose ids start with `prefix` hold (any state but gone) over
    time, in a thread: one pool, or each run's own (per-job)."""

    def __init__(self, client, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        self.node_seconds, self.nodes = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            nodes = 0
            for pool in self.client.list_pools():
                if pool.id.startswith(self.prefix):
                    with contextlib.suppress(Exception):  # the pool went meanwhile
                        nodes += len(list(self.client.list_nodes(pool.id)))
            self.nodes = nodes
            now = time.monotonic()
            self.node_seconds += self.nodes * (now - last)
            last = now
            time.sleep(TICK)

    def __enter__(self) -> NodeClock:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _nodes(client, prefix: str) -> int:
    with NodeClock(client, prefix) as clock:
        time.sleep(TICK)
    return clock.nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (default 3)")
    args = parser.parse_args()
    azurite = start_azurite()
    emulator = Emulator(data_dir=tempfile.mkdtemp(prefix="bench-pools-"), boot_seconds=0.2,
                        autoscale_min_interval=1, autoscale_sample_seconds=0.5).start()  # fmt: skip
    os.environ.update({"TOPN_LOCAL_BLOB_PORT": str(azurite.port),
                       "TOPN_LOCAL_BATCH_PORT": emulator.endpoint.rsplit(":", 1)[1],
                       "TOPN_LOCAL_DIR": tempfile.mkdtemp(prefix="bench-pools-topn-"), "TOPN_DEDICATED_NODES": "2",
                       "TOPN_TASK_SLOTS_PER_NODE": "2", "TOPN_AUTOSCALE_INTERVAL": "PT1S",
                       "TOPN_AUTOSCALE_IDLE": "PT2S"})  # fmt: skip
    from azure.batch import BatchClient

    from topn.flows.topn import topn

    client = BatchClient(emulator.endpoint, emulator.credential())
    rows = []
    try:
        for mode in ("keep", "autoscale", "per-job"):
            os.environ["TOPN_POOL_ID"] = f"bench-{mode}"
            topn(paths=[str(SAMPLE)], top=5, run_id=f"warm-{mode}", files_per_task=1, pool_mode=mode)
            spans, tails, seconds = [], [], []
            for run in range(args.runs):
                while mode != "keep" and _nodes(client, f"bench-{mode}"):  # start from zero nodes
                    time.sleep(TICK)
                with NodeClock(client, f"bench-{mode}") as clock:
                    began = time.monotonic()
                    topn(paths=[str(SAMPLE)], top=5, run_id=f"{mode}-{run}", files_per_task=1, pool_mode=mode)
                    ended = time.monotonic()
                    while mode != "keep" and clock.nodes:  # until the pool is back at zero, or gone
                        time.sleep(TICK)
                    tails.append(time.monotonic() - ended)
                spans.append(clock.node_seconds)
                seconds.append(ended - began)
            rows.append((mode, statistics.median(seconds), statistics.median(spans), statistics.median(tails)))
    finally:
        emulator.stop()
        stop(azurite.process)
    print(
        f"\ntopn on the sample corpus (11 files, one task each), pool of up to 2 nodes x 2 slots, median of {args.runs}"
    )
    print(f"{'mode':<10} {'run':>7} {'node-s per run':>15} {'nodes kept after':>17} {'idle node-s/day':>16}")
    for mode, run_s, node_s, tail in rows:
        idle = "172,800 (2 nodes)" if mode == "keep" else "0"  # per-job: no pool at all between runs
        print(f"{mode:<10} {run_s:>6.1f}s {node_s:>15.1f} {tail:>16.1f}s {idle:>16}")


if __name__ == "__main__":
    main()
