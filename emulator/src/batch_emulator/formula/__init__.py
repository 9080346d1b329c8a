"""Autoscale formulas as the Batch service reads them: parsing (syntax.py), evaluation (evaluation.py, with the
functions and sample methods of functions.py) and the pool's metric samples (values.py).

Plain Python, no HTTP and no locks: the service calls `check` (a create or enable request), `evaluate`
(evaluateautoscale and every periodic run) and `History.add` (every sampling tick).

The language (learn.microsoft.com/azure/batch/batch-automatic-scaling): statements separated by `;` (or a
line break after a complete statement), each `variable = expression`. Variables are service-defined
(`$TargetDedicatedNodes`, `$PendingTasks`, ...) or the user's own (`$myVar` or `myVar`). Expressions have
numbers, strings, `+ - * /`, `< <= > >= == !=`, `&& || !`, `?:`, parentheses, function calls, the
`TimeInterval_*` constants, sample methods (`$PendingTasks.GetSample(TimeInterval_Minute * 5)`) and
timestamp members (`time().hour`). Comments are `// ...` and `/* ... */`.

Values are doubles, vectors of doubles (Python lists), strings, time intervals (timedelta) and timestamps
(datetime). A true comparison is 1.0, a false one 0.0; any non-zero double is true.
"""

from __future__ import annotations

from batch_emulator.formula.evaluation import evaluate
from batch_emulator.formula.syntax import (
    DEALLOCATION,
    DEFAULT_SAMPLE_SECONDS,
    EVALUATION_ERROR,
    MAX_LENGTH,
    MAX_NODES,
    MAX_STATEMENTS,
    SAMPLED,
    SYNTAX_ERROR,
    TOO_LONG,
    FormulaError,
    check,
)
from batch_emulator.formula.values import History, PoolState, Run, Schedule, metrics

__all__ = [
    "DEALLOCATION",
    "DEFAULT_SAMPLE_SECONDS",
    "EVALUATION_ERROR",
    "MAX_LENGTH",
    "MAX_NODES",
    "MAX_STATEMENTS",
    "SAMPLED",
    "SYNTAX_ERROR",
    "TOO_LONG",
    "FormulaError",
    "History",
    "PoolState",
    "Run",
    "Schedule",
    "check",
    "evaluate",
    "metrics",
]
