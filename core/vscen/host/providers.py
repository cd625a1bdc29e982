"""The facts stage's second half: the plugins' fact providers (``vscen.FactProvider``).

After the core's facts are read (a live probe, recorded files, or the reference host of the
embedded driver), every provider whose fact is not recorded already reads it once, and the
results go into ``HostFacts.extra``, where builds read them (``ctx.host.fact(name)``) and
``vscen host snapshot`` records them. A provider that fails is reported by fact and plugin;
its fact is then None and the others carry on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vscen.errors import VscenError
from vscen.host.connect import on_this_machine

if TYPE_CHECKING:
    from vscen.host.facts import HostFacts


def read_provided(facts: HostFacts, reg, *, settings: Any = None, connection: Any = None,
                  pm=None, names=None) -> HostFacts:
    """*facts* with the facts of the providers in *reg* (``Registry.facts``) that *facts*
    lacks: those named in *names* (the chosen items' ``facts``), or every one (None: a
    snapshot). *connection*: the open connection the facts were read from (None for recorded
    hosts); a provider that fails is a line in *pm*'s warnings (``pm.notes``)."""
    from vscen.host.facts import FactProbe

    extra = {k: v for k, v in facts.extra.items() if v is not None}
    out = replace(facts, extra=extra)
    if not reg.facts:
        return out
    local = on_this_machine(connection)
    probe = FactProbe(host=out, settings=settings, connection=connection, local=local)
    wanted = None if names is None else set(names)
    for name, provider in reg.facts.items():
        if name in extra or (wanted is not None and name not in wanted):  # recorded, or not needed
            continue
        try:
            value = plain(provider.read(probe))
        except VscenError:
            raise
        except Exception as exc:  # the plugin's fault: named, and the others carry on
            if pm is not None:
                pm.notes.append(f"{_who(reg, pm, name)}: fact '{name}' could not be read: {type(exc).__name__}: "
                     f"{exc}; it is unknown to this run")
            value = None
        if value is not None:  # unknown facts are absent, as in a snapshot
            extra[name] = value
    return out


def plain(value: Any) -> Any:
    """*value* as JSON gives it back (``json.loads(json.dumps(value, allow_nan=False,
    sort_keys=True))``: tuples become lists, keys strings, in sorted order), so a fact read live
    and one replayed from a snapshot are equal; TypeError or ValueError where JSON cannot hold
    it (an object, NaN). Written out: importing ``json`` would cost every run more than this."""
    if value is None:
        return None
    try:
        return _plain(value)
    except RecursionError:
        raise ValueError("not plain JSON-able data (Circular reference detected)") from None
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"not plain JSON-able data ({exc})") from None


_KEYWORDS = {True: "true", False: "false", None: "null"}


def _plain(value: Any) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for key, v in sorted(value.items()):  # as sort_keys: the keys as given, compared
            name = _key(key)  # the key before its value, as json (which error comes first)
            out[name] = _plain(v)  # where two keys give one string, the last one stays
        return out
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _finite(value: float) -> float:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    return float(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str.__str__(key)
    if key is True or key is False or key is None:
        return _KEYWORDS[key]
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return float.__repr__(_finite(key))
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _who(reg, pm, name: str) -> str:
    plugin = reg.plugin_of(name, "facts")
    info = pm.infos.get(plugin)
    return f"plugin '{plugin}'" + (f" from {info.distribution} {info.version}" if info else "")


def unused_notes(settings, reg, names) -> list[str]:
    """The ``unused`` notes of providers whose setting the user gave but whose fact no chosen
    item names (*names*)."""
    return [p.unused for name, p in reg.facts.items()
            if p.unused and p.setting and settings.get(p.setting) and name not in names]
