"""Discover plugins through entry points (group ``vscen``) and build the plugin manager.

Entry points are loaded one by one so that a broken plugin is reported by name, distribution
and version, with how to disable it, and does not take the other plugins down. A plugin is
disabled by name through ``VSCEN_DISABLED_PLUGINS`` or ``disabled_plugins`` in a config file;
``VSCEN_PLUGIN_PATH`` loads modules and packages from local directories, for development.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType

import pluggy

from vscen import hookspecs
from vscen.localplugins import PATH_ENV, import_local, local_plugins

_ABSENT = object()
_HOOKABLE = (FunctionType, BuiltinFunctionType, MethodType, classmethod, staticmethod)

GROUP = "vscen"
#: comma-separated plugin (entry point) names that are not loaded
DISABLE_ENV = "VSCEN_DISABLED_PLUGINS"
#: the config file key doing the same: disabled_plugins = ["name", ...]
DISABLE_KEY = "disabled_plugins"


@dataclass
class PluginInfo:
    """What ``vscen plugins`` shows for one entry point."""

    name: str
    module: str
    #: the importlib.metadata Distribution, read only when its name or version is asked for
    #: (parsing every distribution's metadata would cost each command start-up time)
    dist: object = field(default=None, repr=False, compare=False)
    _distribution: str = ""
    _version: str = ""
    status: str = "loaded"  # loaded | disabled | broken
    reason: str = ""
    hooks: list[str] = field(default_factory=list)
    registers: dict[str, list[str]] = field(default_factory=dict)
    #: what it registered, from the registrations cache: it is imported only when used
    cached: dict | None = field(default=None, repr=False, compare=False)
    #: the files its import brought in (for that cache)
    files: list[str] = field(default_factory=list, repr=False, compare=False)
    #: one of its registration hooks is tryfirst, trylast or a wrapper: never cached
    ordered: bool = field(default=False, repr=False, compare=False)

    @property
    def distribution(self) -> str:
        if not self._distribution and self.dist is not None:
            self._distribution = self.dist.metadata["Name"]
        return self._distribution or "?"

    @property
    def version(self) -> str:
        if not self._version and self.dist is not None:
            self._version = self.dist.version
        return self._version or "?"

    def as_dict(self) -> dict:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "module": self.module, "status": self.status, "reason": self.reason,
                "hooks": self.hooks, "registers": self.registers}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what was discovered, loaded or refused."""

    def __init__(self) -> None:
        super().__init__("vscen")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        #: problems that belong to no plugin (a VSCEN_PLUGIN_PATH entry that does not exist)
        self.notes: list[str] = []

    def parse_hookimpl_opts(self, plugin, name: str):
        opts = self._module_marker(plugin, name, "_impl")
        return super().parse_hookimpl_opts(plugin, name) if opts is _ABSENT else opts

    def parse_hookspec_opts(self, module_or_class, name: str):
        opts = self._module_marker(module_or_class, name, "_spec")
        return super().parse_hookspec_opts(module_or_class, name) if opts is _ABSENT else opts

    def _module_marker(self, namespace, name: str, suffix: str):
        """pluggy looks at every name of a module with inspect.getattr_static (slow: hundreds
        of imported names). A module attribute that is no function, method, classmethod or
        staticmethod is never a hook (None), a plain function is its own marker holder (its
        options or None); anything else: _ABSENT, pluggy decides."""
        if not isinstance(namespace, ModuleType):
            return _ABSENT
        value = namespace.__dict__.get(name, _ABSENT)
        if value is not _ABSENT and not isinstance(value, _HOOKABLE):
            return None
        if type(value) is FunctionType:
            opts = value.__dict__.get(self.project_name + suffix)
            return opts if isinstance(opts, dict) else None
        return _ABSENT

    def mark_broken(self, name: str, reason: str) -> None:
        info = self.infos[name]
        if info.status == "broken" and info.reason and reason not in info.reason.split("; "):
            reason = f"{info.reason}; {reason}"  # keep every reason, not just the last one
        info.status, info.reason = "broken", reason
        info.registers, info.hooks = {}, []  # nothing it registered is used
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)

    def warnings(self) -> list[str]:
        """One line per broken plugin, saying how to disable it, then the notes."""
        return [
            f"plugin '{i.name}' from {i.distribution} {i.version} is broken: {i.reason} "
            f"(disable it with {DISABLE_ENV}={i.name})"
            for i in self.infos.values()
            if i.status == "broken"
        ] + self.notes


