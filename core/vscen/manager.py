"""Discover plugins through entry points (group ``vscen``) and build the plugin manager.

Entry points are loaded one by one so that a broken plugin is reported by name, distribution
and version, with how to disable it, and does not take the other plugins down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pluggy

from vscen import hookspecs

GROUP = "vscen"
#: comma-separated plugin (entry point) names that are not loaded
DISABLE_ENV = "VSCEN_DISABLED_PLUGINS"


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
        """One line per broken plugin, saying how to disable it."""
        return [
            f"plugin '{i.name}' from {i.distribution} {i.version} is broken: {i.reason} "
            f"(disable it with {DISABLE_ENV}={i.name})"
            for i in self.infos.values()
            if i.status == "broken"
        ]


def disabled_names(extra: tuple[str, ...] = ()) -> set[str]:
    names = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    return names | set(extra)


def get_plugin_manager(
    *, disabled: tuple[str, ...] = (), entry_points: bool = True, plugins: tuple = ()
) -> PluginManager:
    """Build a plugin manager: entry-point plugins (unless disabled) plus *plugins* given.

    *plugins* are (name, object) pairs, for tests and for embedding vscen.
    """
    pm = PluginManager()
    blocked = disabled_names(disabled)
    if entry_points:
        import importlib_metadata

        for ep in sorted(importlib_metadata.entry_points(group=GROUP), key=lambda e: e.name):
            if ep.name in pm.infos:
                continue  # the same distribution seen twice on sys.path
            info = PluginInfo(name=ep.name, module=ep.value, dist=ep.dist)
            pm.infos[ep.name] = info
            if ep.name in blocked:
                info.status, info.reason = "disabled", f"listed in {DISABLE_ENV}"
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # a broken plugin must not take the others down
                info.status, info.reason = "broken", f"{type(exc).__name__}: {exc}"
    for name, obj in plugins:
        pm.infos[name] = PluginInfo(name=name, module=getattr(obj, "__name__", ""),
                                    _distribution="(in-process)", _version="-")
        try:
            pm.register(obj, name=name)
        except Exception as exc:
            pm.infos[name].status, pm.infos[name].reason = "broken", f"{type(exc).__name__}: {exc}"
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
