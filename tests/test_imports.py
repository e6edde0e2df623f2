"""Static import checks over the wmplan source tree: ``ast`` only, nothing is imported or run.

The source folders map to modules as in pyproject's ``package-dir`` (``planners/`` is
``wmplan.planners`` ...). The checks:

- the module-level import graph has no cycle (per layer, the cycle is named edge by edge);
- no imports inside functions in the packages of ``NO_FUNCTION_IMPORTS``;
- the layering of DESIGN.md (``FORBIDDEN``), for imports anywhere in a file.

Edges model what Python executes at import time: ``from P import x`` goes to ``P.x`` when that
is a module, else to ``P`` (so ``from . import name`` in a submodule is an edge to its own
package's ``__init__``); importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` unless
that package encloses the importer (it is then already initialising). Imports in function
bodies and under ``if TYPE_CHECKING:`` do not run at import time and are not edges.
The last tests run the checker on small synthetic trees, so the checker itself is tested.
"""
from __future__ import annotations

import ast
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {  # as pyproject's [tool.setuptools.package-dir] (a test checks they agree)
    "wmplan": "wmplan", "wmplan.envs": "envs", "wmplan.planners": "planners", "wmplan.worldmodel": "worldmodel",
}
LAYERS = ("wmplan.protocols", "wmplan.envs", "wmplan.planners", "wmplan.worldmodel")
NO_FUNCTION_IMPORTS = ("wmplan.planners", "wmplan.protocols")
FORBIDDEN = {  # layer -> modules (and their submodules) it must not import
    "wmplan.envs": ("wmplan.protocols", "wmplan.planners", "wmplan.worldmodel"),
    "wmplan.worldmodel": ("wmplan.envs", "wmplan.planners"),
    "wmplan.planners": ("wmplan.worldmodel", "wmplan.envs"),
    "wmplan.protocols": ("wmplan.envs", "wmplan.planners", "wmplan.worldmodel"),
}
KNOWN_CYCLES: dict[str, str] = {}  # layer -> reason, for cycles in files this test's owner cannot fix


# ----------------------------------------------------------------------------- the checker
@dataclass(frozen=True)
class Import:
    """One import statement (or dynamic import call) of ``module``, resolved to our modules."""

    module: str
    where: str  # "path:line"
    targets: tuple[str, ...]  # modules of the tree it names
    implied: tuple[str, ...]  # enclosing packages it also initialises
    in_function: bool
    type_checking: bool
    unresolved: str | None = None  # a relative / wmplan import naming no module of the tree


@dataclass
class Tree:
    modules: dict[str, Path]
    packages: set[str]  # modules that are package __init__ files
    imports: list[Import]

    def edges(self) -> dict[str, dict[str, str]]:
        """Module-level import graph: importer -> {imported module: first "path:line"}."""
        graph: dict[str, dict[str, str]] = {m: {} for m in self.modules}
        for imp in self.imports:
            if imp.in_function or imp.type_checking:
                continue
            for t in (*imp.targets, *imp.implied):
                graph[imp.module].setdefault(t, imp.where)
        return graph


