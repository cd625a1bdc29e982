"""The osinfo database (the XML of the Debian package ``osinfo-db``), read with lxml.

libosinfo and virt-install read these files through GObject; vscen reads the few facts it
needs directly. Where they live, lowest precedence first, as libosinfo's loader looks:
``$OSINFO_SYSTEM_DIR`` (else ``/usr/share/osinfo``), ``/etc/osinfo``, ``$XDG_CONFIG_HOME/osinfo``
(``~/.config/osinfo``);
``$OSINFO_DB_PATH`` (directories separated by ``:``) replaces the three. An OS is every
``<os>`` element with one ``id`` in ``os/**/*.xml`` (a ``win-10.d/`` fragment adds to win10).

Inheritance is libosinfo's: along ``derives-from`` (``upgrades`` says which OS a release
replaces and passes nothing down):

- resources: an OS has its own entries only, but an entry ``<resources arch=A
  inherit="true">`` (possibly empty) takes every value it lacks from the entries of arch A of
  the OSes it derives from or clones, nearest first (libosinfo's
  ``osinfo_os_get_resources_internal``); a value is then looked up for the arch, else ``all``;
- devices: the parent's and the OS's own, an entry ``supported="false"`` taking one away;
- firmware: the parent's and the OS's own, the nearer entry for one (arch, type) winning.

Parsing every OS costs ~140 ms, so nothing is read until asked (``--os``, ``vscen os``);
the short-id index (short-id -> OS id -> files) is cached in ``$XDG_CACHE_HOME/vscen``,
valid while no directory of the database changed (``_signature``), so ``--os win11`` then
parses only win11's files and those of the OSes it derives from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

SYSTEM_DIR = "/usr/share/osinfo"
WINDOWS_FAMILIES = ("winnt", "win9x", "win16")
#: the cache's format: bump when what it holds changes
CACHE_VERSION = 3


def db_dirs() -> list[Path]:
    """The database's directories, lowest precedence first."""
    env = os.environ.get("OSINFO_DB_PATH")
    if env:
        return [Path(p) for p in env.split(":") if p]
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path(os.environ.get("OSINFO_SYSTEM_DIR") or SYSTEM_DIR), Path("/etc/osinfo"), Path(config) / "osinfo"]


def _files(sub: str) -> list[Path]:
    """The XML files under *sub* of each directory; a ``NAME.d/`` fragment after the files."""
    return [f for d in db_dirs()
            for f in sorted((d / sub).glob("**/*.xml"), key=lambda f: (f.parent.name.endswith(".d"), str(f)))
            if f.is_file()]


@dataclass(frozen=True)
class Resources:
    """Resources of one arch: bytes of RAM and storage, CPUs, CPU speed in Hz (None: unknown)."""

    ram: int | None = None
    n_cpus: int | None = None
    storage: int | None = None
    cpu: int | None = None


@dataclass
class OsEntry:
    """One OS as its own files say it, before inheritance."""

    id: str
    short_ids: list[str] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    derives_from: str | None = None
    upgrades: str | None = None
    clones: str | None = None
    #: kind ("minimum", "recommended", "maximum") -> arch -> Resources
    resources: dict[str, dict[str, Resources]] = field(default_factory=dict)
    #: (kind, arch) of the entries that inherit what they lack (``inherit="true"``)
    inherit: set = field(default_factory=set)
    #: device id -> supported
    devices: dict[str, bool] = field(default_factory=dict)
    #: (arch, type) -> (supported, {feature name: supported})
    firmware: dict[tuple[str, str], tuple[bool, dict[str, bool]]] = field(default_factory=dict)


KINDS = ("minimum", "recommended", "maximum")
INFO = ("name", "version", "vendor", "family", "distro", "release-date", "eol-date")


def _yes(el) -> bool:
    return el.get("supported", "true") != "false"


