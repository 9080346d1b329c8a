"""Azure's rare node events at random, for soak runs: a thread that, every `tick`, hits each node it may hit
with the chance a Poisson `rate` (events per node per `per` seconds) gives it. Seeded, so a run can be
replayed. Pre-emption (preemption.py) and unusable nodes (unusable.py) are two of them."""

from __future__ import annotations

import math
import random
import threading
from typing import TYPE_CHECKING

from batch_emulator.models import Node, Pool

if TYPE_CHECKING:
    from batch_emulator.service import BatchService


class RandomNodeEvents:
    """Subclasses say which nodes may be hit (`eligible`) and what a hit does (`hit`), under the lock."""

    name = "batch-random-events"

    def __init__(self, service: BatchService, rate: float, per: float, tick: float = 0.5, seed: int | None = None):
        self.service, self.rate, self.tick = service, rate, tick
        self._chance = 1 - math.exp(-rate * tick / per)  # per node and tick
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    def eligible(self, pool: Pool) -> list[Node]:
        raise NotImplementedError

    def hit(self, node: Node) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self.rate > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            with self.service.lock:
                if self.service.closed:
                    return
                for pool in self.service.active_pools():
                    for node in self.eligible(pool):
                        if self._random.random() < self._chance:
                            self.hit(node)
