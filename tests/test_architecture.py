"""Meta-tests of the shape of the house: which code may import what.

- the core (``core/vscen``) imports no plugin;
- a plugin (``plugins/vscen_*``, the example third-party plugin) imports only ``vscen``'s
  public API (what ``vscen/__init__.py`` exports), its own package, the standard library and
  third-party packages (for the built-in plugins: those vscen's distribution depends on, an
  extra's only inside the function that needs it); its tests may import ``vscen.testing`` too;
- the core's modules have no import cycle.

Imports are read from the source with ``ast``, those inside functions included (a lazy
import is still a dependency); only those under ``if TYPE_CHECKING:`` are left out of the
cycle check, since they never run.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

CORE = ROOT / "core"
PLUGINS = ROOT / "plugins"
EXAMPLE = ROOT / "examples" / "vscen-example"

#: cycles among core modules known and being removed elsewhere: the modules of the cycle ->
#: why it is allowed for now. An entry that no longer matches a cycle fails the test: remove it.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is, and whether it ever runs."""

    module: str  # the module imported: "vscen.errors", or "vscen" for ``from vscen import X``
    names: tuple[str, ...]  # for ``from M import a, b``: a, b
    where: str  # path:line
    type_checking: bool  # under ``if TYPE_CHECKING:``: for annotations only, never run


