"""Autoscale as the service runs it: the formula package evaluates; this samples each autoscale pool's metrics,
evaluates its formula every autoScaleEvaluationInterval and resizes the pool to the targets it sets."""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter
from datetime import timedelta

from batch_emulator import fields, formula, validation, wire
from batch_emulator.errors import BatchError
from batch_emulator.models import Pool, View
from batch_emulator.service.state import ServiceState


class AutoscaleOps(ServiceState):
    """Uses pools.py (active_pool, resize) and runtime.py (closed)."""

    def enable_autoscale(self, pool_id: str, body: dict) -> View:
        with self.lock:
            pool = self.active_pool(pool_id)
            spec = {**pool.spec, "enableAutoScale": True}
            if not pool.spec.get("enableAutoScale"):
                fields.require(body, "autoScaleFormula")
                if pool.allocation_state != "steady":
                    raise BatchError(409, "PoolBeingResized", "The pool is being resized.", PoolId=pool.id)
                spec.pop("autoScaleEvaluationInterval", None)
            for prop in ("autoScaleFormula", "autoScaleEvaluationInterval"):
                if body.get(prop) is not None:
                    spec[prop] = body[prop]
            self.check_autoscale_settings(spec)
            pool.spec = spec
            pool.touch()
            self.start_autoscale(pool)
            return pool.view()

    def disable_autoscale(self, pool_id: str) -> View:
        with self.lock:
            pool = self.active_pool(pool_id)
            dropped = ("autoScaleFormula", "autoScaleEvaluationInterval")
            pool.spec = {k: v for k, v in pool.spec.items() if k not in dropped}
            pool.spec["enableAutoScale"] = False
            self._scalers.pop(pool, None)
            pool.touch()
            return pool.view()

    def evaluate_autoscale(self, pool_id: str, body: dict) -> dict:
        """An AutoScaleRun of the formula on the pool as it is now, not applied; a bad formula is the run's error."""
        text = fields.require(body, "autoScaleFormula")
        with self.lock:
            pool = self.active_pool(pool_id)
            if not pool.spec.get("enableAutoScale"):
                message = "The pool does not have automatic scaling enabled."
                raise BatchError(409, "OperationInvalidForCurrentState", message, PoolId=pool.id)
            return formula.evaluate(str(text), self._pool_state(pool)).to_wire()

    def check_autoscale_settings(self, spec: dict) -> None:
        """Refuses a formula with a syntax error (400) and an interval out of range; stores the interval used."""
        try:
            formula.check(spec.get("autoScaleFormula"))
        except formula.FormulaError as e:
            raise BatchError(400, e.code, e.message, **e.values()) from None
        validation.autoscale_interval(spec, self.autoscale_min_interval)

    def start_autoscale(self, pool: Pool) -> None:
        """Evaluates now, then every autoScaleEvaluationInterval; samples every autoscale_sample_seconds.
        Call under the lock."""
        period = timedelta(seconds=self.autoscale_sample_seconds)
        scaler = self._scalers.setdefault(pool, formula.Schedule(formula.History(period)))
        now = time.monotonic()
        scaler.interval = fields.duration(pool.spec, "autoScaleEvaluationInterval").total_seconds()
        scaler.next_eval = now + scaler.interval
        if not scaler.history.samples:
            scaler.history.add(wire.now(), self._pool_metrics(pool))
            scaler.next_sample = now + self.autoscale_sample_seconds
        self._evaluate(pool)
        if self._autoscaler is None and not self.closed:
            self._autoscaler = threading.Thread(target=self._loop, name="batch-autoscale", daemon=True)
            self._autoscaler.start()

    def _evaluate(self, pool: Pool) -> None:
        run = formula.evaluate(pool.spec["autoScaleFormula"], self._pool_state(pool))
        pool.autoscale_run = run.to_wire()
        pool.touch()
        targets = (pool.spec.get("targetDedicatedNodes") or 0, pool.spec.get("targetLowPriorityNodes") or 0)
        if run.error is None and (run.target_dedicated, run.target_low_priority) != targets:
            wanted = {"targetDedicatedNodes": run.target_dedicated, "targetLowPriorityNodes": run.target_low_priority}
            pool.spec = {**pool.spec, **wanted}
            self.resize(pool, run.deallocation)

    def _loop(self) -> None:
        while not self.closed:
            time.sleep(min(0.1, self.autoscale_sample_seconds / 4))
            with self.lock:
                now = time.monotonic()
                for pool, scaler in list(self._scalers.items()):
                    try:
                        self._tick(pool, scaler, now)
                    except Exception:  # one pool's fault must not stop the others' autoscale
                        traceback.print_exc()

    def _tick(self, pool: Pool, scaler: formula.Schedule, now: float) -> None:
        if self.pools.get(pool.id.lower()) is not pool or pool.state != "active":
            del self._scalers[pool]
            return
        if now >= scaler.next_sample:
            scaler.history.add(wire.now(), self._pool_metrics(pool))
            scaler.next_sample = now + self.autoscale_sample_seconds
        if now >= scaler.next_eval:
            scaler.next_eval = now + scaler.interval
            self._evaluate(pool)

    def _pool_metrics(self, pool: Pool) -> dict[str, float]:
        counts: Counter[str] = Counter()
        for job in self.jobs.values():
            if job.state == "active" and job.pool_id.lower() == pool.id.lower():
                for task in job.tasks.values():
                    counts["running" if task.state in ("running", "preparing") else task.result or task.state] += 1
        usable = sum(n.state in ("idle", "running") for n in pool.nodes)
        return formula.metrics(counts["active"], counts["running"], counts["success"], counts["failure"], usable)

    def _pool_state(self, pool: Pool) -> formula.PoolState:
        scaler = self._scalers.get(pool)
        period = timedelta(seconds=self.autoscale_sample_seconds)
        return formula.PoolState(
            now=wire.now(),
            current_dedicated=sum(n.dedicated for n in pool.nodes),
            current_low_priority=sum(not n.dedicated for n in pool.nodes),
            target_dedicated=pool.spec.get("targetDedicatedNodes") or 0,
            target_low_priority=pool.spec.get("targetLowPriorityNodes") or 0,
            task_slots_per_node=pool.slots_per_node,
            live=self._pool_metrics(pool),
            history=scaler.history if scaler else formula.History(period),
        )
