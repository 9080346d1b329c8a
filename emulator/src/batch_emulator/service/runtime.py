"""Threads and timers: node work (downloads, processes, uploads) runs in reused threads outside the lock,
timers fire once; `halt` stops all of it and `wait` waits for what is still running."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import wait as wait_futures

from batch_emulator.service.state import ServiceState


class Runtime(ServiceState):
    @property
    def closed(self) -> bool:
        """True once `halt` ran: nothing starts any more."""
        return self._closed

    def background(self, target: Callable[..., object], *args: object) -> None:
        """Runs `target(*args)` in a node thread (unless halted), a failure printed, not lost."""
        with self.lock:
            if self._closed:
                return
            future = self._workers.submit(self._guarded, target, *args)
            self._work.add(future)
        future.add_done_callback(self._work.discard)

    @staticmethod
    def _guarded(target: Callable[..., object], *args: object) -> None:
        try:
            target(*args)
        except Exception:  # a bug in one node's work must not go unseen, nor stop the others
            traceback.print_exc()

    def later(self, seconds: float, target: Callable[..., object], *args: object) -> None:
        """Calls `target(*args)` once after `seconds`, in a timer thread (unless halted)."""
        if self._closed:
            return
        timer = threading.Timer(max(0.0, seconds), target, args)
        timer.daemon = True
        timer.start()

    def wait_until(self, done: Callable[[], bool], timeout: float = 30) -> None:
        """Waits (outside the lock, checking under it) until killed processes have reported back."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if done():
                    return
            time.sleep(0.02)

    def halt(self) -> None:
        """Stops every task and start task now; nothing starts any more. Their tasks go back to the queue.

        Each attempt is told first (so that it ends as requeued, not as failed by the kill), which kills
        its process; then the process table closes and kills whatever started in between, so none escapes.
        """
        with self.lock:
            self._closed = True
            runs = [t.run for j in self.jobs.values() for t in j.tasks.values() if t.run]
            runs += [n.start_run for p in self.pools.values() for n in p.nodes if n.start_run]
        for run in runs:
            run.cancel("requeue")
        self.processes.close()
        self._workers.shutdown(wait=False, cancel_futures=True)

    def close(self, timeout: float = 10) -> bool:
        """`halt`, then `wait`."""
        self.halt()
        return self.wait(timeout)

    def wait(self, timeout: float = 10) -> bool:
        """Waits up to `timeout` s for the node threads after `halt`; True if all ended in time."""
        with self.lock:
            work = list(self._work)
        return not wait_futures(work, timeout=timeout).not_done
