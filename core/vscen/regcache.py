"""What each plugin registers, remembered between runs: a plugin is imported only when one of
its functions is called.

Importing every plugin and calling its registration hooks is most of a ``vscen`` command's
own start-up, although a run uses the code of a few: ``vscen run secure-vm`` never calls the
fleet's, the cloud-init's or the huge pages' functions. A plugin whose module says
``VSCEN_STATIC = True`` (it registers the same objects wherever
and whenever it is imported, none of them made from the environment) has what it registered
kept in ``$XDG_CACHE_HOME/vscen/registrations-*.marshal``, as data: names, rules, settings'
metadata, and each function as a reference (module and qualified name). The next run builds
the registry from that and imports the plugin's module when a function is first called
(:class:`Lazy`); the same checks (duplicates, unknown names, cycles) run on what comes from the
cache as on what the hooks return.

The cache is used only while every plugin's entry point (its value), the files of every
module their imports brought in, and vscen's own data model are unchanged (one plugin edited:
all are registered anew, since one may use another's names); one that cannot be read is
ignored. A plugin is registered the usual way (imported, hooks called) where it does not say
``VSCEN_STATIC``, where what it registers is not plain data and importable functions (a
lambda, a closure, an object of its own class), where one of its registration hooks is
``tryfirst``, ``trylast`` or a wrapper, for a local plugin (``VSCEN_PLUGIN_PATH``) or one given
in-process, and with ``VSCEN_NO_CACHE=1``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from types import FunctionType

from vscen.cache import cache_dir, read_data, recent, stat, write_data

FORMAT = 2
#: the module attribute by which a plugin says its registrations are static
STATIC = "VSCEN_STATIC"
#: set where this process imported static plugins to register them (no cache, or a stale
#: one): what it imported is not what a run of its command imports (``vscen.cli.bundle``)
imported_to_register = False
#: dunder attributes a Lazy forwards to its function (others: copy's and pickle's probes)
_FORWARD = frozenset({"__name__", "__qualname__", "__wrapped__", "__annotations__", "__defaults__",
                      "__kwdefaults__", "__code__", "__globals__", "__dict__", "__self__", "__func__"})


def _follow(obj, qualname: str, *default):
    """The object *qualname* (``Class.method``) names inside *obj* (AttributeError, or
    *default* where given, where it names none)."""
    for part in qualname.split("."):
        obj = getattr(obj, part, *default)
    return obj


class Uncacheable(Exception):
    """What a plugin registered cannot be kept as data (the reason is the message)."""


class Lazy:
    """A plugin's function by reference: imported when first called or looked into."""

    __slots__ = ("module", "qualname", "_target")

    def __init__(self, module: str, qualname: str):
        self.module, self.qualname, self._target = module, qualname, None

    def resolve(self):
        target = self._target
        if target is None:
            import importlib

            target = self._target = _follow(importlib.import_module(self.module), self.qualname)
        return target

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__") and name not in _FORWARD:
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    @property
    def __doc__(self):  # the function's, as for the function itself
        return self.resolve().__doc__

    @property
    def __signature__(self):
        import inspect

        return inspect.signature(self.resolve())

    def __repr__(self) -> str:
        return f"<lazy {self.module}:{self.qualname}>"


_TYPES: dict = {}
_PLAIN = (type(None), bool, int, float, str, bytes)


def _model_types() -> dict:
    if not _TYPES:
        from vscen import model

        _TYPES.update((cls.__name__, cls) for cls in (model.Conflict, model.Feature, model.Scenario, model.Validator,
                                                      model.HostAction, model.Setting, model.FactProvider,
                                                      model.Command))
    return _TYPES


def _reference(value) -> tuple:
    """("f", module, qualname) of a module-level function or class, the very object."""
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
    if not isinstance(module, str) or not qualname or "<" in qualname:
        raise Uncacheable(f"{value!r} is not a module-level function or class")
    if _follow(sys.modules.get(module), qualname, None) is not value:
        raise Uncacheable(f"{module}:{qualname} does not name {value!r}")
    return ("f", module, qualname)


