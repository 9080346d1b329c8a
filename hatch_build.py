"""topn's build hook: the task application's wheel, built from taskapp/ and shipped inside topn's wheel as
package data (topn/flows/wheels/), so nothing is built where topn runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ROOT = Path(__file__).resolve().parent


class TaskappWheel(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        spec = importlib.util.spec_from_file_location("build_wheel", ROOT / "taskapp" / "build_wheel.py")
        assert spec and spec.loader
        builder = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(builder)
        builder.build(ROOT / "topn" / "flows" / "wheels")
