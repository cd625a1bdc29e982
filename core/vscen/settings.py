"""What users care about: name, memory, vcpu, machine, boot, disks, network...

Settings come in layers, each overriding the one before:
built-in defaults < scenario defaults < system config < user config < ``--config`` file <
command-line options. Every value is parsed and checked here, so a bad one gets a one-line
error naming the field, the value and what is allowed, before anything is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vscen.chars import ALNUM, DIGITS, LOWER, UPPER, spelled
from vscen.config import flatten
from vscen.declared import check_declared, derive_declared, parse_declared
from vscen.errors import UsageError, shown
from vscen.model import Setting

#: where disks without a path live (libvirt's default storage pool directory)
IMAGES_DIR = "/var/lib/libvirt/images"

_UNITS = {
    "": 1024**2, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2,
    "mb": 1000**2, "g": 1024**3, "gib": 1024**3, "gb": 1000**3, "t": 1024**4, "tib": 1024**4,
    "tb": 1000**4,
}
_LETTERS = "".join(sorted(LOWER | UPPER))
#: what a guest's name may hold besides ASCII letters and digits (it starts with one of those)
NAME_MARKS = frozenset("_.+-")
#: a libvirt network's or a bridge's name; a NIC model's
NETWORK_CHARS = ALNUM | frozenset("_.:-")
MODEL_CHARS = LOWER | DIGITS | {"-"}
CHOICES = {
    "arch": ("x86_64", "aarch64", "i686", "ppc64le", "s390x", "riscv64"),
    "virt_type": ("kvm", "qemu"),
    "firmware": ("efi", "bios"),
    "graphics": ("spice", "vnc", "none"),
    "boot": ("hd", "cdrom", "network", "fd"),
    "disk.format": ("qcow2", "raw"),
    "disk.bus": ("virtio", "scsi", "sata", "nvme", "usb"),
    "disk.cache": ("none", "writeback", "writethrough", "directsync", "unsafe", "default"),
    "disk.io": ("native", "threads", "io_uring", "default"),
    "disk.discard": ("unmap", "ignore"),
    "disk.preallocation": ("off", "metadata", "falloc", "full"),
    "disk.lazy_refcounts": ("yes", "no"),
}
#: what every guest has, and the options of ``vscen run`` itself: a plugin's setting may not
#: take one of these names (``vscen.Setting``)
CORE_KEYS = frozenset({
    "name", "memory", "vcpu", "arch", "machine", "virt_type", "firmware", "boot", "cdrom",
    "network", "graphics", "disk", "disk_size", "connect", "output", "disabled_plugins",
    "feature", "set", "config", "host_facts", "dry_run", "explain", "force", "start", "json",
    "debug", "version", "help", "host", "hosts",
})
#: the core's disk keys; plugins add their own (``vscen.Setting`` named ``disk.KEY``)
DISK_KEYS = ("path", "size", "format", "bus", "cache", "io", "discard", "backing",
             "preallocation", "cluster_size", "lazy_refcounts")
#: the memory a guest may have, in KiB: below 16 MiB no firmware and kernel start; above 64 TiB
#: no x86 or arm host QEMU runs on has it
MIN_MEMORY_KIB = 16 * 1024
MAX_MEMORY_KIB = 64 * 1024**3
#: the disk caches that bypass the host's page cache (O_DIRECT), which io='native' needs
DIRECT_CACHES = ("none", "directsync")
#: built-in defaults; scenarios override them, users override scenarios
BUILTIN: dict[str, Any] = {
    "memory": "2GiB", "vcpu": 2, "network": "network=default", "disk.size": "20GiB",
    "disk.format": "qcow2", "disk.bus": "virtio", "disk.cache": "default", "disk.io": "default",
}


def parse_size(field_name: str, value, default_unit: str = "") -> int:
    """Bytes from '4GiB', '512M', '20G', '1024' (MiB, as virt-install)."""
    text = str(value).strip()
    number = text.rstrip(_LETTERS)
    letters = text[len(number):]
    whole, dot, fraction = number.rstrip().partition(".")
    unit = letters.lower() or default_unit
    if (unit not in _UNITS or not spelled(whole, DIGITS, DIGITS, 20)
            or (dot and not spelled(fraction, DIGITS, DIGITS, 20))):
        raise UsageError(
            f"{field_name}: '{value}' is not a size; give a number with a unit such as "
            "512MiB, 4GiB, 20G (K, M, G, T are binary; KB, MB, GB, TB decimal)"
        )
    size = int(float(f"{whole}{dot}{fraction}") * _UNITS[unit])
    if size <= 0:
        raise UsageError(f"{field_name}: '{value}' must be greater than zero")
    return size


def check_name(value: str) -> str:
    if not spelled(str(value), ALNUM, ALNUM | NAME_MARKS, 64) or ".." in str(value):
        raise UsageError(
            f"name: '{value}' is not allowed; use 1-64 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit (no '/', '..', spaces or XML characters)"
        )
    return str(value)


def check_choice(key: str, value) -> str:
    if str(value) not in CHOICES[key]:
        raise UsageError(f"{key}: '{value}' is not one of {', '.join(CHOICES[key])}")
    return str(value)


def check_path(key: str, value) -> str:
    text = str(value)
    if not text or "\0" in text or any(c in text for c in "<>\"'&") or not text.startswith("/"):
        raise UsageError(f"{key}: '{value}' must be an absolute path without XML characters")
    return os.path.normpath(text)


@dataclass(frozen=True)
class Disk:
    """One disk of the guest, as ``--disk`` and the config give it."""

    path: str | None
    size: int  # bytes
    format: str
    bus: str
    cache: str
    io: str
    discard: str | None = None
    #: a base image: the disk is a copy-on-write overlay on it
    backing: str | None = None
    preallocation: str = "off"
    cluster_size: int | None = None  # bytes (qcow2)
    lazy_refcounts: bool = False
    #: the plugins' disk keys (``vscen.Setting`` named ``disk.KEY``), parsed: ``disk.KEY``
    extras: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __getattr__(self, name: str):
        return _extra(self, name, "disk key")

    def get(self, key: str, default: Any = None) -> Any:
        """A disk key, the core's or a plugin's, or *default* where no loaded plugin has it."""
        return getattr(self, key, default)


@dataclass(frozen=True)
class Network:
    """The guest's network interface, as ``--network`` gives it."""

    kind: str  # network | bridge | user | none
    source: str = ""
    model: str = "virtio"


