"""The wheel is pure Python, has no dependencies, and runs on a bare CPython 3.10+ (no pip, no site)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE

DICKENS = SAMPLE / "books" / "a-tale-of-two-cities.txt"


def interpreters() -> list[str]:
    found = [
        sys.executable,
        "/usr/bin/python3",
        *glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")),
    ]
    return [p for p in found if os.path.exists(p)]


def test_a_python_310_is_among_the_interpreters() -> None:
    versions = {
        subprocess.run(
            [p, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        ).stdout.strip()
        for p in interpreters()
    }
    assert "(3, 10)" in versions, f"no CPython 3.10 found to test the wheel on: {versions}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            os.environ.get("UV", "uv"),
            "build",
            "--package",
            "topn-taskapp",
            "--wheel",
            "--out-dir",
            out,
            "--quiet",
        ],
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    (whl,) = out.glob("*.whl")
    return whl


def test_wheel_is_pure_and_dependency_free(wheel: Path) -> None:
    assert wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert all(n.startswith(("topn_taskapp/", "topn_taskapp-")) for n in names)
    assert not any(n.endswith((".so", ".pyd", ".c")) for n in names)
    assert "Requires-Dist" not in metadata
    assert "topn-taskapp = topn_taskapp.cli:main" in entry_points


def bare_env(**extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C", **extra}


@pytest.mark.parametrize("python", interpreters())
def test_runs_from_the_wheel_on_path(python: str, wheel: Path, tmp_path: Path) -> None:
    # -S: no site-packages at all, so only the standard library and the wheel are importable.
    subprocess.run(
        [python, "-S", "-m", "topn_taskapp", "count", "--top", "3", "--output", tmp_path / "o.json", DICKENS],
        check=True,
        env=bare_env(PYTHONPATH=str(wheel)),
        cwd=tmp_path,
        timeout=120,
    )
    result = json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))
    assert (result["words"], result["top"]) == (137389, [["the", 8053], ["and", 4999], ["of", 4015]])


@pytest.mark.parametrize("python", interpreters())
def test_runs_unpacked_with_stdlib_zipfile(python: str, wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run([python, "-S", "-m", "zipfile", "-e", wheel, site], check=True, env=bare_env(), timeout=60)
    subprocess.run(
        [python, "-S", "-m", "topn_taskapp", "count", "--top", "2", "--output", tmp_path / "o.json", DICKENS],
        check=True,
        env=bare_env(PYTHONPATH=str(site)),
        cwd=tmp_path,
        timeout=120,
    )
    assert json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))["top"] == [
        ["the", 8053],
        ["and", 4999],
    ]
