"""Runs tests/sdk11 (azure-batch 11.0, api-version 2021-06-01.14.0) in its own locked environment."""

from __future__ import annotations

import os
import subprocess

from tests.stack import ROOT


def test_sdk11_suite_passes() -> None:
    suite = "tests/sdk11"
    proc = subprocess.run(
        [os.environ.get("UV", "uv"), "run", "--project", suite, "--frozen", "--quiet", "pytest", "-c",
         f"{suite}/pyproject.toml", "--rootdir", suite, "--confcutdir", suite, "-q", suite],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "VIRTUAL_ENV": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