@dataclass(frozen=True)
class Settings:
    """The settings users care about, merged from options, config files and scenario defaults."""

    name: str
    memory: int  # KiB
    vcpu: int
    arch: str | None = None
    machine: str | None = None
    virt_type: str | None = None
    firmware: str | None = None
    boot: tuple[str, ...] = ("hd",)
    disks: tuple[Disk, ...] = ()
    cdrom: str | None = None
    network: Network = Network("none")
    graphics: str | None = None
    #: a transient guest: started, never defined; gone when it stops (how the core defines it)
    transient: bool = False
    #: the plugins' settings (``vscen.Setting``), parsed, by name: ``settings.NAME``
    extras: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: key -> where its value came from ("default", "scenario desktop", "option", "config ...")
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    #: what the settings decided for the user ("disk 1: io=threads, since ..."), shown as notes
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __getattr__(self, name: str):
        return _extra(self, name, "setting")

    def get(self, name: str, default: Any = None) -> Any:
        """A setting, the core's or a plugin's, or *default* where no loaded plugin declares it
        (its plugin disabled, say): what a plugin uses for another plugin's setting."""
        return getattr(self, name, default)

    def disk_path(self, index: int) -> str:
        """The disk's path, or where vscen puts it: IMAGES_DIR/NAME[-N].FORMAT."""
        disk = self.disks[index]
        suffix = "" if index == 0 else f"-{index}"
        return disk.path or f"{IMAGES_DIR}/{self.name}{suffix}.{disk.format}"

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")

    def level(self, key: str) -> str:
        """Precedence level of a setting, for the domain model."""
        src = self.source(key)
        return "user" if src.startswith(("option", "config")) else "scenario" if src.startswith("scenario") else "default"


def _extra(obj, name: str, what: str):
    """A plugin's value from ``obj.extras``; called only when *name* is no field."""
    extras = obj.__dict__.get("extras")
    if extras is not None and name in extras:
        return extras[name]
    raise AttributeError(f"no {what} '{name}': no loaded plugin declares it (vscen.Setting)")


def _not_text(text: str) -> bool:
    """Whether *text* holds what no setting may: control characters (a tab aside), and lone
    surrogates (what Python makes of a command line's bytes that are not UTF-8)."""
    return not text.isprintable() and any(
        (c < " " and c != "\t") or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in text)


def _check_text(key: str, value: Any) -> None:
    """A UsageError where a string of *value* (or of its list) is not plain text."""
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(item, str) and _not_text(item):
            raise UsageError(f"{key}: {item!r:.80} holds characters that are not text (control characters, "
                             "or bytes that are not UTF-8)")


