"""The fleet file: the hosts a fleet may use, the guests it wants (name patterns with counts,
scenarios, features, settings) and how to place them; read and checked before anything else,
every mistake a one-line error naming the field, the value and what is allowed."""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vscen import UsageError, check_name, parse_size

PLACEMENT_KEYS = ("memory_ratio", "vcpu_ratio", "strategy")
STRATEGIES = ("spread", "pack")
HOST_KEYS = ("uri", "facts", "memory", "cpus")
GUEST_KEYS = ("name", "count", "first", "scenarios", "scenario", "features", "settings", "disks", "hosts",
              "migration_pool", "start")
#: the setting a migration pool fills with the group's other hosts (easy-migration's --peer)
PEERS_SETTING = "peers"


@dataclass(frozen=True)
class Host:
    """A host a fleet may use: its URI, recorded facts and stated capacity."""

    name: str
    uri: str
    facts: tuple[Path, ...] = ()
    #: capacity given in the fleet file (KiB, CPUs), over what the facts say
    memory_kib: int | None = None
    cpus: int | None = None
    #: "named" (vscen's config) or "fleet" (this file)
    origin: str = "fleet"


@dataclass(frozen=True)
class Group:
    """One ``[[guests]]`` table: *count* guests named from *pattern*."""

    index: int
    pattern: str
    names: tuple[str, ...]
    scenarios: tuple[str, ...]
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict, compare=False)
    #: as --disk takes them, "{name}" standing for the guest's name; None: the scenarios'
    disks: tuple[str, ...] | None = None
    hosts: tuple[str, ...] = ()
    migration_pool: bool = False
    start: bool = False

    @property
    def label(self) -> str:
        return f"guests[{self.index}] ({self.pattern})"


@dataclass(frozen=True)
class Fleet:
    """A fleet file: hosts, guest groups and overcommit ratios."""

    path: Path
    hosts: tuple[Host, ...]
    groups: tuple[Group, ...]
    memory_ratio: float = 1.0
    vcpu_ratio: float = 4.0
    strategy: str = "spread"

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)


