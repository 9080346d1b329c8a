"""The task application as the nodes get it: the wheel topn ships (built from taskapp/ when topn is built,
taskapp/build_wheel.py) and its installer script."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task

from topn.tasks.application import AppFiles

WHEELS = Path(__file__).with_name("wheels")
INSTALLER = Path(__file__).with_name("install-taskapp.sh")
APP_NAME = "topn-taskapp"  # its folder on the nodes, and its entry in the pool's metadata
CHECKOUT_SOURCE = Path(__file__).resolve().parents[2] / "taskapp"  # only in a checkout


def _wheel() -> Path:
    wheels = sorted(WHEELS.glob("topn_taskapp-*.whl"))
    if len(wheels) != 1:
        raise FileNotFoundError(
            f"topn's package holds no task application wheel (in {WHEELS}): reinstall topn from its wheel, "
            "or in a checkout run ./dev"
        )
    stamp = WHEELS / "SOURCE"
    if (CHECKOUT_SOURCE / "build_wheel.py").is_file() and stamp.is_file():
        from importlib.util import module_from_spec, spec_from_file_location

        spec = spec_from_file_location("topn_taskapp_build", CHECKOUT_SOURCE / "build_wheel.py")
        builder = module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(builder)  # type: ignore[union-attr]
        if builder.source_hash() != stamp.read_text().strip():
            raise FileNotFoundError(
                "the task application's wheel is older than taskapp/ in this checkout: run ./dev "
                "(or: uv run python taskapp/build_wheel.py topn/flows/wheels)"
            )
    return wheels[0]


@task(name="taskapp-files", task_run_name="taskapp-files", persist_result=False)
def taskapp_files() -> AppFiles:
    """The topn-taskapp wheel and its installer: the application the word count's pools install. Its
    version is a hash of both, so any change is a new version."""
    wheel = _wheel()
    version = hashlib.sha256(wheel.read_bytes() + INSTALLER.read_bytes()).hexdigest()[:16]
    install = ("/bin/sh", INSTALLER.name, wheel.name, version)
    return AppFiles(APP_NAME, version, (wheel, INSTALLER), install)