def prefixes(name: str) -> list[str]:
    """"a.b.c" -> ["a", "a.b", "a.b.c"]."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str | None:
    """Absolute name of ``from <level dots><module> import ...`` in ``importer`` (None: beyond the top)."""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level - 1 >= len(base):
        return None
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def discover(package_dirs: Mapping[str, Path]) -> tuple[dict[str, Path], set[str]]:
    """Every .py file inside a package folder -> its module name (and which are packages)."""
    modules: dict[str, Path] = {}
    packages: set[str] = set()
    for pkg, folder in package_dirs.items():
        folder = Path(folder)
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if any(not (folder / Path(*rel.parts[:i]) / "__init__.py").exists() for i in range(len(rel.parts))):
                continue  # not inside a package: not installed
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
                packages.add(".".join([pkg, *parts]))
            modules[".".join([pkg, *parts])] = path
    return modules, packages


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, tree: Tree, roots: tuple[str, ...], rel_to: Path | None):
        self.module, self.path, self.tree, self.roots = module, path, tree, roots
        self.is_package = module in tree.packages
        self.own = set(prefixes(module))
        self.shown = str(path.relative_to(rel_to)) if rel_to and path.is_relative_to(rel_to) else str(path)
        self.func_depth = 0
        self.tc_depth = 0

    # scopes
    def _function(self, node: ast.AST) -> None:
        self.func_depth += 1
        self.generic_visit(node)
        self.func_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.tc_depth += 1
        for n in node.body:
            self.visit(n)
        self.tc_depth -= 1
        for n in node.orelse:
            self.visit(n)

    # imports
    def _add(self, node: ast.AST, targets: list[str], unresolved: str | None = None) -> None:
        implied = {p for t in targets for p in prefixes(t)[:-1] if p in self.tree.modules and p not in self.own}
        self.tree.imports.append(Import(
            self.module, f"{self.shown}:{node.lineno}", tuple(dict.fromkeys(targets)),
            tuple(sorted(implied - set(targets))), self.func_depth > 0, self.tc_depth > 0, unresolved))

    def _ours(self, name: str) -> bool:
        return any(name == r or name.startswith(r + ".") for r in self.roots)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self._ours(alias.name):
                found = alias.name in self.tree.modules
                self._add(node, [alias.name] if found else [], None if found else alias.name)
            elif self.func_depth:
                self._add(node, [])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = resolve_relative(self.module, self.is_package, node.level, node.module)
            if base is None or base not in self.tree.modules:
                self._add(node, [], "." * node.level + (node.module or ""))
                return
        else:
            base = node.module or ""
            if not self._ours(base):
                if self.func_depth:
                    self._add(node, [])
                return
            if base not in self.tree.modules:
                self._add(node, [], base)
                return
        sub = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.tree.modules]
        plain = len(sub) < len(node.names)  # a name (not a submodule) comes from base's __init__
        self._add(node, ([base] if plain else []) + sub)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        if name in ("__import__", "import_module") and self.func_depth:
            self._add(node, [])  # a dynamic import inside a function
        self.generic_visit(node)


def scan(package_dirs: Mapping[str, Path], rel_to: Path | None = None) -> Tree:
    """Parse every module of the tree and collect its imports."""
    modules, packages = discover(package_dirs)
    tree = Tree(modules, packages, [])
    roots = tuple(sorted({p.split(".")[0] for p in package_dirs}))
    for name, path in modules.items():
        node = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        _Collector(name, path, tree, roots, rel_to).visit(node)
    return tree


def find_cycles(graph: Mapping[str, Mapping[str, str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component, each as [m0, m1, ..., m0]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for comp in sccs:
        members = set(comp)
        start = min(comp)
        if len(comp) == 1 and start not in graph.get(start, {}):
            continue
        # shortest path start -> ... -> start inside the component (BFS)
        prev: dict[str, str] = {}
        frontier, seen, end = [start], {start}, None
        while frontier and end is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, {})):
                    if w == start:
                        end = v
                        break
                    if w in members and w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if end is not None:
                    break
            frontier = nxt
        path = [end]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def describe(cycle: list[str], graph: Mapping[str, Mapping[str, str]]) -> str:
    """"a -> b (a.py:3) -> a (b.py:1)": each edge with the line that makes it."""
    out = cycle[0]
    for a, b in zip(cycle, cycle[1:]):
        out += f" -> {b} ({graph[a][b]})"
    return out


def in_package(module: str, pkg: str) -> bool:
    return module == pkg or module.startswith(pkg + ".")


def layer_of(module: str) -> str:
    return next((layer for layer in LAYERS if in_package(module, layer)), "wmplan")


# ----------------------------------------------------------------------------- the real tree
@pytest.fixture(scope="module")
def tree() -> Tree:
    return scan({pkg: ROOT / folder for pkg, folder in PACKAGE_DIRS.items()}, rel_to=ROOT)


def test_package_dirs_match_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert cfg["tool"]["setuptools"]["package-dir"] == PACKAGE_DIRS


def test_every_subpackage_is_installed(tree):
    """A package folder missing from pyproject's ``packages`` list is left out of a wheel (the
    editable install used here would still find it)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    missing = sorted(tree.packages - set(cfg["tool"]["setuptools"]["packages"]))
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_imports_resolve(tree):
    bad = [f"{i.where}: {i.unresolved}" for i in tree.imports if i.unresolved]
    assert not bad, "imports naming no module of the tree:\n" + "\n".join(bad)