def _text(el, tag: str) -> str | None:
    """The element's child *tag* without xml:lang (the English one)."""
    for child in el.iterfind(tag):
        if not child.get("{http://www.w3.org/XML/1998/namespace}lang"):
            return (child.text or "").strip()
    return None


def _resources(el) -> Resources:
    def num(tag):
        text = _text(el, tag)
        return int(text) if text and text.lstrip("-").isdigit() and int(text) > 0 else None

    return Resources(ram=num("ram"), n_cpus=num("n-cpus"), storage=num("storage"), cpu=num("cpu"))


def _merge(entry: OsEntry, os_el) -> None:
    for sid in os_el.iterfind("short-id"):
        if sid.text and sid.text.strip() not in entry.short_ids:
            entry.short_ids.append(sid.text.strip())
    for key in INFO:
        value = _text(os_el, key)
        if value and key not in entry.info:
            entry.info[key] = value
    for key in ("derives-from", "upgrades", "clones"):
        rel = os_el.find(key)
        if rel is not None and rel.get("id"):
            setattr(entry, key.replace("-", "_"), rel.get("id"))
    for res in os_el.iterfind("resources"):
        arch = res.get("arch", "all")
        inherit = res.get("inherit") == "true"
        for kind in KINDS:
            el = res.find(kind)
            if el is not None or inherit:
                entry.resources.setdefault(kind, {})[arch] = _resources(el) if el is not None else Resources()
            if inherit:
                entry.inherit.add((kind, arch))
    for dev in os_el.iterfind("devices/device"):
        if dev.get("id"):
            entry.devices[dev.get("id")] = _yes(dev)
    for fw in os_el.iterfind("firmware"):
        features = {f.get("name"): _yes(f) for f in fw.iterfind("feature") if f.get("name")}
        entry.firmware[(fw.get("arch", "all"), fw.get("type", ""))] = (_yes(fw), features)


def _parse(paths) -> dict[str, OsEntry]:
    entries: dict[str, OsEntry] = {}
    for _path, os_el in each_os(paths):
        _merge(entries.setdefault(os_el.get("id"), OsEntry(os_el.get("id"))), os_el)
    return entries


# -- the index: short-id -> OS id -> files ------------------------------------------------------


def _signature() -> list:
    """Every directory of the OS database with its time: dpkg and osinfo-db-import put files in
    place by renaming, which changes their directory's time. Stat-ing ~150 directories instead
    of ~800 files keeps a cached --os cheap (a file edited in place is not noticed: touch its
    directory)."""
    out = []
    todo = [str(d / sub) for d in db_dirs() for sub in ("os", "device")]
    while todo:
        path = todo.pop()
        try:
            out.append([path, os.stat(path).st_mtime_ns])
            with os.scandir(path) as entries:
                todo.extend(sorted((e.path for e in entries if e.is_dir(follow_symlinks=True)), reverse=True))
        except OSError:
            continue
    return out


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vscen" / "osinfo-index.json"


def cached(name: str, build) -> dict:
    """``build()``'s JSON-able result, kept in ``$XDG_CACHE_HOME/vscen/NAME`` while no
    directory of the database changed (``_signature``)."""
    signature = _signature()
    path = _cache_file().with_name(name)
    try:
        data = json.loads(path.read_text())
        if data.get("version") == CACHE_VERSION and data.get("signature") == signature:
            return data["index"]
    except (OSError, ValueError, AttributeError):
        pass
    result = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from vscen import atomic_write

        atomic_write(path, json.dumps({"version": CACHE_VERSION, "signature": signature, "index": result}))
    except OSError:
        pass  # no cache: slower, not wrong
    return result


def each_os(paths=None):
    """(path, ``<os>`` element) of every OS entry of the database's files, in file order."""
    from lxml import etree

    parser = etree.XMLParser(remove_comments=True, resolve_entities=False, no_network=True)
    for path in _files("os") if paths is None else paths:
        try:
            root = etree.parse(str(path), parser).getroot()
        except (OSError, etree.XMLSyntaxError):
            continue  # libosinfo skips a broken file too; the others still count
        for os_el in root.iterfind("os"):
            if os_el.get("id"):
                yield path, os_el


