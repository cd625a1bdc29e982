"""The shell's settings: one per ``vscen run`` option, the core's and each plugin's, and how
they map to that command's parameters."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Key:
    """One shell setting."""

    name: str
    #: the ``vscen run`` parameter it maps to; "" for a disk key, folded into each --disk spec
    param: str
    #: value (replaced), list (appended to), flag (yes/no), names (the scenarios, replaced)
    kind: str = "value"
    #: the key vscen.settings checks it as ("" for none)
    setting: str = ""
    #: what completes its values: "choices:KEY" (vscen.settings.CHOICES), path, dir, scenario,
    #: feature, boot, network, disk, filesystem, machine, connect; "" for nothing
    values: str = ""
    #: help for keys with no ``vscen run`` option of their own (the others use the option's)
    help: str = ""
    #: the allowed values of a plugin's setting
    choices: tuple[str, ...] = ()
    #: a plugin's ``KEY=VALUE,...`` setting: its keys and what completes them (vscen.Setting.spec)
    spec: Any = None


def _disk_key(field: str, values: str | None = None, help: str = "") -> Key:
    values = f"choices:disk.{field}" if values is None else values
    return Key(f"disk.{field}", "", setting=f"disk.{field}", values=values,
               help=help or f"The disks' {field.replace('_', ' ')} (--disk {field}=...).")


#: the core's shell settings, in the order the status line and ``show`` list them; the
#: plugins' follow (:func:`keys`)
_HEAD: tuple[Key, ...] = (
    Key("scenario", "scenarios", "names", values="scenario"),
    Key("feature", "feature", "list", values="feature"),
    Key("name", "name", setting="name"),
    Key("memory", "memory", setting="memory"),
    Key("vcpu", "vcpu", setting="vcpu"),
    Key("machine", "machine", setting="machine", values="machine"),
    Key("boot", "boot", setting="boot", values="boot"),
    Key("arch", "arch", setting="arch", values="choices:arch"),
    Key("virt-type", "virt_type", setting="virt_type", values="choices:virt_type"),
    Key("firmware", "firmware", setting="firmware", values="choices:firmware"),
    Key("cdrom", "cdrom", setting="cdrom", values="path"),
    Key("network", "network", setting="network", values="network"),
    Key("graphics", "graphics", setting="graphics", values="choices:graphics"),
    Key("disk", "disk", "list", values="disk"),
    _disk_key("path", "path", "The disk image (default: /var/lib/libvirt/images/NAME.FORMAT): --disk path=..."),
    Key("disk.size", "disk_size", setting="disk.size"),
    _disk_key("format"),
    _disk_key("bus"),
    _disk_key("cache"),
    _disk_key("io"),
    _disk_key("discard"),
    _disk_key("preallocation"),
    _disk_key("cluster_size", "", "The qcow2 cluster size, a power of two from 512B to 2MiB (--disk cluster_size=...)."),
    _disk_key("lazy_refcounts"),
    _disk_key("backing", "path", "A base image: the disk becomes a copy-on-write qcow2 overlay on it (--disk backing=...)."),
    Key("transient", "transient", "flag", setting="transient"),
    # the plugins' settings come here (plugin_keys)
)
#: the shell keys after the plugins' settings
_TAIL: tuple[Key, ...] = (
    Key("force", "force", "flag"),
    Key("start", "start", "flag"),
    Key("customise", "set_", "list"),
    Key("config", "config", values="path"),
    Key("host-facts", "host_facts", "list", values="path"),
    Key("connect", "connect", values="connect"),
    Key("host", "host", values="host"),
    Key("output", "output", values="dir"),
    Key("wait", "wait"),
)


@lru_cache(maxsize=1)
def keys() -> tuple[Key, ...]:
    """Every shell setting: the core's, then one per plugin setting (``vscen.Setting``), then
    the run flags and where things come from."""
    from vscen.cli.common import loaded

    _, reg = loaded()
    return _HEAD + tuple(plugin_key(s) for _, s in sorted(reg.settings.items())) + _TAIL


def key_map() -> dict[str, Key]:
    return {k.name: k for k in keys()}


def plugin_key(setting) -> Key:
    """The shell key of a plugin's setting: named as its ``vscen run`` option (``disk.KEY``
    for a disk key), valued as the declaration says."""
    from vscen.cli.common import setting_param

    name = setting.name if setting.is_disk_key else setting.cli_option[2:]
    kind = "flag" if setting.flag else "list" if setting.repeatable else "value"
    return Key(name, setting_param(setting), kind, setting=setting.name, choices=setting.choices,
               values={"FILE": "path", "DIR": "dir"}.get(setting.metavar, ""), spec=dict(setting.spec) or None)
#: ``vscen run`` parameters that are shell commands rather than settings
COMMAND_PARAMS = {"dry_run": "plan", "explain": "explain", "json_": "plan --json, run --json"}
#: what the shell offers for values that have no fixed choices
SUGGEST = {
    "machine": ("q35", "pc", "virt"),
    "connect": ("qemu:///system", "qemu:///session", "test:///default", "qemu+ssh://"),
}
RUN_FLAGS = ("--start", "--force", "--json", "--yes")
_YES = {"yes": True, "y": True, "on": True, "true": True, "1": True,
        "no": False, "n": False, "off": False, "false": False, "0": False}


@lru_cache(maxsize=1)
def run_params() -> dict[str, Any]:
    """The parameters of ``vscen run``, by name (Typer's own Click parameters)."""
    import typer.main

    from vscen.cli.common import app

    return {p.name: p for p in typer.main.get_command(app()).commands["run"].params}


def long_option(param: str) -> str:
    """``--disk-size`` for ``disk_size``: the option ``vscen run`` spells it with."""
    opts = run_params()[param].opts
    return next((o for o in opts if o.startswith("--")), opts[0])


def key_help(key: Key) -> str:
    if key.help:
        return key.help
    return getattr(run_params()[key.param], "help", "") or ""
