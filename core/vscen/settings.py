"""What users care about: name, memory, vcpu, machine, boot, disks, network...

Settings come in layers, each overriding the one before:
built-in defaults < scenario defaults < system config < user config < ``--config`` file <
command-line options. Every value is parsed and checked here, so a bad one gets a one-line
error naming the field, the value and what is allowed, before anything is built.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vscen.errors import UsageError

SYSTEM_CONFIG = Path("/etc/vscen/config.toml")
#: where disks without a path live (libvirt's default storage pool directory)
IMAGES_DIR = "/var/lib/libvirt/images"

_UNITS = {
    "": 1024**2, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2,
    "mb": 1000**2, "g": 1024**3, "gib": 1024**3, "gb": 1000**3, "t": 1024**4, "tib": 1024**4,
    "tb": 1000**4,
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
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
    "disk.encrypt": ("yes", "no"),
    "hugepages": ("auto", "reserve", "persistent"),
}
#: what every guest has, and the options of ``vscen run`` itself: a plugin's setting may not
#: take one of these names (``vscen.Setting``)
CORE_KEYS = frozenset({
    "name", "memory", "vcpu", "arch", "machine", "virt_type", "firmware", "boot", "cdrom",
    "network", "graphics", "disk", "disk_size", "connect", "output", "disabled_plugins",
    "feature", "set", "config", "host_facts", "dry_run", "explain", "force", "start", "json",
    "debug", "version", "help",
})
DISK_KEYS = ("path", "size", "format", "bus", "cache", "io", "discard", "backing",
             "preallocation", "cluster_size", "lazy_refcounts", "encrypt")
#: built-in defaults; scenarios override them, users override scenarios
BUILTIN: dict[str, Any] = {
    "memory": "2GiB", "vcpu": 2, "network": "network=default", "disk.size": "20GiB",
    "disk.format": "qcow2", "disk.bus": "virtio", "disk.cache": "default", "disk.io": "default",
}


def parse_size(field_name: str, value, default_unit: str = "") -> int:
    """Bytes from '4GiB', '512M', '20G', '1024' (MiB, as virt-install)."""
    text = str(value).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text)
    unit = (m.group(2) if m else "").lower() or default_unit
    if not m or unit not in _UNITS:
        raise UsageError(
            f"{field_name}: '{value}' is not a size; give a number with a unit such as "
            "512MiB, 4GiB, 20G (K, M, G, T are binary; KB, MB, GB, TB decimal)"
        )
    size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise UsageError(f"{field_name}: '{value}' must be greater than zero")
    return size


def check_name(value: str) -> str:
    if not NAME_RE.match(str(value)) or ".." in str(value):
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
    #: LUKS-encrypted (qcow2), with a libvirt secret holding the passphrase
    encrypt: bool = False


@dataclass(frozen=True)
class Network:
    kind: str  # network | bridge | user | none
    source: str = ""
    model: str = "virtio"


@dataclass(frozen=True)
class Filesystem:
    source: str  # host directory
    target: str  # mount tag in the guest
    readonly: bool = False


def parse_filesystem(spec: str) -> Filesystem:
    """``source=/srv/data,target=data[,readonly=yes]`` or ``/srv/data:data[:ro]``."""
    if "=" in spec:
        parts = dict(p.partition("=")[::2] for p in spec.split(","))
    else:
        bits = spec.split(":")
        parts = {"source": bits[0], "target": bits[1] if len(bits) > 1 else ""}
        if len(bits) > 2:
            parts["readonly"] = "yes" if bits[2] == "ro" else bits[2]
    extra = set(parts) - {"source", "target", "readonly"}
    target = parts.get("target", "")
    if extra or not re.fullmatch(r"[A-Za-z0-9_.-]{1,36}", target) or parts.get("readonly", "no") not in ("yes", "no"):
        raise UsageError(
            f"filesystem: '{spec}' is not source=/HOST/DIR,target=TAG[,readonly=yes] "
            "(TAG: 1-36 letters, digits, '.', '_' or '-')"
        )
    return Filesystem(check_path("filesystem.source", parts.get("source", "")), target,
                      parts.get("readonly") == "yes")


@dataclass(frozen=True)
class Settings:
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
    filesystems: tuple[Filesystem, ...] = ()
    #: the libvirt storage pool for new disks (default: the pool holding their directory)
    pool: str | None = None
    #: huge pages: use what is free (auto), or reserve what is missing (reserve, persistent)
    hugepages: str = "auto"
    #: other hosts the guest must be able to run on (libvirt URIs or recorded host facts)
    peers: tuple[str, ...] = ()
    #: host devices to assign: PCI address (0000:03:00.0), pci:VENDOR:PRODUCT or usb:VENDOR:PRODUCT
    hostdevs: tuple[str, ...] = ()
    #: a transient guest: started, never defined; gone when it stops
    transient: bool = False
    #: key -> where its value came from ("default", "scenario desktop", "option", "config ...")
    sources: dict[str, str] = field(default_factory=dict, compare=False)

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


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if isinstance(value, dict) and key == "disk":
            out.update(flatten(value, "disk."))
        else:
            out[prefix + key] = value
    return out


def load_config(path: Path, required: bool) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise UsageError(f"--config: '{path}' does not exist") from None
        return {}
    except OSError as exc:
        raise UsageError(f"config {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: not valid TOML ({exc})") from None
    return flatten(data)


def config_layers(explicit: Path | None) -> list[tuple[str, dict[str, Any]]]:
    """(label, values) of the config files in precedence order, lowest first."""
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    layers = [(f"config {SYSTEM_CONFIG}", load_config(SYSTEM_CONFIG, False)),
              (f"config {xdg / 'vscen/config.toml'}", load_config(xdg / "vscen/config.toml", False))]
    if explicit is not None:
        layers.append((f"config {explicit}", load_config(explicit, True)))
    return layers


def config_value(key: str, explicit: Path | None = None):
    """The value of a non-guest key (``output``, ``connect``...) from the config files, the
    highest-precedence one that sets it, or None."""
    value = None
    for _, values in config_layers(explicit):
        value = values.get(key, value)
    return value


def parse_disk(spec: str, defaults: dict[str, Any]) -> Disk | None:
    """``path=/x.qcow2,size=20G,format=qcow2,bus=virtio,cache=none,io=native`` or ``none``."""
    if spec.strip() == "none":
        return None
    values = {k[5:]: v for k, v in defaults.items() if k.startswith("disk.")}
    for part in filter(None, spec.split(",")):
        key, sep, value = part.partition("=")
        if not sep and key.startswith("/"):
            key, value = "path", key  # a bare path, as virt-install accepts
        elif key not in DISK_KEYS or not sep:
            raise UsageError(f"disk: '{part}' is not KEY=VALUE with KEY one of {', '.join(DISK_KEYS)}")
        values[key] = value
    return make_disk(values)


def make_disk(values: dict[str, Any]) -> Disk:
    values = {k: _yes_no(v) for k, v in values.items()}
    for key in ("format", "bus", "cache", "io", "discard", "preallocation", "lazy_refcounts", "encrypt"):
        if values.get(key) is not None:
            check_choice(f"disk.{key}", values[key])
    encrypt = values.get("encrypt") == "yes"
    if encrypt and values["format"] != "qcow2":
        raise UsageError(f"disk.encrypt: an encrypted disk must be qcow2 (LUKS inside qcow2), not {values['format']}")
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
        encrypt=encrypt,
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
    if len(kinds) != 1 or len(parts) != 1 or not re.fullmatch(r"[A-Za-z0-9_.:-]+", parts[kinds[0]] or ""):
        raise UsageError(
            f"network: '{value}' is not one of network=NAME, bridge=NAME, user, none "
            "(optionally ,model=MODEL)"
        )
    if not re.fullmatch(r"[a-z0-9-]+", model):
        raise UsageError(f"network: model '{model}' is not a device model name")
    return Network(kinds[0], parts[kinds[0]], model)


def build_settings(
    scenario_defaults: list[tuple[str, dict[str, Any]]],
    layers: list[tuple[str, dict[str, Any]]],
    disks: list[str] | None = None,
) -> tuple[Settings, list[str]]:
    """Merge the layers; returns the settings and the conflicts between scenario defaults.

    *scenario_defaults* are (scenario name, defaults); *layers* are (label, values) from the
    config files and options, lowest precedence first; *disks* are ``--disk`` specs.
    """
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
        f"set it yourself to decide ({_option_hint(key)})"
        for key, a, b in conflicts
        if not sources[key].startswith(("option", "config"))
    ]

    if "disk" in values:
        raise UsageError(
            f"disk: '{values['disk']}' must be a table of {', '.join(DISK_KEYS[1:])} "
            "([disk] in a config file); disks themselves are given with --disk"
        )
    unknown = [k for k in values if k not in _KNOWN and not (k.startswith("disk.") and k[5:] in DISK_KEYS)]
    if unknown:
        raise UsageError(f"settings: unknown key '{unknown[0]}'; known keys are {', '.join(sorted(_KNOWN))}")
    if not values.get("name"):
        raise UsageError("name: no name given and no scenario to derive one from")
    memory = parse_size("memory", values["memory"]) // 1024
    if memory < 1024:
        raise UsageError(f"memory: '{values['memory']}' is too small; give at least 1MiB")
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
    if machine is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(machine)):
        raise UsageError(f"machine: '{machine}' is not a machine type name (q35, pc, virt, pc-q35-8.2...)")
    disk_list: list[Disk] = []
    for spec in disks if disks else [None]:
        d = make_disk({k[5:]: v for k, v in values.items() if k.startswith("disk.")}) if spec is None else parse_disk(spec, values)
        if d is not None:
            disk_list.append(d)
    if disks:
        sources["disks"] = "option"
    settings = Settings(
        name=check_name(values["name"]), memory=memory, vcpu=vcpu, arch=values.get("arch"),
        machine=machine, virt_type=values.get("virt_type"), firmware=values.get("firmware"),
        boot=boot_list, disks=tuple(disk_list),
        cdrom=check_path("cdrom", values["cdrom"]) if values.get("cdrom") else None,
        network=parse_network(values["network"]), graphics=values.get("graphics"),
        filesystems=tuple(parse_filesystem(f) for f in _as_list(values.get("filesystem"))),
        pool=_pool(values.get("pool")),
        peers=tuple(str(p) for p in _as_list(values.get("peers"))),
        hostdevs=tuple(_hostdev(h) for h in _as_list(values.get("hostdev"))),
        transient=_yes_no(values.get("transient", "no")) == "yes",
        hugepages=check_choice("hugepages", values.get("hugepages", "auto")),
        sources=sources,
    )
    return settings, problems


HOSTDEV_RE = re.compile(
    r"(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"  # PCI address
    r"|(?:pci|usb):[0-9a-fA-F]{4}:[0-9a-fA-F]{4}"  # by vendor:product
)


def _hostdev(value) -> str:
    if not HOSTDEV_RE.fullmatch(str(value)):
        raise UsageError(
            f"hostdev: '{value}' is not a PCI address (0000:03:00.0) or pci:VENDOR:PRODUCT / "
            "usb:VENDOR:PRODUCT (hex, as lspci -nn and lsusb show them)"
        )
    return str(value).lower()


def _pool(value) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", str(value)):
        raise UsageError(f"pool: '{value}' is not a storage pool name (letters, digits, '.', '_', '-')")
    return str(value)


def _option_hint(key: str) -> str:
    if key.startswith("disk."):
        return f"--disk {key[5:]}=VALUE"
    return f"--{key.replace('_', '-')} VALUE"


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


_KNOWN = {"filesystem", "name", "memory", "vcpu", "arch", "machine", "virt_type", "firmware", "boot", "cdrom",
          "network", "graphics", "connect", "output", "pool", "hugepages", "peers",
          "hostdev", "transient"}
