"""Parse libvirt's capabilities and domain capabilities XML into :class:`HostFacts`.

The same parser serves a live connection, a recorded file (``--host-facts``) and the
reference profile shipped with vscen, so host-dependent logic is tested on recorded hosts.
A recorded file is libvirt's own ``<capabilities>`` or ``<domainCapabilities>`` document, or
a ``<hostFacts>`` document holding one of each (what ``vscen host snapshot`` writes, with the
libvirt and QEMU versions as attributes, ``<freePages>``, for a local host ``<local>``, and the
plugins' facts in ``<facts>``: ``vscen.host.factjson``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vscen.errors import UsageError
from vscen.host.factjson import facts_element, read_facts_element

if TYPE_CHECKING:  # the local facts' module is read only where a document has them
    from vscen.host.local import LocalFacts


@dataclass(frozen=True)
class NumaCell:
    """One NUMA cell of the host: memory, CPUs and huge pages."""

    id: int
    memory_kib: int
    cpus: tuple[int, ...]
    #: page size (KiB) -> pages of that size in the cell (total)
    pages: dict[int, int] = field(default_factory=dict, compare=False)
    #: page size (KiB) -> free pages, where known (live hosts); else None
    free_pages: dict[int, int] | None = field(default=None, compare=False)
    #: the cell's CPUs grouped by physical core (SMT siblings together), in core order
    cores: tuple[tuple[int, ...], ...] = ()

    def free(self, size_kib: int) -> int:
        source = self.free_pages if self.free_pages is not None else self.pages
        return source.get(size_kib, 0)


@dataclass(frozen=True)
class Machine:
    """A machine type the host's QEMU offers for the arch (libvirt capabilities)."""

    name: str
    #: for an alias ("q35"): the versioned type it stands for ("pc-q35-7.2")
    canonical: str = ""
    max_cpus: int = 0
    deprecated: bool = False


@dataclass(frozen=True)
class CpuModel:
    """A named CPU model the host's hypervisor offers (domcaps ``cpu/mode[@name='custom']``)."""

    name: str
    #: "yes": runs here with every feature it defines; "no": some are missing; "unknown"
    usable: str = "unknown"
    #: "AMD", "Intel"...; "" where libvirt does not say (generic models, older libvirt)
    vendor: str = ""
    #: for an alias ("EPYC"): the versioned model it stands for ("EPYC-v1")
    canonical: str = ""