@pytest.mark.parametrize("layer", [
    pytest.param(layer, marks=pytest.mark.xfail(reason=KNOWN_CYCLES[layer], strict=True)) if layer in KNOWN_CYCLES
    else layer for layer in ("wmplan", *LAYERS)
])
def test_no_import_cycles(tree, layer):
    graph = tree.edges()
    cycles = [c for c in find_cycles(graph) if any(layer_of(m) == layer for m in c)]
    assert not cycles, "import cycles:\n" + "\n".join(describe(c, graph) for c in cycles)


@pytest.mark.parametrize("pkg", NO_FUNCTION_IMPORTS)
def test_no_imports_inside_functions(tree, pkg):
    bad = [i.where for i in tree.imports if i.in_function and in_package(i.module, pkg)]
    assert not bad, f"imports inside functions in {pkg} (import at module level; break cycles by " \
                    "moving code, not by deferring imports):\n" + "\n".join(bad)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layering(tree, layer):
    bad = [f"{i.where}: {i.module} imports {t}" for i in tree.imports if in_package(i.module, layer)
           for t in (*i.targets, *i.implied) if any(in_package(t, f) for f in FORBIDDEN[layer])]
    assert not bad, f"{layer} must not import {', '.join(FORBIDDEN[layer])}:\n" + "\n".join(bad)


# ----------------------------------------------------------------------------- the checker itself
def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def _cycles(root: Path, dirs: Mapping[str, str]) -> list[list[str]]:
    return find_cycles(scan({pkg: root / d for pkg, d in dirs.items()}).edges())


def test_resolve_relative():
    assert resolve_relative("w.p.base", False, 1, "energies") == "w.p.energies"
    assert resolve_relative("w.p.base", False, 1, None) == "w.p"
    assert resolve_relative("w.p.base", False, 2, "protocols") == "w.protocols"
    assert resolve_relative("w.p", True, 1, "cem") == "w.p.cem"  # in an __init__, "." is the package
    assert resolve_relative("w.p", True, 2, None) == "w"
    assert resolve_relative("w.p.e.goal", False, 2, "registry") == "w.p.registry"
    assert resolve_relative("w.p", True, 3, None) is None  # beyond the top-level package


def test_checker_init_submodule_cycle(tmp_path):
    """``from . import x`` at the end of an __init__ whose submodule reads names from it: a cycle
    (it only works because of the statement order)."""
    _write(tmp_path, {"pkg/__init__.py": "X = 1\nfrom . import sub\n", "pkg/sub.py": "from . import X\n"})
    assert _cycles(tmp_path, {"pkg": "pkg"}) == [["pkg", "pkg.sub", "pkg"]]
    # a sibling submodule is not the package: no cycle
    _write(tmp_path, {"pkg/sub.py": "from . import other\n", "pkg/other.py": "Y = 2\n"})
    assert _cycles(tmp_path, {"pkg": "pkg"}) == []
    # ``from .. import pkg`` (the old registry pattern) at module level is one
    _write(tmp_path, {"pkg/sub.py": "from .. import pkg\n"})
    assert _cycles(tmp_path, {"pkg": "pkg"}) == []  # beyond the top: unresolved, reported elsewhere
    _write(tmp_path, {"top/__init__.py": "", "top/pkg/__init__.py": "from . import sub\n",
                      "top/pkg/sub.py": "from .. import pkg\n"})
    assert _cycles(tmp_path, {"top": "top"}) == [["top.pkg", "top.pkg.sub", "top.pkg"]]


