"""topn as a user installs it: its wheel into a fresh virtualenv outside the checkout, nothing else; run from a
project with its own `flows` and `tasks` packages first on sys.path; deployed from the installed module.

The virtualenvs get the locked versions of topn's dependencies (uv export), from uv's cache when it has them.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import ROOT, free_port, wait_for
from tests.taskapp.oracle import spec_top

UV = ROOT / ".tools" / "bin" / "uv"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
NOT_AT_RUN_TIME = ("batch_emulator", "uv_build", "hatchling", "topn_taskapp", "editables")


def _run(command: list, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{command}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """topn's wheel and sdist, and the emulator's and task application's, as `uv build` makes them."""
    out = tmp_path_factory.mktemp("dist")
    _run([UV, "build", "--all-packages", "--out-dir", out], cwd=ROOT)
    return out


def _venv(where: Path, dist: Path, requirement: str) -> Path:
    """A fresh virtualenv (no checkout on its path) with `requirement` from `dist`, and the locked versions of
    its dependencies; returns its bin folder."""
    constraints = where.with_name(where.name + "-constraints.txt")
    exported = _run([UV, "export", "--frozen", "--no-dev", "--no-emit-workspace", "--no-hashes", "--quiet",
                     "--all-extras"], cwd=ROOT)  # fmt: skip
    constraints.write_text(exported.stdout)
    _run([UV, "venv", "--quiet", "--python", "3.11", where], cwd=where.parent)
    python = where / "bin" / "python"
    _run([UV, "pip", "install", "--quiet", "--python", python, "--find-links", dist, "--constraint", constraints,
          requirement], cwd=where.parent)  # fmt: skip
    return where / "bin"


@pytest.fixture(scope="module")
def plain(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("venvs") / "plain", dist, f"topn=={VERSION}")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's Prefect project: its own `flows` and `tasks` packages, which topn must never import."""
    for name in ("flows", "tasks"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the project\\'s own {name} was imported')\n")
    return tmp_path


def _env(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    return {**env, "PYTHONPATH": str(project), **extra}  # the project's packages first, as workers run it


def test_the_wheel_holds_the_task_application_and_names_no_build_tool(dist: Path) -> None:
    import zipfile

    (wheel,) = dist.glob(f"topn-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f"topn-{VERSION}.dist-info/METADATA").decode()
    assert any(n.startswith("topn/flows/wheels/topn_taskapp-") and n.endswith(".whl") for n in names), names
    assert {n.split("/")[0] for n in names} == {"topn", f"topn-{VERSION}.dist-info"}  # one namespace
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    always = [r for r in requires if "extra ==" not in r]
    assert not [r for r in always if any(t in r for t in ("emulator", "uv-build", "hatch", "cryptography"))], always
    assert any("azure-batch-emulator" in r and "extra == 'local'" in r for r in requires), requires


def test_installed_topn_runs_from_a_project_with_its_own_flows_and_tasks(
    plain: Path, project: Path, stack_env: dict, sample_dir: Path
) -> None:
    env = _env(project, **stack_env)
    assert _run([plain / "topn", "--version"], env=env, cwd=project).stdout.strip() == f"topn {VERSION}"
    probe = ("import sys, importlib.util as u; import topn.cli, topn.flows.topn, topn.tasks.blocks, "
             "topn.deployments.serve; print([m for m in %r if m in sys.modules or u.find_spec(m)])")  # fmt: skip
    assert _run([plain / "python", "-c", probe % (NOT_AT_RUN_TIME,)], env=env, cwd=project).stdout.strip() == "[]"
    run = _run([plain / "topn", "run", sample_dir, "--top", "5", "--json"], env=env, cwd=project)
    assert json.loads(run.stdout)["top"] == spec_top(sample_dir, 5)


def test_without_the_local_extra_the_stack_says_what_to_install(plain: Path, project: Path, tmp_path: Path) -> None:
    env = _env(project, TOPN_LOCAL_DIR=str(tmp_path), TOPN_LOCAL_BATCH_PORT=str(free_port()),
               TOPN_LOCAL_BLOB_PORT=str(free_port()))  # fmt: skip
    done = subprocess.run([plain / "topn", "stack", "start"], env=env, cwd=project, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "topn: the local stack needs topn's `local` extra: pip install 'topn[local]' " \
                                  "(in a checkout: ./dev)"  # fmt: skip
    assert not list(tmp_path.glob("*.pid"))  # nothing was started


@pytest.fixture
def local_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("venvs") / "local", dist, f"topn[local]=={VERSION}")


@pytest.fixture
def own_stack(local_venv: Path, project: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Settings for a local stack the installed topn starts by itself (Azurite from PATH, as npm -g puts
    it); stopped by the installed `topn stack stop` whatever happens."""
    env = _env(project, TOPN_LOCAL_DIR=str(tmp_path / "state"), TOPN_LOCAL_BATCH_PORT=str(free_port()),
               TOPN_LOCAL_BLOB_PORT=str(free_port()),
               PATH=os.pathsep.join([str(ROOT / "node_modules" / ".bin"), os.environ["PATH"]]))  # fmt: skip
    try:
        yield env
    finally:
        subprocess.run([local_venv / "topn", "stack", "stop"], env=env, cwd=project, capture_output=True, timeout=300)


def test_with_the_local_extra_it_starts_the_local_stack_and_runs_the_sample(
    local_venv: Path, project: Path, own_stack: dict, sample_dir: Path, prefect_api: str
) -> None:
    run = _run([local_venv / "topn", "run", sample_dir, "--json"], env=own_stack, cwd=project)
    assert json.loads(run.stdout)["top"] == spec_top(sample_dir, 10)
    status = _run([local_venv / "topn", "stack", "status"], env=own_stack, cwd=project).stdout
    assert status.count(": up") == 2, status


def test_topn_default_deploys_from_the_installed_module_and_a_worker_runs_it(
    plain: Path, project: Path, stack_env: dict, sample_dir: Path, azurite
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    env = _env(project, **stack_env)
    pool = f"installed-{free_port()}"
    _run([plain / "prefect", "work-pool", "create", pool, "--type", "process"], env=env, cwd=project)
    # Named apart from the suite's topn/default, which test_processes serves on this server.
    said = _run([plain / "topn", "deploy", "--work-pool", pool, "--name", "installed"], env=env, cwd=project).stdout
    assert f"deployed topn/installed on work pool '{pool}'" in said
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("topn/installed")
    assert deployment.entrypoint == "topn.flows.topn.topn" and deployment.work_pool_name == pool
    prefix = f"installed-{free_port()}/"
    _run([plain / "topn", "upload", sample_dir, "--prefix", prefix], env=env, cwd=project)
    run = run_deployment("topn/installed", parameters={"blob_prefix": prefix, "pool_mode": "keep", "top": 3},
                         timeout=0)  # fmt: skip
    worker = subprocess.Popen([plain / "prefect", "worker", "start", "--pool", pool, "--run-once"], env=env,
                              cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        output, _ = worker.communicate(timeout=600)
    finally:
        worker.kill()
        worker.wait()
    with get_client(sync_client=True) as client:
        wait_for(lambda: client.read_flow_run(run.id).state.is_final(), timeout=120, what="the run's final state")
        state = client.read_flow_run(run.id).state
    assert state.is_completed(), output[-3000:]
    assert state.result().top == [tuple(p) for p in spec_top(sample_dir, 3)]