def _plain(value) -> bool:
    """Whether marshal keeps *value* as it is (its types too): no decoding needed."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind is tuple or kind is list:
        return all(_plain(v) for v in value)
    if kind is dict:
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def encode(value):
    """*value* as marshal-able data; Uncacheable where it is not plain data, references and
    vscen's model objects. One of those is ``("o", class name, plain fields, other fields)``
    with the fields that differ from their defaults, the others tagged: ``("t", items)``,
    ``("l", items)``, ``("d", pairs)``, ``("f", module, qualname)``."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is tuple:
        return ("t", [encode(v) for v in value])
    if kind is list:
        return ("l", [encode(v) for v in value])
    if kind is dict:
        return ("d", [[encode(k), encode(v)] for k, v in value.items()])
    if kind is Lazy:
        return ("f", value.module, value.qualname)
    if _model_types().get(kind.__name__) is kind:
        plain, other = {}, {}
        for f in fields(value):
            v = getattr(value, f.name)
            default = _default(f)
            if type(v) is type(default) and v == default:
                continue
            if _plain(v):
                plain[f.name] = v
            else:
                other[f.name] = encode(v)
        return ("o", kind.__name__, plain, other)
    if kind is FunctionType or isinstance(value, type):
        return _reference(value)
    raise Uncacheable(f"a {kind.__name__} ({value!r:.60})")


def decode(data):
    if type(data) is not tuple:
        return data
    tag = data[0]
    if tag == "o":
        cls = _model_types()[data[1]]
        values = dict(data[2])
        for k, v in data[3].items():
            values[k] = decode(v)
        return cls(**values)
    if tag == "t":
        return tuple(decode(v) for v in data[1])
    if tag == "l":
        return [decode(v) for v in data[1]]
    if tag == "d":
        return {decode(k): decode(v) for k, v in data[1]}
    if tag == "f":
        module = sys.modules.get(data[1])
        if module is not None:  # imported already (builtins, pathlib, a plugin in use): the object
            found = _follow(module, data[2], None)
            if found is not None:
                return found
        return Lazy(data[1], data[2])
    raise ValueError(f"unknown tag {tag!r}")


def _path() -> Path:
    import zlib

    ident = repr((FORMAT, sys.version, sys.executable, sys.path))
    return cache_dir() / f"registrations-{zlib.crc32(ident.encode()):08x}.marshal"


def _core_files() -> list[str]:
    """vscen's files that decide what a registration means: the data model, the public API."""
    from vscen import model

    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, "__init__.py"), os.path.abspath(model.__file__), os.path.abspath(__file__)]


def _key() -> list:
    return [FORMAT, sys.version, [(p, stat(p)) for p in _core_files()]]


def read() -> dict:
    """Plugin name -> its cache entry (``value``, ``files``, ``hooks``, ``objects``), for the
    entries still current; {} where there is no usable cache."""
    data = read_data(_path())
    try:
        if data["key"] != _key():
            return {}
        entries = data["plugins"]
        # all or nothing: a plugin's registration may use another plugin's names (imported
        # before it, so not among its own files)
        if all(stat(path) == st for entry in entries.values() for path, st in entry["files"]):
            return entries
    except Exception:  # absent, corrupt, another shape: as good as none
        pass
    return {}


def objects(entry: dict, kind: str) -> list:
    """The objects of *kind* (``features``, ...) a cache entry holds, in registration order."""
    return [decode(e) for e in entry["objects"].get(kind, ())]


def static(module) -> bool:
    return getattr(module, STATIC, False) is True


def entry_for(info, plugin, reg, files: list[str], kinds) -> dict:
    """The cache entry of a plugin registered the usual way just now (*kinds*: the registry's
    tables by kind); Uncacheable where it cannot have one."""
    if not static(plugin):
        raise Uncacheable(f"it does not say {STATIC} = True")
    objs = {}
    for kind in kinds:
        names = info.registers.get(kind, [])
        if names:
            table = reg.table(kind)
            objs[kind] = [encode(table[n]) for n in names]
    stats = [(p, stat(p)) for p in sorted(set(files))]
    if any(st is None for _, st in stats) or recent([st for _, st in stats]):
        raise Uncacheable("its files changed just now")
    return {"value": info.module, "files": stats, "hooks": list(info.hooks), "objects": objs}


def write(entries: dict) -> None:
    """Keep *entries* (plugin name -> entry), replacing the file; nothing where caches are off."""
    key = _key()
    if not recent([st for _, st in key[2]]):
        write_data(_path(), {"key": key, "plugins": entries})
