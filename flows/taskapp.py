"""The task application as the nodes get it: its wheel, built from taskapp/, and its installer script."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from prefect import task

from tasks.application import AppFiles

SOURCE = Path(__file__).resolve().parent.parent / "taskapp"
INSTALLER = Path(__file__).with_name("install-taskapp.sh")
APP_NAME = "topn-taskapp"  # its folder on the nodes, and its entry in the pool's metadata


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(SOURCE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@task(name="build-taskapp", task_run_name="build-taskapp", persist_result=False)
def build_taskapp(cache: Path) -> AppFiles:
    """Builds the topn-taskapp wheel from taskapp/ (cached by the source's hash) with the uv build backend;
    with its installer, the application the word count's pools install. Its version is a hash of both, so
    any change is a new version."""
    if not (SOURCE / "pyproject.toml").is_file():
        raise FileNotFoundError(f"the task application's source is not at {SOURCE}: run topn from its checkout")
    out = (cache / "taskapp" / source_hash()[:16]).resolve()
    wheels = sorted(out.glob("*.whl"))
    if not wheels:
        out.mkdir(parents=True, exist_ok=True)
        # uv_build finds its binary on PATH: the environment's bin folder, even when it is not activated.
        env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        subprocess.run(
            [sys.executable, "-c", "import sys, uv_build; uv_build.build_wheel(sys.argv[1])", str(out)],
            cwd=SOURCE,
            check=True,
            capture_output=True,
            timeout=300,
            env=env,
        )
        wheels = sorted(out.glob("*.whl"))
    digest = hashlib.sha256(wheels[0].read_bytes() + INSTALLER.read_bytes()).hexdigest()
    version = digest[:16]
    install = ("/bin/sh", INSTALLER.name, wheels[0].name, version)
    return AppFiles(APP_NAME, version, (wheels[0], INSTALLER), install)