@dataclass(frozen=True)
class HostFacts:
    """What the host offers, from libvirt's capabilities and domain capabilities, sysfs and plugins."""

    source: str
    arch: str = "x86_64"
    #: "kvm" where the host offers it, else "qemu" (TCG)
    domain_type: str = "qemu"
    machine: str = ""
    emulator: str = ""
    max_vcpu: int = 0
    cpu_vendor: str = ""
    cpu_model: str = ""
    host_model: str = ""
    #: domcaps' host-model CPU: its vendor and features as (policy, name), libvirt's order
    host_model_vendor: str = ""
    host_model_features: tuple[tuple[str, str], ...] = ()
    #: the named CPU models the hypervisor offers (domcaps), in domcaps' order
    cpu_models: tuple[CpuModel, ...] = ()
    sockets: int = 1
    dies: int = 1
    cores: int = 1
    threads: int = 1
    cells: tuple[NumaCell, ...] = ()
    page_sizes: tuple[int, ...] = ()
    cpu_modes: frozenset[str] = frozenset()
    firmware: frozenset[str] = frozenset()
    secure_boot: frozenset[str] = frozenset()
    #: "<device>.<enum>" -> values, e.g. "video.modelType" -> {"virtio", "qxl", ...}
    enums: dict[str, frozenset[str]] = field(default_factory=dict, compare=False)
    #: devices and features that domcaps says are supported, e.g. "tpm", "iothreads", "gic"
    supported: frozenset[str] = frozenset()
    #: domcaps' ``<features>`` as plain data, by element name: ``supported`` ("yes"/"no"), the
    #: text of each child element by its name, and ``enums`` (name -> values), e.g.
    #: ``{"gic": {"supported": "yes", "enums": {"version": ["2", "3"]}}}``; what each means is
    #: for the plugin that uses it to say (its fact provider reads it here)
    domcaps_features: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)
    iommu: bool = False
    has_caps: bool = False
    has_domcaps: bool = False
    notes: tuple[str, ...] = ()
    #: libvirt's and the hypervisor's (QEMU's) versions, "9.0.0" and "7.2.0"; "" if unknown
    libvirt_version: str = ""
    hypervisor_version: str = ""
    #: machine types offered for the arch (capabilities), aliases with their canonical type
    machines: tuple[Machine, ...] = ()
    #: firmware images libvirt found (domcaps os/loader values)
    firmware_images: tuple[str, ...] = ()
    #: what only this machine can tell (kernel, sysfs); None for remote and recorded hosts
    local: LocalFacts | None = None
    #: the plugins' facts (``vscen.FactProvider``), by provider name: plain JSON-able data
    extra: dict[str, Any] = field(default_factory=dict)

    def fact(self, name: str, default: Any = None) -> Any:
        """The fact a plugin's provider read (``vscen.FactProvider``), or *default* where it was
        not read (a recorded host without it) or the provider could not tell."""
        value = self.extra.get(name)
        return default if value is None else value

    @cached_property
    def cpu_flags(self) -> tuple[str, ...]:
        """The host CPU's feature flags, sorted: those of domcaps' host-model CPU, that is the
        features its named model implies (libvirt's cpu_map) plus the ones it requires, less
        the ones it disables. Only the explicit features where the cpu_map is not installed or
        does not know the model; () without domain capabilities."""
        if not self.host_model:
            return ()
        from vscen.host.cpumap import model_features

        flags = set(model_features(self.arch, self.host_model))
        for policy, name in self.host_model_features:
            if policy == "disable":
                flags.discard(name)
            else:
                flags.add(name)
        return tuple(sorted(flags))

    @property
    def kvm(self) -> bool:
        return self.domain_type == "kvm"

    @property
    def cpus(self) -> int:
        return sum(len(c.cpus) for c in self.cells) or self.sockets * self.dies * self.cores * self.threads

    def offers(self, enum: str, value: str) -> bool:
        """Whether domcaps lists *value* for *enum* ("video.modelType"); unknown is True."""
        values = self.enums.get(enum)
        return True if values is None else value in values

    @property
    def machine_aliases(self) -> dict[str, str]:
        """alias -> canonical machine type ("q35" -> "pc-q35-7.2")."""
        return {m.name: m.canonical for m in self.machines if m.canonical}


@dataclass(frozen=True)
class FactProbe:
    """What a ``vscen.FactProvider``'s ``read`` is given, at the facts stage."""

    #: the core's facts of the host (libvirt capabilities and domain capabilities)
    host: HostFacts
    #: the guest's settings (``settings.peers``...); None for ``vscen host snapshot`` (no guest)
    settings: Any = None
    #: the open libvirt connection (``vscen``'s wrapper: ``.conn`` is libvirt's, ``.uri``);
    #: None where the host is recorded (``--host-facts``)
    connection: Any = None
    #: the host is this machine: its sysfs, /proc and files may be read
    local: bool = False

    @property
    def conn(self):
        """libvirt's ``virConnect``, or None."""
        return getattr(self.connection, "conn", None)


def _int(text, default=0) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def _cpulist(cell) -> tuple[int, ...]:
    return tuple(sorted(_int(c.get("id")) for c in cell.iterfind("cpus/cpu")))


def _cores(cell) -> tuple[tuple[int, ...], ...]:
    """CPUs grouped by (socket, die, core); a CPU without those ids is a core of its own."""
    groups: dict[tuple, list[int]] = {}
    for c in cell.iterfind("cpus/cpu"):
        cid = _int(c.get("id"))
        key = (c.get("socket_id"), c.get("die_id"), c.get("core_id")) if c.get("core_id") is not None else ("cpu", cid)
        groups.setdefault(key, []).append(cid)
    return tuple(sorted((tuple(sorted(g)) for g in groups.values()), key=lambda g: g[0]))


def _natural(name: str) -> list:
    """Sort key putting pc-q35-2.10 after pc-q35-2.9."""
    from vscen.chars import DIGITS, runs

    return [(0, int(part), "") if part[0] in DIGITS else (1, 0, part) for part in runs(name, DIGITS)]