def parse_disk(spec: str, defaults: dict[str, Any], declared: Mapping[str, Setting] | None = None) -> Disk | None:
    """``path=/x.qcow2,size=20G,format=qcow2,bus=virtio,cache=none,io=native`` or ``none``;
    *declared* holds the plugins' disk keys (``disk.KEY`` settings)."""
    if spec.strip() == "none":
        return None
    keys = disk_keys(declared)
    values = {k[5:]: v for k, v in defaults.items() if k.startswith("disk.")}
    for part in filter(None, spec.split(",")):
        key, sep, value = part.partition("=")
        if not sep and key.startswith("/"):
            key, value = "path", key  # a bare path, as virt-install accepts
        elif key not in keys or not sep:
            raise UsageError(f"disk: '{part}' is not KEY=VALUE with KEY one of {', '.join(keys)}")
        values[key] = value
    return make_disk(values, declared)


def disk_keys(declared: Mapping[str, Setting] | None = None) -> tuple[str, ...]:
    """The core's disk keys, then the plugins'."""
    return DISK_KEYS + tuple(s.key for s in (declared or {}).values() if s.is_disk_key)


def make_disk(values: dict[str, Any], declared: Mapping[str, Setting] | None = None) -> Disk:
    plugin = {s.key: s for s in (declared or {}).values() if s.is_disk_key}
    extras = {key: parse_declared(setting, values.get(key), f"disk.{key}") for key, setting in plugin.items()}
    values = {k: _yes_no(v) for k, v in values.items() if k not in plugin}
    for key in ("format", "bus", "cache", "io", "discard", "preallocation", "lazy_refcounts"):
        if values.get(key) is not None:
            check_choice(f"disk.{key}", values[key])
    if values.get("backing") and values["format"] != "qcow2":
        raise UsageError(f"disk.backing: an overlay must be qcow2, not {values['format']}")
    cluster = values.get("cluster_size")
    return Disk(
        path=check_path("disk.path", values["path"]) if values.get("path") else None,
        size=parse_size("disk.size", values.get("size", "20GiB"), "g"),
        format=values["format"], bus=values["bus"], cache=values["cache"], io=values["io"],
        discard=values.get("discard"),
        backing=check_path("disk.backing", values["backing"]) if values.get("backing") else None,
        preallocation=values.get("preallocation") or "off",
        cluster_size=parse_size("disk.cluster_size", cluster, "k") if cluster else None,
        lazy_refcounts=values.get("lazy_refcounts") == "yes",
        extras=extras,
    )


def _yes_no(value):
    """TOML booleans for yes/no keys."""
    return ("yes" if value else "no") if isinstance(value, bool) else value


def parse_network(value: str) -> Network:
    text = str(value).strip()
    if text in ("none", "user"):
        return Network(text)
    parts = dict(p.partition("=")[::2] for p in text.split(","))
    model = parts.pop("model", "virtio") or "virtio"
    kinds = [k for k in parts if k in ("network", "bridge")]
    if len(kinds) != 1 or len(parts) != 1 or not spelled(parts[kinds[0]], NETWORK_CHARS, NETWORK_CHARS):
        raise UsageError(
            f"network: '{value}' is not one of network=NAME, bridge=NAME, user, none "
            "(optionally ,model=MODEL)"
        )
    if not spelled(model, MODEL_CHARS, MODEL_CHARS):
        raise UsageError(f"network: model '{model}' is not a device model name")
    return Network(kinds[0], parts[kinds[0]], model)


