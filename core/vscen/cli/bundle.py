"""The code of the modules a command imports from vscen and its plugins, kept in one file.

Python imports each module on its own: it searches ``sys.path`` for it, compares the cached
bytecode (``__pycache__/*.pyc``) with the source's time and size, and opens and reads that
file. For the seventy-odd modules of vscen and its plugins that ``vscen run`` imports, that
work costs about a fifth of what the modules themselves do. The command line (the program,
``vscen.cli.entry``; not ``main()``, not the library) keeps the code of those modules in
``$XDG_CACHE_HOME/vscen/modules-<id>.marshal``, one file per command, interpreter and
``sys.path``, and imports them from there:

- only the modules of ``vscen`` and of the packages that the ``vscen`` entry points name, as
  Python's own source loader had imported them (with the code it had read);
- a module is served while its source file has the identity it had (device, inode, time,
  size); one that changed is imported as usual, and the file rewritten at exit with the rest;
- the file is used only while ``sys.path`` and the identity of each of its entries are the
  same (a module installed in front of another would change one of them), as the entry points'
  cache (``vscen.plugincache``);
- a module is the same as Python makes it (``__file__``, ``__spec__.origin``, ``__path__``),
  and so is its loader: Python's source loader (resources, ``get_data``, ``get_source``...),
  given the code it would have read.

``VSCEN_NO_CACHE=1`` turns it off, as every cache.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import ModuleSpec, SourceFileLoader

from vscen import cache

FORMAT = 1
#: modules kept at most in one file (a command imports well under a hundred)
KEPT = 400


class BundledLoader(SourceFileLoader):
    """Python's source loader for one module of the bundle, which starts from the code kept
    there (reloaded, the module is read from its source again)."""

    def __init__(self, fullname: str, path: str, code):
        super().__init__(fullname, path)
        self.code = code

    def get_code(self, fullname):
        if fullname == self.name and self.code is not None:
            code, self.code = self.code, None
            return code
        return super().get_code(fullname)


class Bundle:
    """A finder (``sys.meta_path``) of the modules in one bundle file: name -> [origin, is a
    package, identity of the origin, code]."""

    def __init__(self, path, modules: dict, key: dict):
        self.path, self.modules, self.key = path, modules, key
        self.changed = False  # a module was dropped: its source changed
        self.before = set(sys.modules)  # imported before the bundle could serve them: not kept

    def find_spec(self, name, path=None, target=None):
        entry = self.modules.get(name)
        if entry is None:
            return None
        origin, package, identity, code = entry
        if cache.stat(origin) != identity:
            del self.modules[name]
            self.changed = True
            return None
        spec = ModuleSpec(name, BundledLoader(name, origin, code), origin=origin, is_package=package)
        spec.has_location = True
        if package:
            spec.submodule_search_locations = [os.path.dirname(origin)]
        return spec

    def save(self) -> None:
        """Keep the modules this process imported with Python's source loader beside the
        others, where there are any (or where one was dropped); nothing where it imported the
        plugins to register them (the first run, or one after an installation: ``vscen.regcache``),
        which a run of its command does not."""
        if getattr(sys.modules.get("vscen.regcache"), "imported_to_register", False):
            return
        scope = _scope()
        added = {}
        for name, module in list(sys.modules.items()):
            spec = getattr(module, "__spec__", None)
            loader = getattr(spec, "loader", None)
            if (name in self.modules or name in self.before or name.partition(".")[0] not in scope
                    or type(loader) is not SourceFileLoader):
                continue
            identity = cache.stat(spec.origin)
            if identity is None or cache.recent([identity]):
                continue  # changed just now: it waits for the next run
            try:
                code = loader.get_code(name)
            except Exception:  # unreadable now: left out
                continue
            added[name] = [spec.origin, spec.submodule_search_locations is not None, identity, code]
        if (added or self.changed) and not cache.recent(self.key["stats"]):
            modules = dict(list({**self.modules, **added}.items())[-KEPT:])
            cache.write_data(self.path, {"format": FORMAT, "key": self.key, "modules": modules})


def _scope() -> set[str]:
    """The top-level packages to keep: vscen's and those the ``vscen`` entry points name."""
    from vscen.manager import GROUP
    from vscen.plugincache import entry_points

    return {"vscen"} | {ep.value.partition(":")[0].partition(".")[0].strip() for ep in entry_points(GROUP)}


def ident(command: str | None) -> str:
    """What names the cache files of *command* run by this interpreter with this ``sys.path``."""
    import zlib

    return f"{zlib.crc32(repr((FORMAT, command, sys.version, sys.executable, sys.path)).encode()):08x}"


def install(command: str | None) -> Bundle | None:
    """Import the modules of *command*'s bundle from it from now on (first on
    ``sys.meta_path``), and keep what the command imports at exit; None where the caches are
    off or the entry points' cache cannot vouch for ``sys.path``."""
    from vscen import plugincache

    if not plugincache._usable():
        return None
    key = plugincache._key()
    path = cache.cache_dir() / f"modules-{ident(command)}.marshal"
    data = cache.read_data(path)
    modules = {}
    if isinstance(data, dict) and data.get("format") == FORMAT and data.get("key") == key:
        code_type = type(install.__code__)
        found = data.get("modules")
        if isinstance(found, dict) and all(
                isinstance(e, list) and len(e) == 4 and isinstance(e[0], str) and isinstance(e[2], list)
                and type(e[3]) is code_type for e in found.values()):
            modules = found
    bundle = Bundle(path, modules, key)
    sys.meta_path.insert(0, bundle)
    import atexit

    atexit.register(bundle.save)
    return bundle
