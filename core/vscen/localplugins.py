"""Plugins from local directories (``VSCEN_PLUGIN_PATH``), for development: modules and
packages found there are imported by path, under their own names, and registered as entry
point plugins are (``vscen.manager``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: directories (os.pathsep-separated) of modules and packages loaded as plugins, for development
PATH_ENV = "VSCEN_PLUGIN_PATH"
#: modules in a plugin directory that are never plugins
NOT_PLUGINS = frozenset({"setup", "conftest", "noxfile"})


@dataclass(frozen=True)
class LocalPlugin:
    """A module or package found through ``VSCEN_PLUGIN_PATH``."""

    name: str
    path: Path  # the .py file or the package directory
    where: str  # the VSCEN_PLUGIN_PATH entry it was found through


def local_plugins(value: str, notes: list[str]) -> list[LocalPlugin]:
    """The modules and packages of ``VSCEN_PLUGIN_PATH``: each entry is a directory of them, or
    one package directory or ``.py`` file. Names that are not identifiers, start with ``_`` or
    ``test_``, and setup.py, conftest.py, noxfile.py are never plugins."""
    found: dict[str, LocalPlugin] = {}
    for entry in filter(None, (e.strip() for e in value.split(os.pathsep))):
        path = Path(entry).expanduser().resolve()
        if path.is_file() and path.suffix == ".py" or (path / "__init__.py").is_file():
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(p for p in path.iterdir()
                                if p.suffix == ".py" and p.is_file() or (p / "__init__.py").is_file())
        else:
            notes.append(f"{PATH_ENV}: '{entry}' is not a directory, a package or a .py file (ignored)")
            continue
        for candidate in candidates:
            name = candidate.stem if candidate.suffix == ".py" else candidate.name
            if not name.isidentifier() or name.startswith(("_", "test_")) or name in NOT_PLUGINS:
                continue
            if name in found:
                notes.append(f"{PATH_ENV}: '{name}' in {path} ignored: {found[name].where} has one of that name")
                continue
            found[name] = LocalPlugin(name, candidate, str(path))
    return list(found.values())


def import_local(plugin: LocalPlugin):
    """Import a local plugin by path, under its own name (its package's relative imports work)."""
    import importlib.util
    import sys

    init = plugin.path / "__init__.py" if plugin.path.is_dir() else plugin.path
    if plugin.name in sys.stdlib_module_names:
        raise ImportError(f"'{plugin.name}' is the name of a standard library module; rename the local one")
    existing = sys.modules.get(plugin.name)
    if existing is not None:
        if getattr(existing, "__file__", None) and Path(existing.__file__).resolve() == init:
            return existing  # loaded by an earlier plugin manager in this process
        raise ImportError(f"a module named '{plugin.name}' is imported already "
                          f"(from {getattr(existing, '__file__', None) or 'built-in'}); rename the local one")
    search = [str(plugin.path)] if plugin.path.is_dir() else None
    spec = importlib.util.spec_from_file_location(plugin.name, init, submodule_search_locations=search)
    module = importlib.util.module_from_spec(spec)
    sys.modules[plugin.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(plugin.name, None)
        raise
    return module
