"""The generated parts of docs/user-guide.md: the scenarios, features, host checks and host
actions from the plugins' own metadata (summary, details, rules, defaults), the ``vscen run``
options from the command itself, and the shell's commands, so the guide cannot drift from the
code. Each part sits between ``<!-- BEGIN GENERATED name ... -->`` and ``<!-- END GENERATED
name -->``; the rest of the guide is written by hand and left alone.

    python -m vscen.userdoc            # rewrite the generated parts of docs/user-guide.md
    python -m vscen.userdoc --check    # exit 1, saying so, when they are out of date

Only the plugins of vscen's own distribution are documented (an installed third-party plugin
documents itself), and all of them must load.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"
COMMAND = "python -m vscen.userdoc"
BEGIN = "<!-- BEGIN GENERATED {name}: " + COMMAND + " writes this part from the code; do not edit it -->"
END = "<!-- END GENERATED {name} -->"
DISTRIBUTION = "vscen"
WIDTH = 96


def load():
    """(plugin manager, registry) of the entry-point plugins; refuses when one of vscen's own
    is not loaded (disabled or broken), since the guide would silently lose it."""
    from vscen import pipeline
    from vscen.errors import PluginError

    pm, reg = pipeline.load(pipeline.Request(scenarios=[]))
    missing = [f"{i.name} ({i.status}: {i.reason})" for i in pm.infos.values()
               if i.distribution == DISTRIBUTION and i.status != "loaded"]
    if missing:
        raise PluginError(f"userdoc: built-in plugins not loaded, the guide would miss them: {', '.join(missing)}")
    return pm, reg


def sections(pm, reg) -> dict[str, str]:
    """Generated part name -> its Markdown."""
    own = {name for name, info in pm.infos.items() if info.distribution == DISTRIBUTION}

    def built_in(table: str) -> dict:
        return {n: o for n, o in sorted(reg.table(table).items()) if reg.plugin_of(n, table) in own}

    scenarios, features = built_in("scenarios"), built_in("features")
    return {
        "scenarios": _scenarios(reg, scenarios),
        "features": _features(reg, features, scenarios),
        "checks": _checks(reg, built_in("validators"), built_in("host-actions")),
        "options": _options(),
        "shell": _shell(),
        "commands": _commands(reg, {n: c for n, c in sorted(reg.commands.items()) if reg.plugin_of(n, "commands") in own}),
    }


def update(text: str, parts: dict[str, str]) -> str:
    """*text* with each generated part replaced by *parts*' Markdown."""
    from vscen.errors import UsageError

    for name, body in parts.items():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
            raise UsageError(f"userdoc: the guide needs one '{begin}' line and one '{end}' line after it")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n\n{body.strip()}\n\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    path = Path(paths[0]) if paths else GUIDE
    text = path.read_text()
    new = update(text, sections(*load()))
    if new == text:
        print(f"{path}: up to date")
        return 0
    if check:
        print(f"{path}: the generated parts are out of date; refresh them with: {COMMAND}", file=sys.stderr)
        return 1
    path.write_text(new)
    print(f"{path}: generated parts rewritten")
    return 0


# ------------------------------------------------------------------------------------------
# the parts
# ------------------------------------------------------------------------------------------


def _md(text: str) -> str:
    """Prose from a plugin as Markdown: XML fragments as code, so they show. A fragment is
    one span however many tags it has (``<a><b/>`` or ``<a>text</a>``): adjacent spans would
    read as a double backtick."""
    return re.sub(r"<[^<>]*>(?:[^\s<>`]*<[^<>]*>)*", lambda m: f"`{m.group(0)}`", text)


def _para(text: str) -> str:
    return textwrap.fill(_md(text), width=WIDTH, break_long_words=False, break_on_hyphens=False)


def _names(names) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _defaults(defaults: dict) -> str:
    parts = []
    for key, value in defaults.items():
        if isinstance(value, dict):
            parts += [f"{key}.{k} `{_value(v)}`" for k, v in value.items()]
        else:
            parts.append(f"{key} `{_value(value)}`")
    return ", ".join(parts)


def _rules(item) -> list[str]:
    """The bullet lines of an item's rules."""
    lines = []
    if item.kind == "scenario" and item.features:
        lines.append(f"- **features:** {_names(item.features)}")
    if item.implies:
        lines.append(f"- **implies:** {_names(item.implies)}")
    if item.requires:
        lines.append(f"- **requires:** {_names(item.requires)}")
    lines += [f"- **conflicts with** `{c.name}`: {_md(c.reason)}" for c in item.conflicts]
    if item.arches:
        lines.append(f"- **architectures:** {', '.join(item.arches)}")
    if item.validators:
        lines.append(f"- **checks:** {_names(item.validators)}")
    if item.host_actions:
        lines.append(f"- **host actions:** {_names(item.host_actions)}")
    return lines


def _scenarios(reg, scenarios: dict) -> str:
    out = []
    for name, s in scenarios.items():
        out += [f"### `{name}`", "", f"{_md(s.summary)} (plugin `{reg.plugin_of(name, 'scenarios')}`).", ""]
        if s.details:
            out += [_para(s.details), ""]
        lines = _rules(s)
        if s.defaults:
            lines.insert(1 if s.features else 0, f"- **defaults:** {_defaults(dict(s.defaults))}")
        out += lines + ["", f"Try it: `vscen run {name} --dry-run`, or `vscen host check {name}`.", ""]
    return "\n".join(out)


