"""The task application as the nodes get it: its wheel, built from taskapp/, and its installer script."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prefect import task

SOURCE = Path(__file__).resolve().parent.parent / "taskapp"
INSTALLER = Path(__file__).with_name("install-taskapp.sh")


@dataclass(frozen=True)
class TaskappFiles:
    """The wheel and installer for one version; `version` is a hash of both, so any change is a new version."""

    wheel: Path
    installer: Path
    version: str


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(SOURCE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@task(name="build-taskapp", task_run_name="build-taskapp", persist_result=False)
def build_taskapp(cache: Path) -> TaskappFiles:
    """Builds the topn-taskapp wheel from taskapp/ (cached by the source's hash) with the uv build backend."""
    if not (SOURCE / "pyproject.toml").is_file():
        raise FileNotFoundError(f"the task application's source is not at {SOURCE}: run topn from its checkout")
    out = (cache / "taskapp" / source_hash()[:16]).resolve()
    wheels = sorted(out.glob("*.whl"))
    if not wheels:
        out.mkdir(parents=True, exist_ok=True)
        # uv_build finds its binary on PATH: the environment's bin folder, even when it is not activated.
        env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        subprocess.run([sys.executable, "-c", "import sys, uv_build; uv_build.build_wheel(sys.argv[1])", str(out)],
                       cwd=SOURCE, check=True, capture_output=True, timeout=300, env=env)  # fmt: skip
        wheels = sorted(out.glob("*.whl"))
    digest = hashlib.sha256(wheels[0].read_bytes() + INSTALLER.read_bytes()).hexdigest()
    return TaskappFiles(wheels[0], INSTALLER, digest[:16])
