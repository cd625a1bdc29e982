"""The plugins' settings (``vscen.Setting``): a value given on the command line, in a config
file or in the shell, turned into what the plugin reads, with errors naming the key, the
value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vscen.errors import UsageError, shown

if TYPE_CHECKING:
    from vscen.model import Setting
    from vscen.settings import Settings


_YES_WORDS = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}


def parse_declared(setting: Setting, raw: Any, key: str | None = None) -> Any:
    """The value of a plugin's *setting* from what the user gave (None: its default): a flag
    is yes/no, a repeatable one a tuple; each item is checked against the choices, then
    parsed. Errors name the key, the value and what is allowed."""
    key = key or setting.name
    if raw is None:
        return () if setting.repeatable and setting.default is None else setting.default
    if setting.flag:
        word = raw if isinstance(raw, bool) else _YES_WORDS.get(str(raw).strip().lower()) if isinstance(raw, str) else None
        if word is None:
            raise UsageError(f"{key}: {shown(raw)} is not yes or no")
        return word
    if setting.repeatable:
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        return tuple(_parse_item(setting, item, key) for item in items)
    return _parse_item(setting, raw, key)


def declared_defaults(declared: Mapping[str, Setting]) -> dict[str, Any]:
    """The plugins' settings at their defaults (for a domain no request made: ``vscen validate``)."""
    return {name: parse_declared(s, None) for name, s in declared.items() if not s.is_disk_key}


def _parse_item(setting: Setting, raw: Any, key: str) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise UsageError(f"{key}: {shown(raw)} is not a value{_allowed(setting)}")
    text = str(raw)
    if setting.choices and text not in setting.choices:
        raise UsageError(f"{key}: '{text}' is not one of {', '.join(setting.choices)}")
    if setting.parse is None:
        return text
    try:
        return setting.parse(text)
    except UsageError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise UsageError(f"{key}: '{text}' {exc}".rstrip() + _allowed(setting, exc)) from None


def _allowed(setting: Setting, exc: Exception | None = None) -> str:
    if exc is not None and str(exc):
        return ""
    return f" (for example {setting.example})" if setting.example else ""


def derive_declared(settings: Settings, declared: Mapping[str, Setting]) -> Settings:
    """*settings* with the plugins' settings nobody gave that their ``derive`` finds (an OS
    detected from the ``--cdrom`` ISO), parsed as the user's would be; source "detected"."""
    from dataclasses import replace

    from vscen.errors import PluginError, VscenError

    found: dict[str, Any] = {}
    notes: list[str] = list(settings.notes)
    for name, setting in sorted(declared.items()):
        if setting.derive is None or setting.is_disk_key or name in settings.sources:
            continue
        try:
            raw = setting.derive(settings, notes.append)
        except VscenError:
            raise
        except Exception as exc:  # a plugin's bug: named, not a traceback
            raise PluginError(f"setting '{name}': derive failed: {type(exc).__name__}: {exc}") from exc
        if raw is not None:
            found[name] = parse_declared(setting, raw)
    if not found and len(notes) == len(settings.notes):
        return settings
    return replace(settings, extras={**settings.extras, **found}, notes=tuple(notes),
                   sources={**settings.sources, **{name: "detected" for name in found}})


def check_declared(settings: Settings, declared: Mapping[str, Setting]) -> None:
    """Each plugin setting's ``check`` against the settings (a disk key's against each disk),
    where the setting has a value: one nobody gave (None, or () for a repeatable one) has
    nothing to check, and its plugin is not imported for it."""
    for name, setting in sorted(declared.items()):
        if setting.check is None:
            continue
        owners = settings.disks if setting.is_disk_key else (settings,)
        for owner in owners:
            value = owner.extras.get(setting.key)
            if value is None or value == ():
                continue
            try:
                setting.check(value, owner)
            except UsageError:
                raise
            except (ValueError, TypeError) as exc:
                raise UsageError(f"{name}: {exc}") from None