def _machines(caps, arch: str) -> tuple[Machine, ...]:
    found: dict[str, Machine] = {}
    for el in caps.iterfind(f"guest/arch[@name='{arch}']"):
        for m in [*el.iterfind("machine"), *el.iterfind("domain/machine")]:
            name = (m.text or "").strip()
            if name and name not in found:
                found[name] = Machine(name, m.get("canonical", ""), _int(m.get("maxCpus")),
                                      m.get("deprecated") == "yes")
    return tuple(found[n] for n in sorted(found, key=_natural))


def parse(caps_xml, domcaps_xml, source: str,
          free_pages: dict[int, dict[int, int]] | None = None, *,
          libvirt_version: str = "", hypervisor_version: str = "",
          local: LocalFacts | None = None) -> HostFacts:
    """Facts from libvirt's capabilities and domain capabilities (either may be missing: the
    XML text, or a parsed element), plus what the caller read elsewhere: free huge pages,
    versions, local facts."""
    from lxml import etree

    def element(xml):
        return etree.fromstring(xml.encode()) if isinstance(xml, str) else xml

    kw: dict = {"source": source, "libvirt_version": libvirt_version,
                "hypervisor_version": hypervisor_version, "local": local}
    caps = None
    enums: dict[str, frozenset[str]] = {}
    supported: set[str] = set()
    if caps_xml is not None and caps_xml != "":
        caps = element(caps_xml)
        cpu = caps.find("host/cpu")
        kw.update(has_caps=True, arch=cpu.findtext("arch", "x86_64"),
                  cpu_vendor=cpu.findtext("vendor", ""), cpu_model=cpu.findtext("model", ""))
        topo = cpu.find("topology")
        if topo is not None:
            kw.update({k: _int(topo.get(k), 1) for k in ("sockets", "dies", "cores", "threads")})
        kw["page_sizes"] = tuple(sorted(_int(p.get("size")) for p in cpu.iterfind("pages")))
        cells = []
        for cell in caps.iterfind("host/topology/cells/cell"):
            cid = _int(cell.get("id"))
            cells.append(NumaCell(
                id=cid, memory_kib=_int(cell.findtext("memory")), cpus=_cpulist(cell),
                pages={_int(p.get("size")): _int(p.text) for p in cell.iterfind("pages")},
                free_pages=None if free_pages is None else free_pages.get(cid, {}),
                cores=_cores(cell),
            ))
        kw["cells"] = tuple(cells)
        kw["page_sizes"] = tuple(sorted(set(kw["page_sizes"]).union(*(c.pages for c in cells))))
        kw["iommu"] = caps.find("host/iommu[@support='yes']") is not None
        kvm = any(d.get("type") == "kvm" for d in caps.iterfind("guest/arch/domain"))
        kw["domain_type"] = "kvm" if kvm else "qemu"
    if domcaps_xml is not None and domcaps_xml != "":
        dc = element(domcaps_xml)
        if dc.tag != "domainCapabilities":
            raise UsageError(f"host facts from {source}: expected <domainCapabilities>, got <{dc.tag}>")
        kw.update(has_domcaps=True, arch=dc.findtext("arch", kw.get("arch", "x86_64")),
                  domain_type=dc.findtext("domain", "qemu"), machine=dc.findtext("machine", ""),
                  emulator=dc.findtext("path", ""), max_vcpu=_int(dc.find("vcpu").get("max")) if dc.find("vcpu") is not None else 0)
        kw["cpu_modes"] = frozenset(m.get("name") for m in dc.iterfind("cpu/mode[@supported='yes']"))
        hm = dc.find("cpu/mode[@name='host-model'][@supported='yes']")
        if hm is not None:
            kw["host_model"] = hm.findtext("model", "")
            kw["cpu_vendor"] = kw.get("cpu_vendor") or hm.findtext("vendor", "")
            kw["host_model_vendor"] = hm.findtext("vendor", "")
            kw["host_model_features"] = tuple((f.get("policy", "require"), f.get("name", ""))
                                              for f in hm.iterfind("feature"))
        kw["cpu_models"] = tuple(
            CpuModel((m.text or "").strip(), m.get("usable", "unknown"), m.get("vendor", ""),
                     m.get("canonical", ""))
            for m in dc.iterfind("cpu/mode[@name='custom'][@supported='yes']/model") if (m.text or "").strip())
        os_ = dc.find("os")
        fw = {v.text for v in dc.iterfind("os/enum[@name='firmware']/value")}
        if not fw and os_ is not None and os_.get("supported") == "yes":
            # libvirt before 9.x lists loaders but no firmware enum: an x86 loader means efi
            fw = {"efi"} if dc.find("os/loader[@supported='yes']") is not None else set()
        kw["firmware"] = frozenset(fw)
        kw["firmware_images"] = tuple(v.text for v in dc.iterfind("os/loader/value") if v.text)
        sb = {v.text for v in dc.iterfind("os/firmwareFeatures/enum[@name='secureBoot']/value")}
        sb |= {v.text for v in dc.iterfind("os/loader/enum[@name='secure']/value")}
        kw["secure_boot"] = frozenset(sb)
        for dev in dc.iterfind("devices/*"):
            if dev.get("supported") == "yes":
                supported.add(dev.tag)
            for enum in dev.iterfind("enum"):
                enums[f"{dev.tag}.{enum.get('name')}"] = frozenset(v.text for v in enum.iterfind("value"))
        for feat in dc.iterfind("features/*"):
            if feat.get("supported") == "yes":
                supported.add(feat.tag)
        for top in ("iothreads", "memoryBacking"):
            if dc.find(f"{top}[@supported='yes']") is not None:
                supported.add(top)
        enums["memoryBacking.sourceType"] = frozenset(v.text for v in dc.iterfind("memoryBacking/enum[@name='sourceType']/value"))
        kw["domcaps_features"] = {feat.tag: _plain(feat) for feat in dc.iterfind("features/*")
                                  if isinstance(feat.tag, str)}
    if caps is not None:
        kw["machines"] = _machines(caps, kw.get("arch", "x86_64"))
    kw["enums"] = enums
    kw["supported"] = frozenset(supported)
    return HostFacts(**kw)


