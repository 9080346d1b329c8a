"""Task-run names that say what a run of a task works on (the Prefect UI lists them)."""

from __future__ import annotations

from typing import Any


def named(template: str, **sizes: str) -> Any:
    """A task_run_name: `template` formatted with the task's parameters, plus `sizes`: names of list
    parameters whose length it gives, `<name>_s` an "s" unless it is one, and `<name>_names` the last parts
    of its first three items (e.g. named("add-tasks {job_id}: {n:,} task{n_s}", n="tasks") gives
    "add-tasks j: 1 task"; named("upload-inputs {n_names}", n="paths") "upload-inputs a.txt, books +2 more")."""

    def name() -> str:
        from prefect.runtime import task_run

        parameters = dict(task_run.parameters)
        for key, value in sizes.items():
            parameters[key] = len(parameters.get(value) or [])
            parameters[f"{key}_s"] = "" if parameters[key] == 1 else "s"
            parameters[f"{key}_names"] = _names(parameters.get(value) or [])
        try:
            return template.format(**parameters)[:200]
        except (KeyError, AttributeError, IndexError):
            return template.split(" ", 1)[0]

    return name


def _names(items: list, shown: int = 3) -> str:
    names = [str(item).rstrip("/").rsplit("/", 1)[-1] or str(item) for item in items[:shown]]
    more = f" +{len(items) - shown:,} more" if len(items) > shown else ""
    return ", ".join(names) + more
