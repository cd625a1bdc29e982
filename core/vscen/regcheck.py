"""What the registry checks of the plugins' declarations: each one on its own (a setting's and a
command's name, not one of the core's), and the items together (every name they refer to is
registered, no item implies itself, none conflicts with what it implies)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vscen.chars import DIGITS, LOWER, spelled
from vscen.model import Command, Rules, Setting

if TYPE_CHECKING:
    from vscen.registry import Registry

#: the core's commands: a plugin's command group may not take one of these names
CORE_COMMANDS = frozenset({"run", "destroy", "status", "list", "plugins", "rules", "validate", "shell", "host", "plugin"})


#: what a setting's and a command's name are made of (a lower-case letter first)
SETTING_CHARS = LOWER | DIGITS | {"_"}
COMMAND_CHARS = LOWER | DIGITS | {"-"}


def bad_declaration(obj, core_options: frozenset = frozenset()) -> str:
    """What is wrong with one declaration on its own (settings: a valid, free name, not one of
    the core's settings nor of their options, *core_options*)."""
    if isinstance(obj, Setting):
        if not isinstance(obj.name, str) or not spelled(obj.name.removeprefix("disk."), LOWER, SETTING_CHARS, 40):
            return f"setting '{obj.name}': a name is lower-case letters, digits and '_' (disk keys: 'disk.NAME')"
        if obj.name in core_options or obj.cli_option in core_options:
            return f"setting '{obj.name}' ({obj.cli_option}) is one of vscen's own settings"
        if obj.flag and (obj.repeatable or obj.choices):
            return f"setting '{obj.name}': a flag is neither repeatable nor a choice"
    if isinstance(obj, Command):
        if obj.name in CORE_COMMANDS:
            return f"command '{obj.name}' is one of vscen's own commands"
        if not spelled(obj.name, LOWER, COMMAND_CHARS, 40):
            return f"command '{obj.name}': a name is lower-case letters, digits and '-'"
    return ""


def declaration_problems(reg: Registry) -> dict[str, list[str]]:
    """Problems per item name: unknown names, self-conflicts, cycles in implies."""
    items = reg.items()
    problems: dict[str, list[str]] = {}
    for name, item in items.items():
        bad = problems.setdefault(name, [])
        for ref in item.requires + item.pulls() + tuple(c.name for c in item.conflicts):
            if ref not in items:
                bad.append(f"{item.kind} '{name}' names unknown '{ref}'")
        for v in item.validators:
            if v not in reg.validators:
                bad.append(f"{item.kind} '{name}' names unknown validator '{v}'")
        for a in item.host_actions:
            if a not in reg.host_actions:
                bad.append(f"{item.kind} '{name}' names unknown host action '{a}'")
        for f in item.facts:
            if f not in reg.facts:
                bad.append(f"{item.kind} '{name}' names unknown host fact '{f}'")
        reached = _closure(items, name)
        if name in reached:
            bad.append(f"{item.kind} '{name}' implies itself (a cycle)")
        for c in item.conflicts:
            if c.name in reached | {name}:
                bad.append(f"{item.kind} '{name}' conflicts with '{c.name}', which it implies")
    return {k: v for k, v in problems.items() if v}


def _closure(items: dict[str, Rules], name: str) -> set[str]:
    """Names reached from *name* through pulls (implies, a scenario's features); *name*
    itself only if it is on a cycle."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        item = items.get(todo.pop())
        for ref in item.pulls() if item else ():
            if ref not in seen:
                seen.add(ref)
                todo.append(ref)
    return seen
