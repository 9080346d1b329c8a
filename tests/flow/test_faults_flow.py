"""The flow through transient faults on every wire: its own calls, and the nodes' transfers to storage.

A FaultProxy sits in front of Azurite and another in front of the Batch emulator. The flow talks to the
proxies, and so do the nodes: their SAS URLs point at the blob proxy.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from batch_emulator.server import Emulator

from tests.conftest import SAMPLE
from tests.faults import FaultProxy
from tests.stack import Azurite
from topn.flows.topn import topn

SAMPLE_TOP = [("the", 12495), ("and", 6396), ("of", 5858), ("to", 4678), ("a", 4111)]


@pytest.fixture
def faulty(settings_env: pytest.MonkeyPatch, azurite: Azurite, emulator: Emulator) -> Iterator[tuple]:
    """Proxies in front of Azurite and the emulator, failing nothing until a test sets their rate."""
    batch_port = int(emulator.endpoint.rsplit(":", 1)[1])
    admin = lambda _method, path: path.startswith("/_emulator/")  # noqa: E731
    with FaultProxy(azurite.port, 0, 0) as blob, FaultProxy(batch_port, 0, 0, spare=admin) as batch:
        settings_env.setenv("TOPN_LOCAL_BLOB_PORT", str(blob.port))
        settings_env.setenv("TOPN_LOCAL_BATCH_PORT", str(batch.port))
        settings_env.setenv("TOPN_POOL_ID", "faults")
        yield blob, batch


@pytest.mark.parametrize(("rate", "seed"), [(0.05, 1), (0.05, 2), (0.15, 3), (0.15, 4), (0.15, 5)])
def test_the_flow_completes_exactly_through_faults(
    faulty: tuple,
    emulator: Emulator,
    settings_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    rate: float,
    seed: int,
) -> None:
    blob, batch = faulty
    for proxy, offset in ((blob, 0), (batch, 1000)):
        proxy.seed, proxy.rate = seed + offset, rate
    started = emulator.service.scheduled
    # Odd seeds: one task per file and merges of 4, so that faults also hit a merge tree of 15 tasks.
    files_per_task = 1 if seed % 2 else None
    if files_per_task:
        settings_env.setenv("TOPN_MERGE_FAN_IN", "4")
    # An explicit run id: every file is counted anew, none reused from an earlier test's outputs.
    result = topn(paths=[str(SAMPLE)], top=5, run_id=f"faults-{int(rate * 100)}-{seed}", delete_outputs=True,
                  files_per_task=files_per_task)  # fmt: skip
    executions = emulator.service.scheduled - started
    assert (result.files_counted, result.words, result.distinct) == (11, 196715, 12630)
    assert result.top == SAMPLE_TOP
    faults = sum(blob.faults.values()) + sum(batch.faults.values())
    assert faults > 0, "no fault was injected: the test proves nothing"
    with capsys.disabled():
        print(f"\n  {rate:.0%} faults, seed {seed}: {faults} faults in {blob.requests + batch.requests} requests, "
              f"{executions} task executions for {result.stats.tasks_added} tasks", end="")  # fmt: skip
