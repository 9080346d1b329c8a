"""Runs the suites of older clients (azure-batch 14.x and 11.0) each in its own locked environment, apart from
the project's SDK 15."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.stack import ROOT


@pytest.mark.parametrize("suite", ["tests/sdk14", "tests/sdk11"])
def test_sdk_suite_passes(suite: str) -> None:
    proc = subprocess.run(
        [os.environ.get("UV", "uv"), "run", "--project", suite, "--frozen", "--quiet", "pytest", "-c",
         f"{suite}/pyproject.toml", "--rootdir", suite, "--confcutdir", suite, "-q", suite],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "VIRTUAL_ENV": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