def load(path: Path, named: dict | None = None) -> Fleet:
    """The fleet file at *path*; *named*: vscen's named hosts (``vscen.named_hosts()``)."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"fleet: '{path}' does not exist") from None
    except OSError as exc:
        raise UsageError(f"fleet {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"fleet {path}: not UTF-8 text (a TOML file is UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"fleet {path}: not valid TOML ({exc})") from None
    return parse(data, Path(path), named or {})


def parse(data: dict, path: Path, named: dict) -> Fleet:
    where = f"in {path}"
    _known(data, ("placement", "hosts", "guests"), "", where)
    placement = _table(data.get("placement", {}), "placement", where)
    _known(placement, PLACEMENT_KEYS, "placement.", where)
    ratios = {key: _ratio(placement.get(key, default), f"placement.{key}", where)
              for key, default in (("memory_ratio", 1.0), ("vcpu_ratio", 4.0))}
    strategy = placement.get("strategy", "spread")
    if strategy not in STRATEGIES:
        raise UsageError(f"placement.strategy: {strategy!r} {where} is not one of {', '.join(STRATEGIES)}")
    hosts = _hosts(_table(data.get("hosts"), "hosts", where, required="[hosts.NAME] tables"), path, named, where)
    groups = _groups(data.get("guests"), {h.name for h in hosts}, where)
    return Fleet(path, hosts, groups, strategy=strategy, **ratios)


def _known(table: dict, keys, prefix: str, where: str) -> None:
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise UsageError(f"{prefix}{unknown[0]}: {where} is not a key here; known keys are {', '.join(keys)}")


def _table(value, field_: str, where: str, required: str = "") -> dict:
    if value is None and required:
        raise UsageError(f"{field_}: {where} is missing; give {required}")
    if not isinstance(value, dict):
        raise UsageError(f"{field_}: {value!r} {where} must be a table")
    return value


def _ratio(value, field_: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
        raise UsageError(f"{field_}: {value!r} {where} must be a number above 0 and at most 100")
    return float(value)


def _string(value, field_: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise UsageError(f"{field_}: {value!r} {where} must be a non-empty string")
    return value


def _strings(value, field_: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UsageError(f"{field_}: {value!r} {where} must be a string or a non-empty list of strings")
    return tuple(_string(v, field_, where) for v in value)


def _hosts(table: dict, path: Path, named: dict, where: str) -> tuple[Host, ...]:
    import re

    hosts = []
    if not table:
        raise UsageError(f"hosts: {where} names no host; give [hosts.NAME] tables")
    for name, entry in table.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            raise UsageError(f"hosts.{name}: {where}: a host name is 1-64 letters, digits, '.', '_' or '-'")
        entry = _table(entry, f"hosts.{name}", where)
        _known(entry, HOST_KEYS, f"hosts.{name}.", where)
        memory = cpus = None
        if "memory" in entry:
            memory = parse_size(f"hosts.{name}.memory", entry["memory"]) // 1024
        if "cpus" in entry:
            cpus = entry["cpus"]
            if isinstance(cpus, bool) or not isinstance(cpus, int) or not 0 < cpus <= 100_000:
                raise UsageError(f"hosts.{name}.cpus: {cpus!r} {where} must be a whole number from 1 to 100000")
        if "uri" in entry:
            uri = _string(entry["uri"], f"hosts.{name}.uri", where)
            facts = tuple(Path(os.path.abspath(path.parent / Path(f).expanduser()))
                          for f in _strings(entry.get("facts", []) or [], f"hosts.{name}.facts", where)) \
                if entry.get("facts") else ()
            hosts.append(Host(name, uri, facts, memory, cpus))
        elif "facts" in entry:
            raise UsageError(f"hosts.{name}.facts: {where} needs a uri beside it (the host the guests go to)")
        elif name in named:
            h = named[name]
            hosts.append(Host(name, h.uri, tuple(h.facts), memory, cpus, origin="named"))
        else:
            known = ", ".join(named) or "none"
            raise UsageError(f"hosts.{name}: {where} has no uri and is not a named host of vscen's config "
                             f"(named: {known}); give uri = \"...\" or add [hosts.{name}] to the config")
    return tuple(hosts)


def _groups(value, host_names: set[str], where: str) -> tuple[Group, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise UsageError(f"guests: {where} must be one or more [[guests]] tables")
    groups, seen = [], {}
    for i, entry in enumerate(value):
        label = f"guests[{i}]"
        _known(entry, GUEST_KEYS, f"{label}.", where)
        pattern = _string(entry.get("name"), f"{label}.name", where)
        count = entry.get("count", 1)
        first = entry.get("first", 1)
        for key, v in (("count", count), ("first", first)):
            if isinstance(v, bool) or not isinstance(v, int) or not (0 if key == "first" else 1) <= v <= 10_000:
                raise UsageError(f"{label}.{key}: {v!r} {where} must be a whole number from "
                                 f"{0 if key == 'first' else 1} to 10000")
        names = _names(pattern, count, first, f"{label}.name", where)
        for n in names:
            if n in seen:
                raise UsageError(f"{label}.name: {pattern!r} {where} makes '{n}', which {seen[n]} makes too")
            seen[n] = label
        if "scenarios" in entry and "scenario" in entry:
            raise UsageError(f"{label}.scenario: {where}: give scenario or scenarios, not both")
        scenarios = _strings(entry.get("scenarios", entry.get("scenario")), f"{label}.scenarios", where)
        add, remove = [], []
        for item in _strings(entry["features"], f"{label}.features", where) if "features" in entry else ():
            (remove if item.startswith("-") else add).append(item.lstrip("+-"))
        settings = _table(entry.get("settings", {}), f"{label}.settings", where)
        if "name" in settings:
            raise UsageError(f"{label}.settings.name: {where}: the guests' names come from {label}.name")
        disks = _strings(entry["disks"], f"{label}.disks", where) if "disks" in entry else None
        if disks and len(names) > 1 and any("path=" in d and "{name}" not in d for d in disks):
            raise UsageError(f"{label}.disks: {where}: {len(names)} guests would share one disk path; put "
                             "{name} in it (path=/var/lib/libvirt/images/{name}.qcow2)")
        hosts = _strings(entry["hosts"], f"{label}.hosts", where) if "hosts" in entry else ()
        for h in hosts:
            if h not in host_names:
                raise UsageError(f"{label}.hosts: '{h}' {where} is not a host of the fleet "
                                 f"(its hosts: {', '.join(sorted(host_names))})")
        flags = {}
        for key in ("migration_pool", "start"):
            v = entry.get(key, False)
            if not isinstance(v, bool):
                raise UsageError(f"{label}.{key}: {v!r} {where} must be true or false")
            flags[key] = v
        if flags["migration_pool"] and PEERS_SETTING in settings:
            raise UsageError(f"{label}.settings.{PEERS_SETTING}: {where}: a migration pool's peers are its hosts; "
                             "give one or the other")
        groups.append(Group(i, pattern, names, scenarios, tuple(add), tuple(remove), settings, disks, hosts, **flags))
    return tuple(groups)


def _names(pattern: str, count: int, first: int, field_: str, where: str) -> tuple[str, ...]:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise UsageError(f"{field_}: {pattern!r} {where} is not a name pattern ({exc})") from None
    if any(f != "n" for f in fields):
        raise UsageError(f"{field_}: {pattern!r} {where}: the only field of a name pattern is {{n}} "
                         "(the guest's number: {n}, {n:02})")
    if count > 1 and not fields:
        raise UsageError(f"{field_}: {pattern!r} {where} names {count} guests alike; put {{n}} in it "
                         "(vault-{n:02})")
    try:
        names = tuple(pattern.format(n=n) for n in range(first, first + count))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{field_}: {pattern!r} {where} is not a name pattern ({exc})") from None
    for n in names:
        try:
            check_name(n)
        except UsageError:
            raise UsageError(f"{field_}: {pattern!r} {where} makes '{n}', not a guest name (1-64 letters, "
                             "digits, '.', '_', '+', '-')") from None
    return names
