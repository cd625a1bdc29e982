"""What the ``vscen`` commands share: the plugins loaded once per process, error output, the
options every command spells the same way, and shell completion of plugin names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

#: set by the root callback
STATE = {"debug": False}

ConnectOpt = Annotated[Optional[str], typer.Option(
    "--connect", "-c", help="libvirt URI (default: the config's connect, LIBVIRT_DEFAULT_URI or qemu:///system).")]
GuestConnectOpt = Annotated[Optional[str], typer.Option(
    "--connect", "-c", help="libvirt URI (default: the one the guest was made on).")]
OutputOpt = Annotated[Optional[Path], typer.Option(help="Where the guests' directories are (default: $XDG_DATA_HOME/vscen).")]
HostFactsOpt = Annotated[Optional[list[Path]], typer.Option(
    "--host-facts", help="Recorded host facts: libvirt capabilities and/or domcapabilities XML, or a 'vscen host snapshot'. Repeatable.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

#: builds the whole command line (set by ``vscen.cli``): the shell runs commands in-process
#: through it, without importing the package that starts the shell
APP: dict = {"build": None}


def err(text: str) -> None:
    typer.echo(text, err=True)


def loaded(config: Path | None = None):
    """(plugin manager, registry) of this process, loaded once per config file: the command
    line is built from them (plugins' options and commands), and the pipeline reuses them."""
    from vscen.guests import loaded as load_once  # one cache with the commands that make many guests

    return load_once(config)


def app():
    """The ``vscen`` Typer app for the default configuration."""
    return APP["build"]()


def registry(config: Path | None = None):
    """The registry, after saying which plugins are broken (for the listing commands)."""
    pm, reg = loaded(config)
    for line in pm.warnings():
        err(f"warning: {line}")
    return reg


def complete(kind: str, incomplete: str) -> list[str]:
    """Shell completion of scenario names, of +/-feature names, or of named hosts."""
    try:
        if kind == "hosts":
            from vscen.config import named_hosts

            return [n for n in named_hosts() if n.startswith(incomplete)]
        _, reg = loaded()
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    if kind == "scenarios":
        return [n for n in sorted(reg.scenarios) if n.startswith(incomplete)]
    sign = incomplete[:1] if incomplete[:1] in "+-" else "+"
    stem = incomplete.lstrip("+-")
    return [sign + n for n in sorted(reg.features) if n.startswith(stem)]


def named_host(name: str, connect, host_facts, config: Path | None):
    """(connect, host_facts) for ``--host NAME``: the named host's uri and recorded facts;
    a UsageError for an unknown name or with --connect/--host-facts."""
    from vscen.config import named_hosts
    from vscen.errors import UsageError

    if connect or host_facts:
        raise UsageError("--host: give either --host NAME or --connect/--host-facts, not both "
                         "(a named host has its uri and facts)")
    hosts = named_hosts(config)
    if name not in hosts:
        known = ", ".join(hosts) or "none"
        raise UsageError(f"--host: '{name}' is not a named host of the config files (named: {known}); "
                         f"add [hosts.{name}] with uri = \"...\" to ~/.config/vscen/config.toml")
    host = hosts[name]
    return host["uri"], [Path(host["facts"])] if host.get("facts") else []


def split_features(values: list[str]) -> tuple[list[str], list[str]]:
    """``+a,-b`` and ``c`` -> (added, removed)."""
    add, remove = [], []
    for v in values:
        for item in filter(None, (x.strip() for x in v.split(","))):
            (remove if item.startswith("-") else add).append(item.lstrip("+-"))
    return add, remove


def rules_of(item) -> dict:
    """A feature's or scenario's rules, as the listings print them."""
    return {"requires": list(item.requires), "implies": list(item.pulls()),
            "conflicts": [{"name": c.name, "reason": c.reason} for c in item.conflicts],
            "arches": list(item.arches), "validators": list(item.validators),
            "host_actions": list(item.host_actions)}


def setting_param(setting) -> str:
    """The ``vscen run`` parameter name of a plugin's setting."""
    return "plugin_" + setting.name.replace(".", "_")