@cache
def index() -> dict:
    """``{"short": {short-id: OS id}, "files": {OS id: [paths]}, "devices": {id: name}}`` of
    the whole database, from the cache where the files are unchanged."""
    return cached("osinfo-index.json", _build_index)


def _build_index() -> dict:
    short: dict[str, str] = {}
    where: dict[str, list[str]] = {}
    for path, os_el in each_os():
        where.setdefault(os_el.get("id"), []).append(str(path))
        for sid in os_el.iterfind("short-id"):
            if sid.text:
                short.setdefault(sid.text.strip(), os_el.get("id"))
    return {"short": short, "files": where, "devices": _device_names()}


@cache
def entry(os_id: str) -> OsEntry | None:
    paths = index()["files"].get(os_id)
    return _parse(paths).get(os_id) if paths else None


def device_names() -> dict[str, str]:
    """Device id -> name (``http://pcisig.com/pci/1af4/1001`` -> ``virtio-block``)."""
    return index()["devices"]


def _device_names() -> dict[str, str]:
    from lxml import etree

    names: dict[str, str] = {}
    parser = etree.XMLParser(remove_comments=True, resolve_entities=False, no_network=True)
    for path in _files("device"):
        try:
            root = etree.parse(str(path), parser).getroot()
        except (OSError, etree.XMLSyntaxError):
            continue
        for dev in root.iterfind("device"):
            name = _text(dev, "name")
            if dev.get("id") and name:
                names[dev.get("id")] = name
    return names


# -- an OS with what it inherits ----------------------------------------------------------------


@dataclass(frozen=True)
class OsInfo:
    """What vscen knows of one OS, inheritance resolved."""

    id: str
    short_id: str
    short_ids: tuple[str, ...]
    name: str
    version: str
    vendor: str
    family: str
    distro: str
    release_date: str
    eol_date: str
    derives_from: str | None
    upgrades: str | None
    #: kind -> arch -> Resources, after inheritance
    resources: dict
    #: device names the OS supports (with its installer), after inheritance
    devices: tuple[str, ...]
    #: (arch, type) -> (supported, features), after inheritance
    firmware: dict

    @property
    def is_windows(self) -> bool:
        return self.family in WINDOWS_FAMILIES

    def resource(self, kind: str, arch: str) -> Resources:
        """Resources of *kind* for *arch* (its own entry, else 'all'); a recommended value
        is never below the minimum (old releases' recommendations, inherited, can be)."""
        table = self.resources.get(kind, {})
        own, every = table.get(arch), table.get("all")
        merged = {k: getattr(own, k, None) or getattr(every, k, None) for k in ("ram", "n_cpus", "storage", "cpu")}
        if kind == "recommended":
            low = self.resource("minimum", arch)
            merged = {k: max(v for v in (merged[k], getattr(low, k)) if v) if merged[k] or getattr(low, k) else None
                      for k in merged}
        return Resources(**merged)

    def firmware_types(self, arch: str) -> dict[str, bool]:
        """Firmware type -> supported, for *arch*."""
        out = {}
        for (fw_arch, kind), (supported, _features) in sorted(self.firmware.items()):
            if fw_arch in (arch, "all") and (fw_arch == arch or kind not in out):
                out[kind] = supported
        return out

    def requires_efi(self, arch: str) -> bool:
        """UEFI is supported and BIOS is not (virt-install's rule)."""
        types = self.firmware_types(arch)
        return types.get("efi") is True and types.get("bios") is False

    def firmware_features(self, arch: str) -> dict[str, bool]:
        """The EFI firmware's features the database names (newer databases: secure-boot)."""
        for (fw_arch, kind), (_supported, features) in self.firmware.items():
            if kind == "efi" and fw_arch in (arch, "all") and features:
                return dict(features)
        return {}

    def supports(self, *names: str) -> bool:
        return any(n in self.devices for n in names)

    def as_dict(self, arch: str = "x86_64") -> dict:
        def res(kind):
            r = self.resource(kind, arch)
            return {"ram": r.ram, "n_cpus": r.n_cpus, "storage": r.storage}

        return {
            "short_id": self.short_id, "short_ids": list(self.short_ids), "id": self.id, "name": self.name,
            "version": self.version, "vendor": self.vendor, "family": self.family, "distro": self.distro,
            "release_date": self.release_date, "eol_date": self.eol_date, "derives_from": self.derives_from,
            "upgrades": self.upgrades, "arch": arch, "minimum": res("minimum"), "recommended": res("recommended"),
            "firmware": self.firmware_types(arch), "requires_efi": self.requires_efi(arch),
            "devices": list(self.devices),
        }