def _plain(el) -> dict[str, Any]:
    """A domcaps ``<features>`` child as plain data: its attributes, its child elements' text
    by name, and its ``<enum>``s' values under ``enums``."""
    out: dict[str, Any] = dict(el.attrib)
    enums = {e.get("name", ""): [(v.text or "").strip() for v in e.iterfind("value")]
             for e in el.iterfind("enum")}
    for child in el:
        if isinstance(child.tag, str) and child.tag != "enum":
            out[child.tag] = (child.text or "").strip()
    if enums:
        out["enums"] = enums
    return out


def _parser():
    from lxml import etree

    # no entities, no network: a recorded file is data, and may come from anywhere
    return etree.XMLParser(resolve_entities=False, no_network=True)


def load_files(paths: list[Path]) -> HostFacts:
    """Facts from recorded files: capabilities, domcapabilities, or a <hostFacts> of both
    (with, from ``vscen host snapshot``, versions, free huge pages, local facts and the
    plugins' facts)."""
    from lxml import etree

    roots = []
    for path in paths:
        try:
            roots.append((f"--host-facts {path}", etree.parse(str(path), _parser()).getroot()))
        except OSError as exc:
            raise UsageError(f"--host-facts {path}: cannot read it ({exc.strerror or exc})") from None
        except etree.XMLSyntaxError as exc:
            raise UsageError(f"--host-facts {path}: not well-formed XML ({exc})") from None
    source = ", ".join(str(p) for p in paths)
    return _from_roots(roots, source, f"--host-facts {source}")


def host_facts_from_xml(documents: list[str], source: str) -> HostFacts:
    """Host facts from the text of libvirt's capabilities and/or domain capabilities, or of a
    ``<hostFacts>`` document (``vscen host snapshot``), as ``--host-facts`` reads files:
    what a plugin's fact provider recorded about another host, parsed again (public as
    ``vscen.host_facts_from_xml``). *source* names the host in messages."""
    from lxml import etree

    roots = []
    for text in documents:
        try:
            roots.append((source, etree.fromstring(text.encode(), _parser())))
        except (etree.XMLSyntaxError, ValueError) as exc:
            raise UsageError(f"{source}: not well-formed XML ({exc})") from None
    return _from_roots(roots, source, source)


