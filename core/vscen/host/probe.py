"""Read host facts from a live libvirt connection (capabilities, domain capabilities, free
huge pages, libvirt's and QEMU's versions); all through libvirt's API, so remote hosts work as
local ones. On a local connection, what only this machine can tell (``vscen.host.local``) is
read too."""

from __future__ import annotations

from vscen.errors import LibvirtError
from vscen.host.facts import HostFacts, parse, snapshot

#: the machine type vscen's scenarios use where the arch has it, for domain capabilities
DEFAULT_MACHINES = {"x86_64": "q35", "i686": "q35"}


def version_string(number: int) -> str:
    """libvirt's packed version (9000000, 7002022) as "9.0.0", "7.2.22"."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def read(connection, arch: str | None, machine: str | None, virt_type: str | None) -> dict:
    """What :func:`vscen.host.facts.parse` and :func:`vscen.host.facts.snapshot` take."""
    import libvirt

    conn = connection.conn
    try:
        caps = conn.getCapabilities()
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"{connection.uri}: cannot read capabilities: {exc.get_error_message()}") from None
    domcaps, errors = None, []
    for vt in [virt_type] if virt_type else ["kvm", "qemu"]:
        try:
            domcaps = conn.getDomainCapabilities(None, arch, machine, vt, 0)
            break
        except libvirt.libvirtError as exc:
            errors.append(f"{vt}: {exc.get_error_message()}")
    if domcaps is None:
        raise LibvirtError(
            f"{connection.uri}: no domain capabilities for arch={arch or 'host'} "
            f"machine={machine or 'default'} ({'; '.join(errors)})"
        )
    versions = {}
    for key, call in (("libvirt_version", conn.getLibVersion), ("hypervisor_version", conn.getVersion)):
        try:
            versions[key] = version_string(call())
        except libvirt.libvirtError:  # a driver without a version: unknown
            versions[key] = ""
    local = None
    if getattr(connection, "is_local", False) and not getattr(connection, "is_test", False):
        from vscen.host.local import read as read_local

        local = read_local()
    return {"caps_xml": caps, "domcaps_xml": domcaps, "free_pages": _free_pages(conn, caps),
            "local": local, **versions}


def probe(connection, arch: str | None, machine: str | None, virt_type: str | None) -> HostFacts:
    raw = read(connection, arch, machine, virt_type)
    return parse(raw.pop("caps_xml"), raw.pop("domcaps_xml"), connection.uri, **raw)


def host_arch(connection) -> str:
    """The host's arch, from its capabilities (x86_64 where they do not say)."""
    import libvirt
    from lxml import etree

    try:
        caps = connection.conn.getCapabilities()
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"{connection.uri}: cannot read capabilities: {exc.get_error_message()}") from None
    return etree.fromstring(caps.encode()).findtext("host/cpu/arch") or "x86_64"


def probe_default(connection) -> HostFacts:
    """Facts for the host's arch and its default machine (q35 on x86)."""
    arch = host_arch(connection)
    return probe(connection, arch, DEFAULT_MACHINES.get(arch), None)


def snapshot_of(connection, reg=None, pm=None) -> str:
    """A ``<hostFacts>`` snapshot of the host: capabilities, domain capabilities (host arch,
    q35 on x86, else the default machine), versions, free huge pages, local facts and, with
    *reg*, the facts of every plugin's provider (read with no guest settings; a provider that
    fails is a warning in *pm*)."""
    arch = host_arch(connection)
    raw = read(connection, arch, DEFAULT_MACHINES.get(arch), None)
    facts = {}
    if reg is not None:
        from vscen.host.providers import read_provided

        host = parse(raw["caps_xml"], raw["domcaps_xml"], connection.uri,
                     **{k: v for k, v in raw.items() if k not in ("caps_xml", "domcaps_xml")})
        facts = read_provided(host, reg, connection=connection, pm=pm).extra
    return snapshot(raw.pop("caps_xml"), raw.pop("domcaps_xml"), uri=connection.uri, facts=facts, **raw)


def host_document(uri: str, arch: str | None = None, machine: str | None = None,
                  virt_type: str | None = None) -> str:
    """The ``<hostFacts>`` document of the host at libvirt *uri* (capabilities, domain
    capabilities for *arch*, *machine* and *virt_type*, versions, free huge pages), without
    the local or the plugins' facts: another host's facts, for a fact provider to record and
    ``vscen.host_facts_from_xml`` to read back (public as ``vscen.host_document``). The
    embedded test driver gives vscen's reference host. Raises LibvirtError."""
    from vscen.host.connect import open_connection

    connection = open_connection(uri)
    try:
        if connection.is_test:
            from vscen.host.facts import REFERENCE_HOST

            return REFERENCE_HOST.read_text()
        arch = arch or host_arch(connection)
        raw = read(connection, arch, machine or DEFAULT_MACHINES.get(arch), virt_type)
        raw.pop("local")
        return snapshot(raw.pop("caps_xml"), raw.pop("domcaps_xml"), **raw)
    finally:
        connection.close()


def _free_pages(conn, caps_xml: str) -> dict[int, dict[int, int]] | None:
    """cell -> {page size KiB: free pages} from libvirt's virNodeGetFreePages."""
    from lxml import etree

    caps = etree.fromstring(caps_xml.encode())
    sizes = sorted({int(p.get("size")) for p in caps.iterfind("host/cpu/pages")})
    cells = [int(c.get("id")) for c in caps.iterfind("host/topology/cells/cell")]
    if not sizes or not cells:
        return None
    try:
        got = conn.getFreePages(sizes, cells[0], len(cells), 0)
    except Exception:  # older drivers: free pages unknown, counted as total
        return None
    return {int(cell): {int(k): int(v) for k, v in pages.items()} for cell, pages in got.items()}
