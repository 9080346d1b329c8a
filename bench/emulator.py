"""How fast the Batch emulator takes and runs tasks, through the official SDK 15.

    ./dev bench emulator
    uv run python bench/emulator.py --tasks 10000 --run-tasks 1000

Measures, in one run: tasks added per second (create_tasks, chunks of 100, 4 in parallel); listing
them all with paging; tasks run per second end to end (/bin/true on 2 nodes x 8 slots); and the
scheduler's own cost per task next to the cost of starting one process (the baseline).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import urllib.request

from azure.batch import BatchClient
from azure.batch import models as m
from batch_emulator.server import Emulator


def pool(client: BatchClient, pool_id: str, nodes: int, slots: int) -> None:
    client.create_pool(m.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes, task_slots_per_node=slots,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=m.BatchVmImageReference(publisher="canonical", offer="ubuntu-24_04-lts", sku="server"),
            node_agent_sku_id="batch.node.ubuntu 24.04")))  # fmt: skip
    while nodes and sum(n.state == "idle" for n in client.list_nodes(pool_id)) < nodes:
        time.sleep(0.05)


def tasks(n: int) -> list[m.BatchTaskCreateOptions]:
    return [m.BatchTaskCreateOptions(id=f"t{i:06}", command_line="/bin/true") for i in range(n)]


def process_start_seconds(n: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)
    return (time.perf_counter() - start) / n


def stats(emu: Emulator) -> dict:
    return json.load(urllib.request.urlopen(f"{emu.endpoint}/_emulator/stats"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks to add and list (default 10000)")
    parser.add_argument("--run-tasks", type=int, default=1_000, help="tasks to run end to end (default 1000)")
    args = parser.parse_args()
    with Emulator(boot_seconds=0.05) as emu:
        client = BatchClient(emu.endpoint, emu.credential())
        pool(client, "hold", 0, 1)
        client.create_job(m.BatchJobCreateOptions(id="add", pool_info=m.BatchPoolInfo(pool_id="hold")))
        batch = tasks(args.tasks)
        start = time.perf_counter()
        client.create_tasks("add", batch, max_concurrency=4)
        add_s = time.perf_counter() - start
        start = time.perf_counter()
        listed = sum(1 for _ in client.list_tasks("add", select=["id", "state"]))
        list_s = time.perf_counter() - start
        assert listed == args.tasks

        pool(client, "run", 2, 8)
        client.create_job(m.BatchJobCreateOptions(id="run", pool_info=m.BatchPoolInfo(pool_id="run")))
        before = stats(emu)["scheduler"]
        start = time.perf_counter()
        client.create_tasks("run", tasks(args.run_tasks), max_concurrency=4)
        while client.get_job_task_counts("run").task_counts.completed < args.run_tasks:
            time.sleep(0.05)
        run_s = time.perf_counter() - start
        after = stats(emu)["scheduler"]
    per_task = (after["seconds"] - before["seconds"]) / (after["tasksScheduled"] - before["tasksScheduled"])
    spawn = process_start_seconds()
    print("Batch emulator, SDK 15 over loopback HTTP:")
    print(f"  add {args.tasks} tasks (create_tasks, 4 in parallel): {add_s:6.2f} s  {args.tasks / add_s:8.0f} tasks/s")
    print(f"  list them with paging (1000 a page):        {list_s:6.2f} s  {args.tasks / list_s:8.0f} tasks/s")
    print(
        f"  run {args.run_tasks} tasks end to end (2 nodes x 8 slots): {run_s:6.2f} s  "
        f"{args.run_tasks / run_s:8.0f} tasks/s"
    )
    print(f"  scheduler cost per task: {per_task * 1e6:8.1f} us; one process start (baseline): {spawn * 1e6:8.1f} us")
    print(f"  ratio scheduler/process start: {per_task / spawn:.3f}")


if __name__ == "__main__":
    main()
