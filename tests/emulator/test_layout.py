"""The emulator package's layout rules, read from its source: no import cycles (function-level and
TYPE_CHECKING imports count too), handlers never take the service's lock nor read its tables, and
nothing outside the service package touches the service's private members."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import batch_emulator

PACKAGE = Path(batch_emulator.__file__).parent
HANDLERS = ("batch_emulator.responses", "batch_emulator.responses_account", "batch_emulator.admin")


def modules(root: Path, package: str) -> dict[str, Path]:
    """Module name -> source file, for every module of the package under `root` (a package is its __init__)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The package's modules that module `name` imports, wherever in it the import statement is."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known_prefix(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                yield from _known_prefix(f"{base}.{alias.name}", known)


def _known_prefix(dotted: str, known: dict[str, Path]) -> Iterator[str]:
    """`a.b.c` imports the longest of a.b.c, a.b, a that is one of our modules (a name in it, else)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            yield candidate
            return


def graph(root: Path, package: str) -> dict[str, set[str]]:
    known = modules(root, package)
    return {name: set(imported(name, path, known)) - {name} for name, path in known.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for other in sorted(edges.get(name, ())):
            if found := visit(other):
                return found
        path.pop()
        done.add(name)
        return None

    for name in sorted(edges):
        if found := visit(name):
            return found
    return None


def test_no_import_cycles() -> None:
    found = cycle(graph(PACKAGE, "batch_emulator"))
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_the_cycle_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "sub" / "__init__.py").write_text("from .b import thing\n")
    (tmp_path / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (tmp_path / "sub" / "b.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from .. import a\n")
    edges = graph(tmp_path, "pkg")
    assert edges == {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"}}
    assert cycle(edges) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    assert cycle({"x": {"y"}, "y": set()}) is None


def _attributes(path: Path) -> Iterator[ast.Attribute]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            yield node


def test_handlers_never_take_the_lock_nor_read_the_service_tables() -> None:
    known = modules(PACKAGE, "batch_emulator")
    for name in HANDLERS:
        touched = {a.attr for a in _attributes(known[name])} & {"lock", "pools", "jobs"}
        assert not touched, f"{name} uses the service's {sorted(touched)}: ask a service method instead"


def test_only_the_service_touches_its_private_members() -> None:
    for name, path in modules(PACKAGE, "batch_emulator").items():
        if name.startswith("batch_emulator.service"):
            continue
        for a in _attributes(path):
            owner = a.value.id if isinstance(a.value, ast.Name) else getattr(a.value, "attr", "")
            private = a.attr.startswith("_") and not a.attr.startswith("__")
            assert not (private and owner in ("service", "svc")), f"{name}:{a.lineno} uses {owner}.{a.attr}"
