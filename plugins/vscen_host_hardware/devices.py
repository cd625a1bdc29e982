"""host-hardware's devices: the host's PCI and USB devices (a fact, read through libvirt's
node devices), and choosing the ones ``--hostdev`` names."""

from __future__ import annotations

import re
from typing import NamedTuple

from vscen import Check
from vscen_host_hardware import DEVICES

#: drivers that hold a PCI device away from the host, so VFIO accepts it in a group
STUB_DRIVERS = ("vfio-pci", "pci-stub")
#: PCI class codes (class << 8 | subclass) of bridges: VFIO lets the host keep those bound
BRIDGE_CLASSES = (0x0604, 0x0607, 0x0609)
ADDRESS_RE = re.compile(r"(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")


class PciDevice(NamedTuple):
    """A PCI device as the host's libvirt node device describes it."""

    name: str  # the node device name: pci_0000_03_00_0
    address: str  # 0000:03:00.0
    vendor: str  # 4 hex digits, lower case
    product: str
    pci_class: int | None = None  # 0x010802
    driver: str = ""  # the host driver bound to it, "" when none
    group: int | None = None  # IOMMU group number
    members: tuple[str, ...] = ()  # addresses of the group's devices, this one included
    bridge_cap: bool = False  # libvirt's <capability type='pci-bridge'/> (or cardbus)

    @property
    def bridge(self) -> bool:
        return self.bridge_cap or (self.pci_class is not None and self.pci_class >> 8 in BRIDGE_CLASSES)

    def label(self) -> str:
        return f"{self.address} ({self.vendor}:{self.product})"


class UsbDevice(NamedTuple):
    name: str  # usb_1_2
    bus: int
    device: int
    vendor: str
    product: str

    def label(self) -> str:
        return f"bus {self.bus} device {self.device} ({self.name})"


class HostDevices(NamedTuple):
    pci: tuple[PciDevice, ...] = ()
    usb: tuple[UsbDevice, ...] = ()
    #: whether the connection gave a device list to look devices up in
    listed: bool = False
    #: why not, for notes and errors
    why: str = ""
    #: the connection's URI, for messages
    uri: str = ""


class Choice(NamedTuple):
    """One device to assign, as resolved from one ``--hostdev`` value."""

    spec: str
    kind: str  # "pci" or "usb"
    address: str = ""  # PCI
    vendor: str = ""  # USB (PCI: for the record)
    product: str = ""
    device: PciDevice | UsbDevice | None = None


# -- reading the host's devices -------------------------------------------------------------


def _hex(text, width: int) -> str:
    return f"{int(str(text), 0):0{width}x}"


def pci_address(domain, bus, slot, function) -> str:
    """'0000:03:00.0' from the four numbers (decimal or 0x-prefixed text)."""
    return f"{_hex(domain, 4)}:{_hex(bus, 2)}:{_hex(slot, 2)}.{int(str(function), 0):x}"


def normal_address(text: str) -> str:
    """A PCI address as the user may give it (domain optional) in full form."""
    m = ADDRESS_RE.fullmatch(text.lower())
    if not m:
        raise ValueError(f"'{text}' is not a PCI address")
    return f"{m.group(1) or '0000'}:{m.group(2)}:{m.group(3)}.{m.group(4)}"


def _id(cap, tag: str) -> str:
    el = cap.find(tag)
    return _hex(el.get("id"), 4) if el is not None and el.get("id") else ""


