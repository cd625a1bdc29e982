"""Collect what the plugins register, remember which plugin registered it, check declarations.

A plugin whose registration fails, or whose declarations are inconsistent (duplicate or
unknown names, cycles in ``implies``, conflicting with itself), is marked broken with the
reason and its objects are dropped; the other plugins carry on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vscen.manager import PluginManager
from vscen.model import Command, FactProvider, Feature, HostAction, Rules, Scenario, Setting, Validator
from vscen.regcheck import bad_declaration, declaration_problems

KINDS = {
    "features": ("vscen_register_features", Feature),
    "scenarios": ("vscen_register_scenarios", Scenario),
    "validators": ("vscen_register_validators", Validator),
    "host-actions": ("vscen_register_host_actions", HostAction),
    "settings": ("vscen_register_settings", Setting),
    "facts": ("vscen_register_facts", FactProvider),
    "commands": ("vscen_register_commands", Command),
}


@dataclass
class Registry:
    """Everything the plugins registered, by kind and name, and which plugin registered it."""

    features: dict[str, Feature] = field(default_factory=dict)
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    validators: dict[str, Validator] = field(default_factory=dict)
    host_actions: dict[str, HostAction] = field(default_factory=dict)
    settings: dict[str, Setting] = field(default_factory=dict)
    facts: dict[str, FactProvider] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    #: (namespace, name) -> plugin (entry point) name that registered it; features and
    #: scenarios share the namespace "items", validators and host actions have their own
    owner: dict[tuple[str, str], str] = field(default_factory=dict)
    #: plugin name -> the plugin manager's PluginInfo (distribution, version), for messages
    infos: dict = field(default_factory=dict, repr=False)

    def plugin_of(self, name: str, kind: str = "features") -> str:
        return self.owner.get((_ns(kind), name), "?")

    def describe(self, name: str, kind: str = "features") -> str:
        """The plugin that registered *name*, as messages name it: ``plugin 'demo' (vscen-demo
        1.0)``, ``plugin 'demo' (in-process)``, or ``plugin 'demo'`` where nothing more is known."""
        plugin = self.plugin_of(name, kind)
        info = self.infos.get(plugin)
        if info is None:
            return f"plugin '{plugin}'"
        if info.distribution.startswith("("):  # "(in-process)", "(local: DIR)"
            return f"plugin '{plugin}' {info.distribution}"
        return f"plugin '{plugin}' ({info.distribution} {info.version})"

    def table(self, kind: str) -> dict:
        return getattr(self, kind.replace("-", "_"))

    def item(self, name: str) -> Rules | None:
        """A feature or scenario by name (they share one namespace)."""
        return self.scenarios.get(name) or self.features.get(name)

    def items(self) -> dict[str, Rules]:
        return {**self.features, **self.scenarios}


def load(config=None, *, plugins: tuple = (), entry_points: bool = True, disabled: tuple = ()):
    """discover + register: (plugin manager, registry). The config files' ``disabled_plugins``
    are read only where entry points are discovered."""
    from vscen.config import config_layers
    from vscen.manager import get_plugin_manager

    layers = config_layers(config) if entry_points else ()
    pm = get_plugin_manager(plugins=plugins, entry_points=entry_points, disabled=disabled, layers=layers)
    reg = build_registry(pm)
    if entry_points:
        _remember(pm, reg)
    return pm, reg


def _remember(pm: PluginManager, reg: Registry) -> None:
    """Keep what the plugins imported just now registered (``vscen.regcache``), beside what
    came from the cache; nothing is written where nothing is new."""
    from vscen import regcache

    entries, new = {}, False
    for name, info in pm.infos.items():
        if info.cached is not None:
            entries[name] = info.cached
        elif info.files and info.status == "loaded" and not info.ordered:
            try:
                entries[name] = regcache.entry_for(info, pm.get_plugin(name), reg, info.files, KINDS)
                new = True
            except regcache.Uncacheable:
                continue
    if new:
        regcache.imported_to_register = True
        regcache.write(entries)


def _sources(pm: PluginManager, hook: str) -> list:
    """(plugin, function of register or None, cached objects) in pluggy's order: ``trylast``
    implementations, then the plugins in registration order (imported or from the cache), then
    ``tryfirst`` ones and wrappers. A plugin with such an implementation is not cached."""
    first, middle, last = [], {}, []
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if impl.trylast or impl.tryfirst or impl.hookwrapper or impl.wrapper:
            info = pm.infos.get(impl.plugin_name)
            if info is not None:
                info.ordered = True
            (first if impl.trylast else last).append((impl.plugin_name, impl.function, None))
        else:
            middle[impl.plugin_name] = impl.function
    ordered = []
    for name, info in pm.infos.items():
        if name in middle:
            ordered.append((name, middle[name], None))
        elif info.cached is not None and info.status == "loaded":
            ordered.append((name, None, info.cached))
    return first + ordered + last


def build_registry(pm: PluginManager) -> Registry:
    from vscen import regcache
    from vscen.settings import CORE_KEYS

    reg = Registry(infos=pm.infos)
    core_options = frozenset(CORE_KEYS) | {"--" + k.replace("_", "-") for k in CORE_KEYS}
    for kind, (hook, cls) in KINDS.items():
        table = reg.table(kind)
        for plugin, function, cached in _sources(pm, hook):
            got: list = []

            def register(obj, _got=got, _cls=cls, _hook=hook):
                if not isinstance(obj, _cls):
                    raise TypeError(f"{_hook} got {obj!r}, expected a vscen.{_cls.__name__}")
                _got.append(obj)

            if cached is not None:
                got.extend(regcache.objects(cached, kind))
            else:
                try:
                    returned = function(register)
                except Exception as exc:  # reported by name, the others carry on
                    pm.mark_broken(plugin, f"{hook} failed: {type(exc).__name__}: {exc}")
                    continue
                if returned is not None:
                    pm.mark_broken(plugin, f"{hook} returned {_short(returned)} instead of calling register(...) "
                                           "for each object")
                    continue
            for obj in got:
                key = (_ns(kind), obj.name)
                if key in reg.owner:
                    pm.mark_broken(plugin, f"'{obj.name}' is registered by '{reg.owner[key]}' already")
                    continue
                bad = bad_declaration(obj, core_options)
                if bad:
                    pm.mark_broken(plugin, bad)
                    continue
                table[obj.name] = obj
                reg.owner[key] = plugin
                pm.infos[plugin].registers.setdefault(kind, []).append(obj.name)
    _drop_inconsistent(reg, pm)
    return reg


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _drop_inconsistent(reg: Registry, pm: PluginManager) -> None:
    # a broken plugin loses everything it registered; dropping one item can make another
    # name an unknown one: repeat until stable
    while True:
        for name, bad in declaration_problems(reg).items():
            pm.mark_broken(reg.owner[("items", name)], "; ".join(bad))
        for name, setting in reg.settings.items():
            unknown = [i for i in setting.implies if reg.item(i) is None]
            if unknown:
                pm.mark_broken(reg.owner[("settings", name)],
                               f"setting '{name}' implies unknown '{unknown[0]}'")
        gone = [key for key, p in reg.owner.items() if pm.infos[p].status == "broken"]
        if not gone:
            return
        for ns, name in gone:
            del reg.owner[(ns, name)]
            for kind in KINDS:
                if _ns(kind) == ns:
                    reg.table(kind).pop(name, None)


def _ns(kind: str) -> str:
    if kind in ("features", "scenarios", "feature", "scenario"):
        return "items"
    return kind
