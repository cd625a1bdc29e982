"""Read host facts from a live libvirt connection (capabilities, domain capabilities, free
huge pages); all through libvirt's API, so remote hosts work as local ones."""

from __future__ import annotations

from vscen.errors import LibvirtError
from vscen.host.facts import HostFacts, parse


def probe(connection, arch: str | None, machine: str | None, virt_type: str | None) -> HostFacts:
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
    return parse(caps, domcaps, connection.uri, free_pages=_free_pages(conn, caps))


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