def _from_roots(roots: list, source: str, what: str) -> HostFacts:
    """Facts from parsed documents: *roots* as (label for messages, root element); *what*
    names them all in messages."""
    caps = domcaps = free_pages = local = None
    extra: dict[str, str] = {}
    plugin_facts: dict[str, Any] = {}
    recorded_from = ""
    for label, root in roots:
        if root.tag == "hostFacts":
            for attr, key in (("libvirtVersion", "libvirt_version"), ("hypervisorVersion", "hypervisor_version")):
                if root.get(attr):
                    extra[key] = root.get(attr)
            recorded_from = root.get("uri", recorded_from)
        parts = [p for p in root if isinstance(p.tag, str)] if root.tag == "hostFacts" else [root]
        for part in parts:
            if part.tag == "capabilities":
                caps = part
            elif part.tag == "domainCapabilities":
                domcaps = part
            elif part.tag == "freePages" and root.tag == "hostFacts":
                free_pages = {_int(c.get("id")): {_int(p.get("size")): _int(p.text) for p in c.iterfind("pages")}
                              for c in part.iterfind("cell")}
            elif part.tag == "local" and root.tag == "hostFacts":
                from vscen.host.local import from_xml

                try:
                    local = from_xml(part)
                except (AttributeError, ValueError) as exc:
                    raise UsageError(f"{label}: malformed <local> element ({exc})") from None
            elif part.tag == "facts" and root.tag == "hostFacts":
                plugin_facts.update(read_facts_element(part, label))
            else:
                raise UsageError(
                    f"{label}: <{part.tag}> is not libvirt capabilities, domain "
                    "capabilities or a <hostFacts> document"
                )
    try:
        facts = parse(caps, domcaps, source, free_pages=free_pages, local=local, **extra)
    except (AttributeError, ValueError) as exc:
        raise UsageError(f"{what}: malformed libvirt document ({exc})") from None
    from dataclasses import replace

    if plugin_facts:
        facts = replace(facts, extra=plugin_facts)
    if recorded_from:
        facts = replace(facts, source=f"{source} (snapshot of {recorded_from})")
    return facts


def snapshot(caps_xml: str, domcaps_xml: str | None, *, uri: str = "", libvirt_version: str = "",
             hypervisor_version: str = "", free_pages: dict[int, dict[int, int]] | None = None,
             local: LocalFacts | None = None, facts: dict[str, Any] | None = None) -> str:
    """A ``<hostFacts>`` document that :func:`load_files` reads back into the same facts;
    *facts*: the plugins' (``HostFacts.extra``)."""
    from lxml import etree

    root = etree.Element("hostFacts")
    for attr, value in (("uri", uri), ("libvirtVersion", libvirt_version),
                        ("hypervisorVersion", hypervisor_version)):
        if value:
            root.set(attr, value)
    parser = etree.XMLParser(remove_blank_text=True)
    root.append(etree.fromstring(caps_xml.encode(), parser))
    if domcaps_xml:
        root.append(etree.fromstring(domcaps_xml.encode(), parser))
    if free_pages is not None:
        fp = etree.SubElement(root, "freePages")
        for cell, pages in sorted(free_pages.items()):
            el = etree.SubElement(fp, "cell", id=str(cell))
            for size, count in sorted(pages.items()):
                etree.SubElement(el, "pages", unit="KiB", size=str(size)).text = str(count)
    if local is not None:
        from vscen.host.local import to_xml

        root.append(to_xml(local))
    if facts:
        root.append(facts_element(facts))
    return etree.tostring(root, pretty_print=True, encoding="unicode")


#: vscen's reference host, a <hostFacts> document
REFERENCE_HOST = Path(__file__).resolve().parent.parent / "data" / "reference-host.xml"


def reference() -> HostFacts:
    """The reference host shipped with vscen (an AMD EPYC host with SEV-ES), for the
    embedded ``test:///default`` driver."""
    facts = load_files([REFERENCE_HOST])
    from dataclasses import replace

    return replace(facts, source="reference host (vscen's AMD EPYC profile with SEV-ES)")
