"""labkit stands on floors, behind one public face (ARCHITECTURE.md): this reads every module's
imports and every notebook's code cells and holds them to it.

    foundation (labkit/*.py) < core < net < real < lab (with lab/site) < teach

A module may import its own floor and the floors below, never a floor above. No module imports the face
(``labkit/__init__.py``), and no chain of imports runs in a circle. Notebooks import the face
only: ``from labkit import ...``.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import labkit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "labkit"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

#: the floors, lowest first; packages on one floor do not import each other
FLOORS: list[tuple[str, ...]] = [("core",), ("net",), ("real",), ("lab",), ("teach",)]
#: modules that stand above every floor: the face and the ``python -m labkit`` entry point
ABOVE = {"labkit", "labkit.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor_of(module: str) -> tuple[int, str]:
    """(height, package) of a module: foundation modules are at height 0."""
    parts = module.split(".")
    if len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").exists():
        return 0, "foundation"
    for height, packages in enumerate(FLOORS, start=1):
        if parts[1] in packages:
            return height, parts[1]
    raise AssertionError(f"{module} stands on no floor; ARCHITECTURE.md lists them")


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported labkit module, line, runtime?) for each import in ``module``, at any depth.

    ``from A import b`` counts as an import of ``A.b`` where that is a module, else of ``A``.
    Imports under ``if TYPE_CHECKING:`` are not made at run time (they still respect floors).
    """
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for part in child.body:
                    visit_one(part, False)
                for part in child.orelse:
                    visit_one(part, runtime)
            else:
                visit_one(child, runtime)

    def visit_one(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno, runtime) for a in node.names if a.name.split(".")[0] == "labkit")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "labkit":
                return
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, node.lineno, runtime))
        visit(node, runtime)

    visit(tree, True)
    return found


def test_the_top_of_the_package_holds_the_face_the_foundation_and_the_floors():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    floors = {name for names in FLOORS for name in names}
    assert packages <= floors, f"packages outside the floors: {sorted(packages - floors)}"
    assert {"core", "net", "real", "lab", "teach"} <= packages


@pytest.mark.parametrize("module", sorted(set(MODULES) - ABOVE))
def test_no_floor_imports_a_higher_one(module):
    height, package = floor_of(module)
    for target, line, _ in imports(module):
        assert target not in ABOVE, f"{module}:{line} imports the face ({target}); import the module itself"
        assert target in MODULES, f"{module}:{line} imports {target}, which does not exist"
        t_height, t_package = floor_of(target)
        assert t_height <= height, (f"{module}:{line} imports {target}, a floor up "
                                    f"({package} may import only the floors below it)")
        if t_height == height and height:
            assert t_package == package, f"{module}:{line} imports {target}, its neighbour on the {package} floor"


def test_no_import_cycle():
    graph = {m: sorted({t for t, _, runtime in imports(m) if runtime and t in MODULES and t != m})
             for m in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for module in graph:
        if module not in state:
            walk(module)


def test_importing_labkit_loads_only_the_face_and_the_foundation():
    code = "import sys, labkit; print(sorted(m for m in sys.modules if m.startswith('labkit')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["labkit", "labkit.errors", "labkit.i18n", "labkit.result"]


@pytest.mark.parametrize("name", sorted(labkit.__all__))
def test_every_name_of_the_face_resolves(name):
    assert getattr(labkit, name) is not None


def notebook_imports(path: Path) -> list[tuple[int, ast.stmt]]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    found = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.startswith(("%", "!"))))
        found.extend((index, node) for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_import_only_the_face(path):
    for cell, node in notebook_imports(path):
        if isinstance(node, ast.Import):
            inner = [a.name for a in node.names if a.name.split(".")[0] == "labkit"]
            assert not inner, f"{path.name} cell {cell}: 'import {inner[0]}'; use 'from labkit import ...'"
        elif (node.module or "").split(".")[0] == "labkit":
            assert node.module == "labkit", \
                f"{path.name} cell {cell}: imports from {node.module}; chapters import from labkit only"
            unknown = [a.name for a in node.names if a.name not in labkit.__all__]
            assert not unknown, f"{path.name} cell {cell}: {unknown} are not in labkit.__all__"
