"""The 100,000-file path without 100,000 processes: its plan, its 1,011 tasks added to a real Batch job (on a
pool with no node, so nothing runs), and its result read from 100,000 rows."""

from __future__ import annotations

import io
import json
import uuid

from azure.batch import BatchClient
from azure.batch import models as m
from batch_emulator.server import Emulator

from topn.flows import wordcount
from topn.flows.result import MAX_FILE_ROWS, file_results
from topn.tasks import batch, lineage
from topn.tasks.inputs import InputBlob
from topn.tasks.packing import Packing
from topn.tasks.settings import load_settings

FILES = 100_000


def test_100000_files_plan_add_and_result(stack_env: dict, emulator: Emulator) -> None:
    inputs = [InputBlob(f"d{i // 1000:03}/f{i:06}.txt", "in", f"d{i // 1000:03}/f{i:06}.txt", 2_000, f"e{i}")
              for i in range(FILES)]  # fmt: skip
    packs, _ = lineage.arrange(inputs, lineage.Catalog(), Packing())
    plan = wordcount.make_plan(inputs, packs, 10, "v" * 16, Packing())
    assert (len(plan.counts), len(plan.steps())) == (1_000, 1_011)
    url = "http://127.0.0.1:1/devstoreaccount1/c?sv=x&sig=" + "s" * 60
    specs = []
    for step, waits in plan.todo(set()):
        if step.kind == wordcount.COUNT:
            sources = [wordcount.Source(inputs[i], f"{url}&b={i}") for i in step.inputs]
            specs.append(wordcount.count_task(step, sources, (url, url), "job", plan, 10, "v" * 16))
        else:
            specs.append(wordcount.merge_task(step, waits, url, url, "job", 10, "v" * 16))

    client = BatchClient(emulator.endpoint, emulator.credential())
    pool, job = f"scale-path-{uuid.uuid4().hex[:8]}", f"scale-path-{uuid.uuid4().hex[:8]}"
    s = load_settings()
    client.create_pool(m.BatchPoolCreateOptions(
        id=pool, vm_size=s.vm_size, target_dedicated_nodes=0,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=m.BatchVmImageReference(publisher=s.image_publisher, offer=s.image_offer,
                                                    sku=s.image_sku, version="latest"),
            node_agent_sku_id=s.node_agent_sku_id)))  # fmt: skip
    try:
        client.create_job(m.BatchJobCreateOptions(id=job, pool_info=m.BatchPoolInfo(pool_id=pool),
                                                  uses_task_dependencies=True))  # fmt: skip
        assert batch.add_tasks.fn(s, job, specs) == (1_011, 1_011)
        counts = client.get_job_task_counts(job).task_counts
        assert (counts.active, counts.running, counts.completed) == (1_011, 0, 0)  # no node: nothing ran
        assert batch.add_tasks.fn(s, job, specs) == (0, 1_011)  # a resumed run adds nothing twice
    finally:
        client.begin_delete_job(job, polling_interval=1).result()
        client.begin_delete_pool(pool, polling_interval=1).result()

    rows = b"\n".join(
        json.dumps({"key": i.row_key, "file": i.name, "bytes": i.size, "words": n, "distinct": 1,
                    "top": [["w", n]], "skipped": None}).encode()
        for n, i in enumerate(inputs)
    )  # fmt: skip
    task_of = [""] * FILES
    for step in plan.counts:
        for i in step.inputs:
            task_of[i] = step.id
    files, missing = file_results(io.BytesIO(rows), [i.row_key for i in inputs], [i.name for i in inputs], task_of)
    assert missing == 0 and len(files) == MAX_FILE_ROWS  # every file is accounted for; the first rows are kept
    assert [f.words for f in files[:3]] == [0, 1, 2] and files[0].task_id == plan.counts[0].id