def _chain(os_id: str) -> list[OsEntry]:
    """The OS, then those it derives from or clones, nearest first (breadth first; cycles cut)."""
    out: list[OsEntry] = []
    seen = {os_id}
    todo = [os_id]
    while todo:
        found = entry(todo.pop(0))
        if found is None:
            continue
        out.append(found)
        for rel in (found.derives_from, found.clones):
            if rel and rel not in seen:
                seen.add(rel)
                todo.append(rel)
    return out


def _inherited(chain: list[OsEntry]) -> dict:
    """kind -> arch -> Resources of the first OS of *chain*, inheriting entries filled in."""
    own = chain[0]
    out = {}
    for kind in KINDS:
        table = dict(own.resources.get(kind, {}))
        for arch, res in table.items():
            if (kind, arch) not in own.inherit:
                continue
            values = dict(res.__dict__)
            for ancestor in chain[1:]:
                theirs = ancestor.resources.get(kind, {}).get(arch)
                if theirs is not None:
                    values = {k: v if v is not None else getattr(theirs, k) for k, v in values.items()}
            table[arch] = Resources(**values)
        out[kind] = table
    return out


@cache
def lookup(short_id: str) -> OsInfo | None:
    """The OS of *short_id*, inheritance resolved; None where the database has none."""
    os_id = index()["short"].get(short_id)
    chain = _chain(os_id) if os_id else []
    if not chain:
        return None
    own = chain[0]
    resources = _inherited(chain)
    devices: dict[str, bool] = {}
    firmware: dict = {}
    for e in chain:  # nearest first: the first word on an id or (arch, type) wins
        for dev, ok in e.devices.items():
            devices.setdefault(dev, ok)
        for key, value in e.firmware.items():
            firmware.setdefault(key, value)
    names = device_names()
    supported = sorted({names.get(d, d) for d, ok in devices.items() if ok})
    info = own.info
    return OsInfo(
        id=own.id, short_id=short_id, short_ids=tuple(own.short_ids), name=info.get("name", short_id),
        version=info.get("version", ""), vendor=info.get("vendor", ""), family=info.get("family", ""),
        distro=info.get("distro", ""), release_date=info.get("release-date", ""), eol_date=info.get("eol-date", ""),
        derives_from=own.derives_from, upgrades=own.upgrades, resources=resources, devices=tuple(supported),
        firmware=firmware,
    )


def short_ids() -> list[str]:
    return sorted(index()["short"])


def all_os() -> list[OsInfo]:
    """Every OS of the database, by its first short-id."""
    firsts = {}
    for sid, os_id in index()["short"].items():
        firsts.setdefault(os_id, [])
        firsts[os_id].append(sid)
    out = []
    for os_id, sids in firsts.items():
        e = entry(os_id)
        first = e.short_ids[0] if e and e.short_ids and e.short_ids[0] in sids else sorted(sids)[0]
        info = lookup(first)
        if info is not None:
            out.append(info)
    return sorted(out, key=lambda o: o.short_id)


def clear() -> None:
    """Forget what was read (tests point the database elsewhere)."""
    for fn in (index, entry, lookup):
        fn.cache_clear()