def test_checker_cycles_through_modules_and_parent_packages(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .sub.b import f\n",  # also runs pkg/sub/__init__.py
        "pkg/sub/__init__.py": "from ..a import g\n",
        "pkg/sub/b.py": "import os\nfrom ..c import h\n",
        "pkg/c.py": "import pkg.d\n",
        "pkg/d.py": "from pkg.sub import b\n",
    })
    tree = scan({"pkg": tmp_path / "pkg"}, rel_to=tmp_path)
    graph = tree.edges()
    assert graph["pkg.a"] == {"pkg.sub.b": "pkg/a.py:1", "pkg.sub": "pkg/a.py:1"}
    cycles = find_cycles(graph)  # one component (a -> sub.b -> c -> d -> sub -> a), its shortest loop
    assert [describe(c, graph) for c in cycles] == ["pkg.a -> pkg.sub (pkg/a.py:1) -> pkg.a (pkg/sub/__init__.py:1)"]
    _write(tmp_path, {"pkg/sub/__init__.py": ""})  # still a -> sub.b -> c -> d -> sub.b
    assert [set(c) for c in _cycles(tmp_path, {"pkg": "pkg"})] == [{"pkg.sub.b", "pkg.c", "pkg.d"}]
    # one edge less: a DAG
    _write(tmp_path, {"pkg/sub/__init__.py": "", "pkg/d.py": "import os\n"})
    assert _cycles(tmp_path, {"pkg": "pkg"}) == []


def test_checker_deferred_imports(tmp_path):
    """Function-level and TYPE_CHECKING imports are no edges, but function-level ones are reported."""
    _write(tmp_path, {
        "pkg/__init__.py": "from . import a\n",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n"
                    "def f():\n    from . import b\n    import json\n    return b, json\n",
        "pkg/b.py": "from . import a\nclass K:\n    from . import a as A  # class bodies run at import\n",
    })
    tree = scan({"pkg": tmp_path / "pkg"})
    assert find_cycles(tree.edges()) == []
    inside = sorted(int(i.where.rsplit(":", 1)[1]) for i in tree.imports if i.in_function)
    assert inside == [5, 6]
    assert [i.type_checking for i in tree.imports if i.module == "pkg.a" and not i.in_function] == [True]


def test_checker_layering_and_unresolved(tmp_path):
    _write(tmp_path, {
        "w/__init__.py": "", "w/protocols.py": "",
        "lo/__init__.py": "from ..protocols import x\n",
        "hi/__init__.py": "", "hi/m.py": "def f():\n    from w.lo import y\nfrom .missing import z\n",
    })
    tree = scan({"w": tmp_path / "w", "w.lo": tmp_path / "lo", "w.hi": tmp_path / "hi"})
    assert [i.unresolved for i in tree.imports if i.unresolved] == [".missing"]
    hits = [(i.module, t) for i in tree.imports for t in i.targets if in_package(t, "w.lo")]
    assert hits == [("w.hi.m", "w.lo")]


def test_checker_catches_a_cycle_added_to_the_real_tree(tmp_path):
    """Copy the planners layer, add one module-level import that closes a loop: it is reported."""
    for pkg in ("wmplan", "wmplan.planners"):
        src = ROOT / PACKAGE_DIRS[pkg]
        shutil.copytree(src, tmp_path / PACKAGE_DIRS[pkg], ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    dirs = {"wmplan": "wmplan", "wmplan.planners": "planners"}
    through_base = lambda: [c for c in _cycles(tmp_path, dirs) if "wmplan.planners.base" in c]  # noqa: E731
    assert through_base() == []
    base = tmp_path / "planners" / "base.py"
    base.write_text(base.read_text(encoding="utf-8") + "\nfrom .registry import PLANNERS\n", encoding="utf-8")
    cycles = through_base()
    assert len(cycles) == 1 and {"wmplan.planners.base", "wmplan.planners.registry"} <= set(cycles[0])