def build_settings(
    scenario_defaults: list[tuple[str, dict[str, Any]]],
    layers: list[tuple[str, dict[str, Any]]],
    disks: list[str] | None = None,
    declared: Mapping[str, Setting] | None = None,
) -> tuple[Settings, list[str]]:
    """Merge the layers; returns the settings and the conflicts between scenario defaults.

    *scenario_defaults* are (scenario name, defaults); *layers* are (label, values) from the
    config files and options, lowest precedence first; *disks* are ``--disk`` specs;
    *declared* are the plugins' settings (``vscen.Setting``) by name.
    """
    declared = declared or {}
    for _label, layer in layers:
        for key, value in layer.items():
            _check_text(key, value)
    for spec in disks or ():
        _check_text("disk", spec)
    values: dict[str, Any] = dict(BUILTIN)
    sources = {k: "default" for k in values}
    conflicts = []
    seen: dict[str, tuple[str, Any]] = {}
    for scenario, defaults in scenario_defaults:
        for key, value in flatten(dict(defaults)).items():
            if key in seen and seen[key][1] != value:
                conflicts.append((key, seen[key], (scenario, value)))
            seen.setdefault(key, (scenario, value))
            values[key], sources[key] = seen[key][1], f"scenario {seen[key][0]}"
    for label, layer in layers:
        for key, value in layer.items():
            if value is not None:
                values[key], sources[key] = value, label
    problems = [
        f"{key}: scenario '{a[0]}' wants '{a[1]}' and scenario '{b[0]}' wants '{b[1]}'; "
        f"set it yourself to decide ({_option_hint(key, declared)})"
        for key, a, b in conflicts
        if not sources[key].startswith(("option", "config"))
    ]

    keys = disk_keys(declared)
    if "disk" in values:
        raise UsageError(
            f"disk: {shown(values['disk'])} must be a table of {', '.join(keys[1:])} "
            "([disk] in a config file); disks themselves are given with --disk"
        )
    known = _KNOWN | {n for n, s in declared.items() if not s.is_disk_key}
    unknown = [k for k in values if k not in known and not (k.startswith("disk.") and k[5:] in keys)]
    if unknown:
        raise UsageError(f"settings: unknown key '{unknown[0]}'; known keys are {', '.join(sorted(known))}"
                         + (f", and disk.KEY with KEY one of {', '.join(keys)}" if unknown[0].startswith("disk.") else ""))
    if not values.get("name"):
        raise UsageError("name: no name given and no scenario to derive one from")
    memory = parse_size("memory", values["memory"]) // 1024
    if not MIN_MEMORY_KIB <= memory <= MAX_MEMORY_KIB:
        raise UsageError(f"memory: '{values['memory']}' is {'too small' if memory < MIN_MEMORY_KIB else 'too large'}; "
                         "give from 16MiB (firmware and a kernel need that much) to 64TiB")
    try:
        # TOML gives bools and floats: refuse them rather than truncate (True -> 1, 2.7 -> 2)
        vcpu = 0 if isinstance(values["vcpu"], (bool, float)) else int(values["vcpu"])
    except (TypeError, ValueError):
        vcpu = 0
    if vcpu < 1 or vcpu > 4096:
        raise UsageError(f"vcpu: '{values['vcpu']}' must be a whole number from 1 to 4096")
    boot = values.get("boot")
    if boot is None:
        boot = "cdrom,hd" if values.get("cdrom") else "hd"
    boot_list = tuple(boot) if isinstance(boot, (list, tuple)) else tuple(b.strip() for b in str(boot).split(","))
    for b in boot_list:
        check_choice("boot", b)
    for key in ("arch", "virt_type", "firmware", "graphics"):
        if values.get(key) is not None:
            check_choice(key, values[key])
    machine = values.get("machine")
    if machine is not None and not spelled(str(machine), ALNUM, ALNUM | {".", "_", "-"}):
        raise UsageError(f"machine: '{machine}' is not a machine type name (q35, pc, virt, pc-q35-8.2...)")
    disk_list: list[Disk] = []
    notes: list[str] = []
    disk_defaults = {k[5:]: v for k, v in values.items() if k.startswith("disk.")}
    for spec in disks if disks else [None]:
        d = make_disk(dict(disk_defaults), declared) if spec is None else parse_disk(spec, values, declared)
        if d is None:
            continue
        io_given = sources.get("disk.io", "default").startswith(("option", "config")) or \
            (spec is not None and any(p.partition("=")[0].strip() == "io" for p in spec.split(",")))
        if d.io == "native" and d.cache not in DIRECT_CACHES and not io_given:
            # the scenario's io=native, the user's cache: io follows the cache the user chose
            notes.append(f"disk {len(disk_list) + 1}: io=threads, since io=native needs cache=none or "
                         f"directsync and cache={d.cache} was chosen (give --disk io=... to decide)")
            d = replace(d, io="threads")
        disk_list.append(d)
    if disks:
        sources["disks"] = "option"
    extras = {name: parse_declared(setting, values.get(name))
              for name, setting in sorted(declared.items()) if not setting.is_disk_key}
    settings = Settings(
        name=check_name(values["name"]), memory=memory, vcpu=vcpu, arch=values.get("arch"),
        machine=machine, virt_type=values.get("virt_type"), firmware=values.get("firmware"),
        boot=boot_list, disks=tuple(disk_list),
        cdrom=check_path("cdrom", values["cdrom"]) if values.get("cdrom") else None,
        network=parse_network(values["network"]), graphics=values.get("graphics"),
        transient=parse_declared(_TRANSIENT, values.get("transient")),
        extras=extras, sources=sources, notes=tuple(notes),
    )
    settings = derive_declared(settings, declared)
    check_declared(settings, declared)
    return settings, problems


def _option_hint(key: str, declared: Mapping[str, Setting]) -> str:
    if key.startswith("disk."):
        return f"--disk {key[5:]}=VALUE"
    if key in declared:
        return f"{declared[key].cli_option}" + ("" if declared[key].flag else " VALUE")
    return f"--{key.replace('_', '-')} VALUE"


#: the core's one switch (how the guest is defined), parsed as a plugin's flag would be
_TRANSIENT = Setting(name="transient", help="Start a transient guest: never defined, gone when it stops.",
                     flag=True, default=False)

_KNOWN = {"name", "memory", "vcpu", "arch", "machine", "virt_type", "firmware", "boot", "cdrom",
          "network", "graphics", "connect", "output", "transient"}