def parse_device(xml: str) -> PciDevice | UsbDevice | None:
    """A PCI or USB device from libvirt's node device XML; None for anything else."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    name = root.findtext("name", "")
    driver = root.findtext("driver/name", "") or ""
    pci = root.find("capability[@type='pci']")
    if pci is not None:
        group = pci.find("iommuGroup")
        members = () if group is None else tuple(
            pci_address(a.get("domain"), a.get("bus"), a.get("slot"), a.get("function"))
            for a in group.iterfind("address"))
        cls = pci.findtext("class")
        return PciDevice(
            name=name,
            address=pci_address(pci.findtext("domain"), pci.findtext("bus"), pci.findtext("slot"),
                                pci.findtext("function")),
            vendor=_id(pci, "vendor"), product=_id(pci, "product"),
            pci_class=int(cls, 0) if cls else None, driver=driver,
            group=int(group.get("number")) if group is not None else None, members=members,
            bridge_cap=pci.find("capability[@type='pci-bridge']") is not None
            or pci.find("capability[@type='cardbus-bridge']") is not None,
        )
    usb = root.find("capability[@type='usb_device']")
    if usb is not None:
        return UsbDevice(name=name, bus=int(usb.findtext("bus", "0")), device=int(usb.findtext("device", "0")),
                         vendor=_id(usb, "vendor"), product=_id(usb, "product"))
    return None


def read_devices(probe) -> dict | None:
    """The PCI and USB devices of the connection's host (libvirt node devices, so a remote host
    is read through libvirt too): {"uri", "pci": [...], "usb": [...]}, or {"uri", "error"};
    None where there is no connection (recorded host facts)."""
    conn = probe.conn
    if conn is None:
        return None
    import libvirt

    uri = probe.connection.uri
    flags = libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV | libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_USB_DEV
    try:
        found = [parse_device(dev.XMLDesc(0)) for dev in conn.listAllDevices(flags)]
    except libvirt.libvirtError as exc:
        return {"uri": uri, "error": f"{uri} does not list its devices ({exc.get_error_message()})"}
    pci = sorted((d for d in found if isinstance(d, PciDevice)), key=lambda d: d.address)
    usb = sorted((d for d in found if isinstance(d, UsbDevice)), key=lambda d: (d.bus, d.device))
    return {"uri": uri, "pci": [d._asdict() for d in pci], "usb": [d._asdict() for d in usb]}


def host_devices(ctx) -> HostDevices:
    """The PCI and USB devices of the host the guest is for, from the host facts."""
    got = ctx.host.fact(DEVICES)
    if got is None:
        return HostDevices(why="the host facts list no PCI or USB devices (recorded host facts "
                               "without them, such as libvirt's own capabilities files)",
                           uri=ctx.uri or "the host")
    uri = got.get("uri", "?")
    if "error" in got:
        return HostDevices(why=got["error"], uri=uri)
    pci = tuple(PciDevice(**{**d, "members": tuple(d.get("members", ()))}) for d in got.get("pci", ()))
    usb = tuple(UsbDevice(**d) for d in got.get("usb", ()))
    if not pci and not usb:
        return HostDevices(why=f"{uri} lists no PCI or USB devices (libvirt's embedded test driver, "
                               "where a guest for recorded host facts is defined, has none)", uri=uri)
    return HostDevices(pci=pci, usb=usb, listed=True, uri=uri)


# -- choosing ----------------------------------------------------------------------------


def choose(ctx, devices: HostDevices) -> tuple[list[Choice], list[Check]]:
    """The devices ``settings.hostdev`` name, and a fail for each one that cannot be chosen."""
    choices: list[Choice] = []
    fails: list[Check] = []
    where = f"on {devices.uri}"
    for spec in ctx.settings.hostdev:
        kind, _, ids = spec.partition(":") if spec.startswith(("pci:", "usb:")) else ("", "", "")
        if not kind:
            address = normal_address(spec)
            if not devices.listed:
                choices.append(Choice(spec, "pci", address=address))
                continue
            dev = next((d for d in devices.pci if d.address == address), None)
            if dev is None:
                fails.append(Check("fail", f"--hostdev {spec}: no PCI device {address} {where}",
                                   fix="list the host's PCI devices with 'virsh nodedev-list --cap pci' "
                                       "(or lspci -D on the host) and give one of their addresses"))
                continue
            choices.append(Choice(spec, "pci", address=address, vendor=dev.vendor, product=dev.product, device=dev))
            continue
        vendor, _, product = ids.partition(":")
        if kind == "pci":
            if not devices.listed:
                fails.append(Check(
                    "fail", f"--hostdev {spec}: only the host's device list can turn a vendor:product "
                            f"into a PCI address, and {devices.why}",
                    fix=f"give the address (lspci -D -d {vendor}:{product} on the host shows it), or "
                        "--connect to the host that has the device"))
                continue
            matches = [d for d in devices.pci if (d.vendor, d.product) == (vendor, product)]
            if len(matches) > 1:
                fails.append(Check(
                    "fail", f"--hostdev {spec} matches {len(matches)} PCI devices: "
                            + ", ".join(d.address for d in matches),
                    fix="give the address of the one to assign: " + " or ".join(f"--hostdev {d.address}" for d in matches)))
                continue
            if not matches:
                fails.append(Check("fail", f"--hostdev {spec}: no PCI device {vendor}:{product} {where}",
                                   fix="lspci -nn on the host shows the [vendor:product] of each device"))
                continue
            d = matches[0]
            choices.append(Choice(spec, "pci", address=d.address, vendor=vendor, product=product, device=d))
            continue
        if not devices.listed:
            choices.append(Choice(spec, "usb", vendor=vendor, product=product))
            continue
        matches = [d for d in devices.usb if (d.vendor, d.product) == (vendor, product)]
        if len(matches) > 1:
            fails.append(Check(
                "fail", f"--hostdev {spec} matches {len(matches)} USB devices: "
                        + ", ".join(d.label() for d in matches) + "; libvirt would refuse to pick one",
                fix="leave one of them plugged in, or assign the USB controller they are on by its PCI address"))
            continue
        if not matches:
            fails.append(Check("fail", f"--hostdev {spec}: no USB device {vendor}:{product} {where}",
                               fix="lsusb on the host shows the ID vendor:product of each device; is it plugged in?"))
            continue
        choices.append(Choice(spec, "usb", vendor=vendor, product=product, device=matches[0]))
    unique: dict[tuple, Choice] = {}
    for c in choices:
        unique.setdefault((c.kind, c.address or f"{c.vendor}:{c.product}"), c)
    return list(unique.values()), fails
