"""The house's rules, read from the imports of every module (module-level and inside functions):
- layers import downwards only: topn.cli -> topn.deployments -> topn.flows -> topn.tasks; the task application
  (taskapp/) and the emulator (emulator/) stand apart and import none of them, nor each other;
- the plugin (topn/) never imports the emulator: it runs against Azure without it. The one exception is
  topn/flows/local_stack.py, which starts the local stack on a laptop;
- no import cycle among the modules of the plugin, of the emulator, or of the task application."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {  # import name -> its folder (or file)
    "topn.cli": ROOT / "topn" / "cli.py",
    "topn.deployments": ROOT / "topn" / "deployments",
    "topn.flows": ROOT / "topn" / "flows",
    "topn.tasks": ROOT / "topn" / "tasks",
    "topn_taskapp": ROOT / "taskapp" / "src" / "topn_taskapp",
    "batch_emulator": ROOT / "emulator" / "src" / "batch_emulator",
}
MAY_IMPORT = {  # what each package may import of the others
    "topn.cli": {"topn", "topn.deployments", "topn.flows", "topn.tasks"},
    "topn.deployments": {"topn.flows", "topn.tasks"},
    "topn.flows": {"topn.tasks"},
    "topn.tasks": set(),
    "topn_taskapp": set(),
    "batch_emulator": set(),
}
RUNS_THE_EMULATOR = {"topn.flows.local_stack"}


def home(module: str) -> str:
    """The package of PACKAGES that holds `module` (the `topn` package itself stands alone)."""
    return next((p for p in PACKAGES if module == p or module.startswith(p + ".")), module)


def _modules() -> dict[str, Path]:
    found = {}
    found["topn"] = ROOT / "topn" / "__init__.py"  # the version only
    for package, folder in PACKAGES.items():
        if folder.is_file():
            found[package] = folder
            continue
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports (a package import counts as its __init__)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from package import module` imports that module; `from module import name`, the module.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_layers_import_downwards_only() -> None:
    wrong = []
    for name, targets in GRAPH.items():
        mine = home(name)
        for target in targets:
            other = home(target)
            allowed = other == mine or other in MAY_IMPORT[mine]
            if not allowed and not (other == "batch_emulator" and name in RUNS_THE_EMULATOR):
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_the_plugin_never_imports_the_emulator() -> None:
    plugin = [n for n in GRAPH if n.startswith("topn.") and n not in RUNS_THE_EMULATOR]
    assert not [f"{n} imports {t}" for n in plugin for t in GRAPH[n] if t.startswith("batch_emulator")]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package: str) -> None:
    inside = {n: {t for t in ts if home(t) == package} for n, ts in GRAPH.items() if home(n) == package}
    state: dict[str, int] = {}  # 1: being visited, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(inside.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(inside):
        if start not in state and (cycle := visit(start)):
            pytest.fail(" -> ".join(cycle))


def test_the_development_account_is_the_emulators() -> None:
    import batch_emulator

    from topn.tasks import settings

    assert (settings.DEV_ACCOUNT_NAME, settings.DEV_ACCOUNT_KEY) == (
        batch_emulator.DEV_ACCOUNT_NAME,
        batch_emulator.DEV_ACCOUNT_KEY,
    )