def _features(reg, features: dict, scenarios: dict) -> str:
    from vscen.errors import VscenError
    from vscen.resolve import resolve

    used: dict[str, list[str]] = {}
    for name in scenarios:
        try:
            for item in resolve(reg, [name]).features:
                used.setdefault(item.name, []).append(name)
        except VscenError:  # a scenario that does not resolve is reported by 'vscen rules'
            continue
    out = []
    for category in sorted({f.category for f in features.values()}):
        out += [f"### {category}", ""]
        for name, f in features.items():
            if f.category != category:
                continue
            out += [f"#### `{name}`", "", f"{_md(f.summary)} (plugin `{reg.plugin_of(name)}`).", ""]
            if f.details:
                out += [_para(f.details), ""]
            lines = _rules(f)
            lines.append(f"- **in scenarios:** {_names(used[name])}" if name in used else
                         f"- **in no scenario:** add it with `--feature +{name}`")
            out += lines + [""]
    return "\n".join(out)


def _checks(reg, validators: dict, actions: dict) -> str:
    out = ["| host check | what it checks |", "|---|---|"]
    out += [f"| `{n}` | {_cell(v.summary)}{' (local host only)' if v.local_only else ''} |"
            for n, v in validators.items() if v.kind == "host"]
    from vscen.validate import validators_named

    named = validators_named(reg)
    out += ["", "| domain check (every guest, or only with the items named) | what it checks |", "|---|---|"]
    out += [f"| `{n}` | {_cell(v.summary)}{' (only with ' + _names(named[n]) + ')' if n in named else ''} |"
            for n, v in validators.items() if v.kind == "domain"]
    out += ["", "| host action | what it prepares |", "|---|---|"]
    out += [f"| `{n}` | {_cell(a.summary)}{': ' + _cell(a.details) if a.details else ''} |" for n, a in actions.items()]
    return "\n".join(out)


def _cell(text: str) -> str:
    return _md(" ".join(text.split())).replace("|", "\\|")


def _options() -> str:
    """The options of ``vscen run``, the shell setting and the config key of each."""
    from vscen.cli.shell import COMMAND_PARAMS, keys, long_option, run_params

    by_param = {k.param: k for k in keys() if k.param}
    out = ["| `vscen run` | shell | config file | what it does |", "|---|---|---|---|"]
    for name, param in run_params().items():
        if name == "scenarios":
            option, shell, conf = "SCENARIOS...", "`scenario NAME...`", "-"
        else:
            option = long_option(name)
            key = by_param.get(name)
            shell = f"`{key.name}`" if key else f"`{COMMAND_PARAMS[name]}` (command)"
            conf = _config_key(key)
        out.append(f"| `{option}` | {shell} | {conf} | {_cell(param.help or '')} |")
    for key in keys():
        if not key.param:  # the disk keys: no option of their own
            field = key.name[5:]
            out.append(f"| `--disk {field}=...` | `{key.name}` | {_config_key(key)} | {_cell(key.help)} |")
    return "\n".join(out)


def _config_key(key) -> str:
    if key is None:
        return "-"
    if key.name == "connect":
        return "`connect`"
    if key.setting.startswith("disk."):
        return f"`[disk]` `{key.setting[5:]}`"
    return f"`{key.setting}`" if key.setting else "-"


def _commands(reg, commands: dict) -> str:
    """The built-in plugins' command groups (``vscen.Command``): each command's usage, help
    and options, from the commands themselves; ``vscen list NAME`` where one is listed."""
    import typer.main

    from vscen.cli import _command_app

    out = []
    for name, command in commands.items():
        app = _command_app(command, _Notes(), reg)
        if app is None:
            continue
        # as the command line nests it: a group that loads its commands lazily has none yet
        # on its own, and typer builds no command of that
        outer = typer.Typer()
        outer.add_typer(app, name=name)
        top = typer.main.get_command(outer)
        group = top.get_command(top.context_class(top), name)
        if group is None or not group.list_commands(group.context_class(group)):
            continue
        out += [f"### `vscen {name}`", "", _para(command.summary), ""]
        cctx = group.context_class(group)
        # list_commands/get_command, not .commands: a group may load its commands lazily
        for sub_name in group.list_commands(cctx):
            sub = group.get_command(cctx, sub_name)
            args = [f"{p.name.upper() if p.metavar is None else p.metavar}" for p in sub.params if p.param_type_name == "argument"]
            also = f" (also `vscen list {name}`)" if command.listing == sub_name else ""
            out.append(f"- `vscen {name} {sub_name}{''.join(' ' + a for a in args)} [OPTIONS]`{also}: "
                       + _md(" ".join((sub.help or "").split())))
            for param in sub.params:
                if param.param_type_name == "option" and param.opts[0] != "--help":
                    value = "" if param.is_flag else f" {param.metavar or param.type.name.upper()}"
                    out.append(f"  - `{param.opts[0]}{value}`: {_md(' '.join((param.help or '').split()))}")
        out.append("")
    return "\n".join(out)


class _Notes:
    """Where ``_command_app`` puts a warning (the guide is made from loaded plugins only)."""

    notes: list = []


def _shell() -> str:
    from vscen.cli.shell import command_help

    out = ["| command | what it does |", "|---|---|"]
    for usage, text in command_help():
        usage = usage.replace("|", "\\|")  # a table cell, code span or not
        out.append(f"| `{usage}` | {_cell(text)} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
