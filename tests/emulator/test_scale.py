"""10,000 tasks in one job: added in parallel chunks, listed with paging, counted."""

from __future__ import annotations

import json
import urllib.request

from azure.batch import BatchClient
from azure.batch import models as m
from batch_emulator.server import Emulator

from tests.emulator.conftest import make_job, make_pool

N = 10_000


def test_ten_thousand_tasks(emulator: Emulator, client: BatchClient, uid: str) -> None:
    make_pool(client, uid, nodes=0)  # nothing runs: the job only holds its tasks
    make_job(client, uid, uid)
    tasks = [m.BatchTaskCreateOptions(id=f"task-{i:05}", command_line="/bin/true") for i in range(N)]
    client.create_tasks(uid, tasks, max_concurrency=4)
    counts = client.get_job_task_counts(uid).task_counts
    assert (counts.active, counts.running, counts.completed) == (N, 0, 0)
    before = json.load(urllib.request.urlopen(f"{emulator.endpoint}/_emulator/stats"))["requests"].get("list_tasks", 0)
    listed = [t.id for t in client.list_tasks(uid, select=["id"])]
    after = json.load(urllib.request.urlopen(f"{emulator.endpoint}/_emulator/stats"))["requests"]["list_tasks"]
    assert sorted(listed) == [t.id for t in tasks] and len(set(listed)) == N
    assert after - before == N // 1000  # pages of 1000 through odata.nextLink
    active = client.list_tasks(uid, filter="state eq 'active' and startswith(id, 'task-099')", max_results=50)
    assert len(list(active)) == 100