def disabled_plugins(extra: Iterable[str] | Mapping[str, str] = (), layers: Iterable = ()) -> dict[str, str]:
    """Plugin name -> why it is not loaded: ``VSCEN_DISABLED_PLUGINS``, then ``disabled_plugins``
    in the config *layers* (``vscen.config.config_layers``), then *extra* (names, or names
    with their reasons)."""
    reasons = {n.strip(): f"listed in {DISABLE_ENV}" for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    for name, reason in config_disabled(layers).items():
        reasons.setdefault(name, reason)
    given = extra.items() if isinstance(extra, Mapping) else ((n, "disabled by the caller") for n in extra)
    for name, reason in given:
        reasons.setdefault(name, reason)
    return reasons


def config_disabled(layers: Iterable) -> dict[str, str]:
    """``disabled_plugins = ["name", ...]`` of each config layer ((label, values) pairs)."""
    from vscen.errors import UsageError

    out: dict[str, str] = {}
    for label, values in layers:
        names = values.get(DISABLE_KEY)
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise UsageError(f"{DISABLE_KEY}: {names!r} in {label} is not a list of plugin names; "
                             f'write {DISABLE_KEY} = ["name", ...] (see \'vscen plugins\')')
        for name in names:
            out.setdefault(name.strip(), f"listed in {DISABLE_KEY} of {label}")
    return out


def get_plugin_manager(
    *, disabled: Iterable[str] | Mapping[str, str] = (), entry_points: bool = True, plugins: tuple = (),
    layers: Iterable = (),
) -> PluginManager:
    """Build a plugin manager: entry-point plugins and ``VSCEN_PLUGIN_PATH``'s (unless
    disabled, by name or in the config *layers*) plus *plugins* given.

    *plugins* are (name, object) pairs, for tests and for embedding vscen. With
    ``entry_points=False`` only they are loaded.
    """
    pm = PluginManager()
    blocked = disabled_plugins(disabled, layers)
    if entry_points:
        from vscen import regcache
        from vscen.plugincache import entry_points

        local = local_plugins(os.environ.get(PATH_ENV, ""), pm.notes)
        by_name = {p.name: p for p in local}
        cached = regcache.read()
        for ep in entry_points(GROUP):  # sorted by name
            if ep.name in pm.infos or ep.name in by_name:
                continue  # the same distribution seen twice on sys.path; or replaced by a local one
            info = PluginInfo(name=ep.name, module=ep.value, dist=ep.dist,
                              _distribution=getattr(ep, "distribution", ""), _version=getattr(ep, "version", ""))
            pm.infos[ep.name] = info
            top = ep.value.partition(":")[0].partition(".")[0].strip()
            if top in by_name:
                info.status = "disabled"
                info.reason = f"replaced by the local plugin '{top}' from {by_name[top].where} ({PATH_ENV})"
            elif ep.name in blocked:
                info.status, info.reason = "disabled", blocked[ep.name]
            elif ep.name in cached and cached[ep.name]["value"] == ep.value:
                info.cached = cached[ep.name]
                info.hooks = list(info.cached["hooks"])
            else:
                before = set(sys.modules)
                if _register(pm, info, ep.load):
                    # what its import brought in; and its package's modules, imported before or not
                    package = top + "."
                    info.files = _files((set(sys.modules) - before)
                                        | {m for m in list(sys.modules) if m == top or m.startswith(package)})
        for plugin in local:
            info = PluginInfo(name=plugin.name, module=plugin.name, _distribution=f"(local: {plugin.where})", _version="-")
            pm.infos[plugin.name] = info
            if plugin.name in blocked:
                info.status, info.reason = "disabled", blocked[plugin.name]
            elif _register(pm, info, lambda p=plugin: import_local(p)):
                info._version = str(getattr(pm.get_plugin(plugin.name), "__version__", "-"))
    for name, obj in plugins:
        pm.infos[name] = PluginInfo(name=name, module=getattr(obj, "__name__", ""),
                                    _distribution="(in-process)", _version="-")
        _register(pm, pm.infos[name], lambda o=obj: o)
    while True:  # check_pending reports one misspelled hook at a time
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            culprit = pm.get_name(exc.plugin) if exc.plugin is not None else None
            if culprit not in pm.infos:
                raise
            pm.mark_broken(culprit, str(exc))
    for name, info in pm.infos.items():
        plugin = pm.get_plugin(name)
        if plugin is not None:
            info.hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
    return pm


def _files(modules: Iterable[str]) -> list[str]:
    """The files of *modules* (vscen's own aside: the registrations cache watches those)."""
    out = []
    for name in modules:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path and name != "vscen" and not name.startswith("vscen."):
            out.append(os.path.abspath(path))
    return out


def _register(pm: PluginManager, info: PluginInfo, load) -> bool:
    try:
        pm.register(load(), name=info.name)
        return True
    except Exception as exc:  # a broken plugin must not take the others down
        info.status, info.reason = "broken", f"{type(exc).__name__}: {exc}"
        return False