def module_name(path: Path, source_root: Path) -> str:
    parts = list(path.relative_to(source_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, source_root: Path) -> list[Import]:
    """Every import in the file at *path*, at any depth (functions, classes, ifs, trys)."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path, source_root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    where = f"{_shown(path)}:"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, (), f"{where}{node.lineno}", id(node) in guarded))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this file, up level - 1
                parts = package.split(".") if package else []
                up = parts[: len(parts) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            found.append(Import(base, tuple(a.name for a in node.names), f"{where}{node.lineno}",
                                id(node) in guarded))
    return sorted(found, key=lambda i: int(i.where.rpartition(":")[2]))


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p, CORE): p for p in python_files(CORE / "vscen")}


def public_api() -> set[str]:
    """The names ``vscen/__init__.py`` exports (its ``__all__``: the data classes, ``hookimpl``
    and the lazily imported helpers)."""
    import vscen

    return set(vscen.__all__)


def lazy_targets() -> set[str]:
    """The modules ``vscen/__init__.py`` imports on first use of a public helper (``_LAZY``)."""
    import vscen

    return set(vscen._LAZY.values())


# ------------------------------------------------------------------------------------------
# the core imports no plugin
# ------------------------------------------------------------------------------------------


def test_the_core_imports_no_plugin():
    offenders = [f"{imp.where}: imports {imp.module}"
                 for path in core_modules().values() for imp in imports(path, CORE)
                 if imp.module.partition(".")[0].startswith("vscen_")]
    assert offenders == [], "the core knows no plugin:\n  " + "\n  ".join(offenders)


# ------------------------------------------------------------------------------------------
# plugins import only the public API
# ------------------------------------------------------------------------------------------


def plugin_offences(path: Path, source_root: Path, own: str, tests: bool = False) -> list[str]:
    """What the file at *path* (of plugin package *own*) imports that a plugin may not."""
    api = public_api()
    bad = []
    for imp in imports(path, source_root):
        top = imp.module.partition(".")[0]
        if imp.module == "vscen":
            for name in imp.names:
                if name not in api:
                    bad.append(f"{imp.where}: 'from vscen import {name}': {name} is not in vscen's public API")
        elif top == "vscen":
            if not (tests and imp.module == "vscen.testing"):
                bad.append(f"{imp.where}: imports {imp.module}, a module of vscen's core; "
                           "use what 'vscen' exports" + (" (and vscen.testing)" if tests else ""))
        elif top.startswith("vscen_") and top != own:
            bad.append(f"{imp.where}: imports {imp.module}, another plugin")
    return bad


def test_built_in_plugins_import_only_the_public_api():
    offenders = []
    for package in sorted(p for p in PLUGINS.iterdir() if p.name.startswith("vscen_")):
        for path in python_files(package):
            offenders += plugin_offences(path, PLUGINS, package.name)
    assert offenders == [], "plugins import only 'vscen':\n  " + "\n  ".join(offenders)


def test_built_in_plugins_import_only_the_standard_library_and_declared_dependencies():
    """Anything else a built-in plugin imports must come with vscen's distribution: a
    dependency, or one of an extra (``vscen[cloud]``: pycdlib), which the plugin imports when
    it is needed and asks for by name where it is missing."""
    import importlib_metadata
    from packaging.requirements import Requirement

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    requires = importlib_metadata.requires("vscen") or ()
    declared = {normal(Requirement(r).name) for r in requires if "extra ==" not in r}
    # an extra's package (cryptography for vscen[attest]) only where it is used: inside a function
    optional = {normal(Requirement(r).name) for r in requires if "extra ==" in r}
    provided = importlib_metadata.packages_distributions()
    offenders = []
    for package in sorted(p for p in PLUGINS.iterdir() if p.name.startswith("vscen_")):
        for path in python_files(package):
            top_level = {f"{_shown(path)}:{node.lineno}" for node in ast.parse(path.read_text()).body
                         if isinstance(node, (ast.Import, ast.ImportFrom))}
            for imp in imports(path, PLUGINS):
                top = imp.module.partition(".")[0]
                if top in sys.stdlib_module_names or top == "vscen" or top.startswith("vscen_") or top == "__future__":
                    continue
                dists = {normal(d) for d in provided.get(top, ())}
                if dists & optional and not dists & declared:
                    if imp.where in top_level:
                        offenders.append(f"{imp.where}: imports {imp.module} at module level, from an optional "
                                         "dependency (an extra): import it in the function that needs it")
                elif not dists & declared:
                    offenders.append(f"{imp.where}: imports {imp.module}, which no dependency of vscen provides")
    assert offenders == [], "\n  ".join(["undeclared imports:", *offenders])


def test_the_example_plugin_imports_only_the_public_api():
    offenders = []
    for path in python_files(EXAMPLE / "vscen_example"):
        offenders += plugin_offences(path, EXAMPLE, "vscen_example")
    for path in python_files(EXAMPLE / "tests"):
        offenders += plugin_offences(path, EXAMPLE / "tests", "vscen_example", tests=True)
    assert offenders == [], "plugins import only 'vscen':\n  " + "\n  ".join(offenders)


def test_the_plugin_check_catches_core_imports(tmp_path):
    """The scan sees imports at any depth and tells a public name from an internal one."""
    pkg = tmp_path / "vscen_x"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import os\nimport lxml.etree\nfrom vscen import hookimpl, Feature\nfrom . import helpers\n"
        "from vscen_x.helpers import y\n"
        "def f():\n    from vscen.errors import UsageError\n    import vscen_other\n"
        "    from vscen import settings\n"
    )
    bad = plugin_offences(pkg / "__init__.py", tmp_path, "vscen_x")
    assert [b.split(": ", 1)[0].rpartition(":")[2] for b in bad] == ["7", "8", "9"]
    assert "imports vscen.errors, a module of vscen's core" in bad[0]
    assert "imports vscen_other, another plugin" in bad[1]
    assert "'from vscen import settings': settings is not in vscen's public API" in bad[2]


def test_public_api_names_exist():
    """Every name vscen exports can be imported (a lazy helper whose module moved would not)."""
    import vscen

    for name in vscen.__all__:
        assert getattr(vscen, name) is not None, name


# ------------------------------------------------------------------------------------------
# no import cycle in the core
# ------------------------------------------------------------------------------------------


def module_graph() -> dict[str, dict[str, list[str]]]:
    """Core module -> {core module it imports -> where}: every import that runs, lazy ones
    included. ``from vscen import X`` is an import of the submodule ``vscen.X`` when there is
    one, else of the package; the package depends on the modules of its lazy helpers."""
    modules = core_modules()
    graph: dict[str, dict[str, list[str]]] = {m: {} for m in modules}
    for name, path in modules.items():
        for imp in imports(path, CORE):
            if imp.type_checking or imp.module.partition(".")[0] != "vscen":
                continue
            targets = [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in modules]
            if not targets or len(targets) < len(imp.names):
                targets.append(imp.module)
            for target in targets:
                # importing a.b.c runs a/__init__ and a/b/__init__ first: those are vscen's
                # packages, whose own imports are checked as modules of their own
                if target in modules and target != name:
                    graph[name].setdefault(target, []).append(imp.where)
    for target in lazy_targets():
        graph["vscen"].setdefault(target, []).append("core/vscen/__init__.py: _LAZY")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(component: frozenset[str], graph: dict[str, dict[str, list[str]]]) -> str:
    edges = [f"    {a} -> {b} ({', '.join(graph[a][b])})"
             for a in sorted(component) for b in sorted(graph[a]) if b in component]
    return f"  {', '.join(sorted(component))}:\n" + "\n".join(edges)


def test_the_core_has_no_import_cycle():
    graph = module_graph()
    found = cycles(graph)
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert new == [], "import cycles among core modules (a lazy import is a dependency too):\n" + \
        "\n".join(describe(c, graph) for c in new)
    gone = [f"{', '.join(sorted(c))} ({why})" for c, why in KNOWN_CYCLES.items() if c not in found]
    assert gone == [], "these known cycles are gone: remove them from KNOWN_CYCLES\n  " + "\n  ".join(gone)


def test_the_cycle_check_finds_lazy_cycles():
    graph = {"a": {"b": ["a.py:3"]}, "b": {"c": ["b.py:9"]}, "c": {"a": ["c.py:1"]}, "d": {"a": ["d.py:2"]}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    assert "c -> a (c.py:1)" in describe(frozenset({"a", "b", "c"}), graph)


def test_the_scan_sees_imports_inside_functions_and_marks_type_checking(tmp_path):
    (tmp_path / "m.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vscen.a import A\n"
        "def f():\n    from vscen import b\n    from .c import d\n"
    )
    found = imports(tmp_path / "m.py", tmp_path)
    assert [(i.module, i.type_checking) for i in found] == [
        ("typing", False), ("vscen.a", True), ("vscen", False), ("c", False)]


def test_every_public_helper_is_documented():
    """docs/hooks.md's "Public helpers" lists every helper vscen exports, and nothing else."""
    text = (ROOT / "docs" / "hooks.md").read_text()
    section = text.partition("\n## Public helpers\n")[2].partition("\n## ")[0]
    import vscen

    assert set(re.findall(r"^\| `(\w+)", section, re.M)) == set(vscen._LAZY)


def _dataclasses_without_docstring(roots) -> list[str]:
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.ClassDef) and ast.get_docstring(node) is None
                        and any("dataclass" in ast.unparse(d) for d in node.decorator_list)):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}")
    return found


def test_every_dataclass_has_a_docstring():
    # @dataclass gives a class with no docstring one made from inspect.signature(cls): parsing
    # and formatting each field's annotation, on every start-up, for a text nobody reads
    assert _dataclasses_without_docstring([CORE, PLUGINS]) == []


def test_the_docstring_check_finds_a_bare_dataclass(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\n"
                                           "class Bare:\n    x: int\n\n\n@dataclass\nclass Told:\n"
                                           "    '''Told.'''\n    y: int\n")
    assert _dataclasses_without_docstring([tmp_path / "pkg"]) == ["pkg/m.py:5 Bare"]
