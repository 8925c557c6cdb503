"""The layers hold: no import cycles, barclamps on the public API, nothing below the CLI imports it.

Every import counts: at module level, under ``if TYPE_CHECKING:``, and
inside functions. An edge goes to the module named (``from a.b import c``
is an edge to ``a.b.c`` when that is a module, else to ``a.b``); a parent
package's ``__init__`` is not counted as imported by its children.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("barclamp_sdk", "barclamps")
#: What a barclamp may import of the library (tests may also use barclamp_sdk.testing).
PUBLIC = {"barclamp_sdk"}
CLI_LIBRARIES = {"click", "rich"}


def modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every .py file of the packages under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports anywhere in its file (TYPE_CHECKING blocks and functions too)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in known else target)
    return found


def graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Import edges between the packages' own modules."""
    mods = modules(root, packages)
    known = set(mods)
    edges = {}
    for name, path in mods.items():
        edges[name] = {m for m in imports_of(name, path, known) if m in known and m != name}
    return edges


def external(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Every import of each module, by top-level name (stdlib and third party included)."""
    mods = modules(root, packages)
    return {name: {m.split(".")[0] for m in imports_of(name, path, set(mods))} for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer_violations(edges: dict[str, set[str]], imports: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(edges.items()):
        if module.startswith("barclamps."):
            for target in sorted(targets):
                if target.startswith("barclamp_sdk") and target not in PUBLIC:
                    problems.append(f"{module} imports {target}: barclamps use the public API (barclamp_sdk)")
        lower = module.startswith(("barclamp_sdk.chef", "barclamp_sdk.model"))
        for target in sorted(targets):
            if lower and target.startswith("barclamp_sdk.cli"):
                problems.append(f"{module} imports the CLI ({target})")
            if module.startswith("barclamp_sdk.model") and target in ("barclamp_sdk", "barclamp_sdk.api"):
                problems.append(f"{module} imports the facade ({target})")
            if module.startswith("barclamp_sdk.chef") and target.startswith(("barclamp_sdk.model", "barclamp_sdk.api")):
                problems.append(f"{module} (transport) imports the model ({target})")
    for module, names in sorted(imports.items()):
        outside_cli = not module.startswith(("barclamp_sdk.cli", "barclamp_sdk.testing"))
        for library in sorted(names & CLI_LIBRARIES):
            if outside_cli:
                problems.append(f"{module} imports {library}: CLI code lives under barclamp_sdk/cli")
    return problems


def test_no_import_cycles():
    found = cycles(graph(ROOT))
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers_and_public_api():
    assert layer_violations(graph(ROOT), external(ROOT)) == []


def test_every_module_is_read():
    mods = modules(ROOT)
    assert {"barclamp_sdk.api", "barclamp_sdk.model.commit.plan", "barclamps.bios.apply"} <= set(mods)
    edges = graph(ROOT)
    assert "barclamp_sdk.model.proposal" in edges["barclamp_sdk.model.barclamp"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "barclamp_sdk" / "model").mkdir(parents=True)
    (tmp_path / "barclamp_sdk" / "cli").mkdir()
    (tmp_path / "barclamps" / "x").mkdir(parents=True)
    for package in ("barclamp_sdk", "barclamp_sdk/model", "barclamp_sdk/cli", "barclamps", "barclamps/x"):
        (tmp_path / package / "__init__.py").write_text("")
    return tmp_path


def test_the_checks_can_fail(tree: Path):
    (tree / "barclamp_sdk" / "model" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from barclamp_sdk.model.b import B\n")
    (tree / "barclamp_sdk" / "model" / "b.py").write_text(
        "def f():\n    from . import a\n    import click\n    from barclamp_sdk.cli import app\n")
    (tree / "barclamp_sdk" / "cli" / "app.py").write_text("")
    (tree / "barclamps" / "x" / "__init__.py").write_text("from barclamp_sdk.model.a import A\n")
    edges = graph(tree)
    assert cycles(edges) == [["barclamp_sdk.model.a", "barclamp_sdk.model.b"]]
    problems = layer_violations(edges, external(tree))
    assert any("barclamps.x imports barclamp_sdk.model.a" in p for p in problems)
    assert any("barclamp_sdk.model.b imports the CLI" in p for p in problems)
    assert any("barclamp_sdk.model.b imports click" in p for p in problems)
