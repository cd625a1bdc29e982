"""Host devices assigned to the guest: PCI devices through VFIO, USB devices by vendor:product.

``host-hardware``
    One ``<hostdev mode='subsystem'>`` per ``settings.hostdev`` (``--hostdev``): a PCI
    address (``0000:03:00.0``), ``pci:VENDOR:PRODUCT`` or ``usb:VENDOR:PRODUCT``. Devices are
    looked up in the node devices of the libvirt connection the host facts are read from (so
    a remote host is read through libvirt too; the ``host-hardware.devices`` fact, which
    ``vscen host snapshot`` records and ``--host-facts`` replays): PCI by address or by vendor:product, USB by
    vendor:product. A PCI device is written by its address with ``managed='yes'``, so libvirt
    detaches it from its host driver when the guest starts and gives it back when it stops;
    a USB device by vendor and product, so the guest finds it again after a replug (its
    bus/device numbers change then).

``host-hardware`` (host check)
    Before anything is built: each device exists, and a vendor:product names exactly one
    (several: an error listing them). For PCI, the host's IOMMU is on (libvirt's
    ``<iommu support='yes'/>``), libvirt offers the VFIO backend, and every other device of
    the IOMMU group is assigned too, or is a PCI bridge (which VFIO lets the host keep), or is
    bound to ``vfio-pci`` (or ``pci-stub``) already. A member with a host driver or with no
    driver at all fails the check: VFIO needs the whole group out of the host's hands, and an
    unbound device can be claimed by a host driver (a module loading) at any time; the fix
    names it, with ``virsh nodedev-detach`` or ``--hostdev`` to assign it too.

``hostdev-feature`` (domain check)
    ``--hostdev`` without the feature would be silently ignored: that fails, naming the fix.

Where the host facts list no PCI or USB device at all (libvirt's embedded ``test:///default``,
a driver without node devices, or recorded files without the device list), there is
nothing to look devices up in: a PCI address and a USB vendor:product are written as given,
the host check warning that neither their existence nor the IOMMU groups were checked (the
IOMMU itself still is, from the host facts); ``pci:VENDOR:PRODUCT`` is refused, as only the
host's device list can turn it into an address. Rendering for another host stays possible that
way, and a guest that names a missing device fails when it starts, not silently.

Conflicts with ``launch-security``: a confidential guest's memory is encrypted against the
host, so an assigned device could DMA only through unencrypted bounce buffers; trusted device
assignment (TDISP: SEV-TIO, TDX Connect) is not something libvirt offers.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from vscen import Check, Conflict, FactProvider, Feature, Setting, Validator, hookimpl

#: drivers that hold a PCI device away from the host, so VFIO accepts it in a group
STUB_DRIVERS = ("vfio-pci", "pci-stub")
#: PCI class codes (class << 8 | subclass) of bridges: VFIO lets the host keep those bound
BRIDGE_CLASSES = (0x0604, 0x0607, 0x0609)
ADDRESS_RE = re.compile(r"(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")
FEATURE = "host-hardware"
#: the host's PCI and USB devices, a fact read at the facts stage
DEVICES = "host-hardware.devices"


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


# -- the host check ------------------------------------------------------------------------


def _enable_iommu(ctx) -> str:
    vendor = (ctx.host.cpu_vendor or "").lower()
    intel = ("enable VT-d in the host's firmware setup and boot the host kernel with "
             "'intel_iommu=on iommu=pt'")
    amd = ("enable AMD-Vi (IOMMU) in the host's firmware setup; the kernel turns it on by itself "
           "(take out any 'amd_iommu=off' or 'iommu=off'; 'iommu=pt' keeps host DMA fast)")
    text = amd if "amd" in vendor else intel if "intel" in vendor else f"{intel}; on AMD, {amd}"
    return text + "; then /sys/kernel/iommu_groups lists groups and libvirt reports <iommu support='yes'/>"


def iommu_checks(ctx, needed: bool) -> list[Check]:
    """Whether the host can assign PCI devices: IOMMU on, VFIO offered. *needed*: a PCI device
    was asked for (fail), else only say what a PCI assignment would need (warn)."""
    bad = "fail" if needed else "warn"
    if not ctx.host.has_caps:
        return [Check("warn", "the host facts carry no libvirt capabilities: whether the IOMMU is on "
                              "is not checked", fix="give the host's capabilities too (virsh capabilities)")]
    if not ctx.host.iommu:
        return [Check(bad, "the host's IOMMU is off (libvirt capabilities: <iommu support='no'/>): "
                           "PCI devices cannot be assigned", fix=_enable_iommu(ctx))]
    if not ctx.host.offers("hostdev.pciBackend", "vfio"):
        return [Check(bad, "libvirt offers no VFIO backend for PCI assignment (domain capabilities, "
                           "hostdev pciBackend)",
                      fix="load the vfio-pci module (modprobe vfio-pci; list it in "
                          "/etc/modules-load.d/ to keep it), then check that 'virsh domcapabilities' "
                          "lists vfio under hostdev pciBackend")]
    return [Check("pass", "the host's IOMMU is on and libvirt offers VFIO")]


def group_checks(choices: list[Choice], devices: HostDevices) -> list[Check]:
    """One fail per IOMMU group with a member that is neither assigned, a bridge, nor held by
    vfio-pci; the message names which and the fix says how."""
    by_address = {d.address: d for d in devices.pci}
    assigned = {c.address for c in choices if c.kind == "pci"}
    checks, seen = [], set()
    for c in choices:
        dev = c.device
        if c.kind != "pci" or not isinstance(dev, PciDevice):
            continue
        if dev.group is None:
            checks.append(Check("fail", f"{dev.label()} is in no IOMMU group: the IOMMU does not cover it, "
                                        "so VFIO cannot assign it",
                                fix="check the firmware's IOMMU settings (ACS, above-4G decoding) or use "
                                    "another slot"))
            continue
        if dev.group in seen:
            continue
        seen.add(dev.group)
        blocking = []
        for member in dev.members:
            other = by_address.get(member)
            if member in assigned or (other is not None and (other.bridge or other.driver in STUB_DRIVERS)):
                continue
            blocking.append((member, other))
        if not blocking:
            continue
        mine = [a for a in dev.members if a in assigned]
        what = "; ".join(f"{m} ({_state(o)})" for m, o in blocking)
        detach = "; ".join(f"virsh nodedev-detach {o.name if o else 'pci_' + re.sub('[:.]', '_', m)}"
                           for m, o in blocking)
        assign = " ".join(f"--hostdev {m}" for m, _ in blocking)
        checks.append(Check(
            "fail", f"{', '.join(mine)} {'shares' if len(mine) == 1 else 'share'} IOMMU group {dev.group} "
                    f"with devices that are neither assigned nor held by vfio-pci: {what}; VFIO gives a "
                    "guest whole IOMMU groups only",
            fix=f"assign them too ({assign}), or take them from the host ({detach}; virsh "
                "nodedev-reattach gives them back)"))
    return checks


def _state(dev: PciDevice | None) -> str:
    if dev is None:
        return "not in the host's device list"
    return f"driver {dev.driver}" if dev.driver else "no driver: a host driver may claim it"


def check_host_hardware(ctx):
    if not ctx.settings.hostdev:
        return [Check("warn", "no --hostdev given: no device is assigned",
                      fix="--hostdev 0000:03:00.0, --hostdev pci:VENDOR:PRODUCT or --hostdev usb:VENDOR:PRODUCT"),
                *iommu_checks(ctx, needed=False)]
    devices = host_devices(ctx)
    choices, checks = choose(ctx, devices)
    wants_pci = any(not s.startswith("usb:") for s in ctx.settings.hostdev)
    for kind in ("pci", "usb"):
        if any(c.kind == kind for c in choices) and not ctx.host.offers("hostdev.subsysType", kind):
            checks.append(Check("fail", f"the host's libvirt/QEMU offers no {kind.upper()} device assignment "
                                        "(domain capabilities, hostdev subsysType)"))
    if wants_pci:
        checks += iommu_checks(ctx, needed=True)
        if ctx.host.iommu:
            checks += group_checks(choices, devices)
    if not devices.listed and choices:
        checks.append(Check("warn", f"{devices.why}: " + ", ".join(c.spec for c in choices)
                                    + " written as given, not checked to exist, IOMMU groups not checked",
                            fix="--connect to the host that has the devices, to check them"))
    if not any(c.status == "fail" for c in checks):
        checks.append(Check("pass", "assigning " + ", ".join(_describe(c) for c in choices)))
    return checks


def _describe(c: Choice) -> str:
    if c.kind == "usb":
        where = f" at {c.device.label()}" if isinstance(c.device, UsbDevice) else ""
        return f"USB {c.vendor}:{c.product}{where}"
    dev = c.device
    if not isinstance(dev, PciDevice):
        return f"PCI {c.address}"
    group = "" if dev.group is None else f" in IOMMU group {dev.group}"
    return f"PCI {dev.label()}{group}"


# -- the feature --------------------------------------------------------------------------


def apply(domain, ctx) -> None:
    devices = host_devices(ctx)
    choices, fails = choose(ctx, devices)
    if fails:  # the host check names them; reached only where it did not run
        raise ValueError("; ".join(f.message for f in fails))
    out = domain.ensure("devices")
    for c in choices:
        if c.kind == "pci":
            dom, bus, rest = c.address.split(":")
            slot, function = rest.split(".")
            hostdev = out.add("hostdev", mode="subsystem", type="pci", managed="yes")
            hostdev.add("source").add("address", domain=f"0x{dom}", bus=f"0x{bus}", slot=f"0x{slot}",
                                      function=f"0x{function}")
        else:
            source = out.add("hostdev", mode="subsystem", type="usb").add("source")
            source.add("vendor", id=f"0x{c.vendor}")
            source.add("product", id=f"0x{c.product}")
    if any(c.kind == "pci" for c in choices) and ctx.has("memballoon"):
        ctx.note("host-hardware: an assigned PCI device pins all guest memory for its DMA, so the "
                 "memory balloon cannot give memory back to the host")


def check_hostdev_feature(ctx):
    if ctx.settings.hostdev and not ctx.has(FEATURE):
        return [Check("fail", f"--hostdev {', '.join(ctx.settings.hostdev)} given, but the feature "
                              f"{FEATURE} is not chosen: no device would be assigned",
                      fix=f"add --feature +{FEATURE}")]
    return []


FEATURES = (
    Feature(
        name=FEATURE,
        summary="PCI and USB devices of the host assigned to the guest",
        category="host devices",
        conflicts=(Conflict("launch-security",
                            "a confidential guest's memory is encrypted against the host: an assigned "
                            "device could reach it only through unencrypted bounce buffers, and trusted "
                            "device assignment (SEV-TIO, TDX Connect) is not offered by libvirt"),),
        validators=(FEATURE,),
        facts=(DEVICES,),
        apply=apply,
        details="One <hostdev mode='subsystem'> per --hostdev: type='pci' managed='yes' with "
                "<source><address domain bus slot function/></source> (found by address or "
                "pci:VENDOR:PRODUCT in the host's libvirt node devices); type='usb' with <source>"
                "<vendor id/><product id/></source> (usb:VENDOR:PRODUCT). Host check: the device "
                "exists and a vendor:product names one; for PCI the IOMMU is on, VFIO is offered and "
                "every other member of the IOMMU group is assigned too, a PCI bridge, or held by "
                "vfio-pci. Where the connection lists no devices (test:///default, recorded host "
                "facts): addresses and USB ids written as given, with a warning; pci:VENDOR:PRODUCT "
                "refused.",
    ),
)

VALIDATORS = (
    Validator(name=FEATURE, kind="host",
              summary="the devices to assign exist, once each, and the IOMMU lets the guest have them",
              check=check_host_hardware),
    Validator(name="hostdev-feature", kind="domain",
              summary="--hostdev is not given without the host-hardware feature",
              check=check_hostdev_feature),
)


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)


FACTS = (
    FactProvider(
        name=DEVICES, read=read_devices,
        summary="the host's PCI and USB devices (libvirt node devices): address, ids, driver, "
                "IOMMU group",
        example={"uri": "qemu:///system", "usb": [], "pci": [
            {"name": "pci_0000_03_00_0", "address": "0000:03:00.0", "vendor": "144d",
             "product": "a808", "pci_class": 67586, "driver": "nvme", "group": 14,
             "members": ["0000:03:00.0"], "bridge_cap": False}]}),
)


@hookimpl
def vscen_register_validators(register):
    for validator in VALIDATORS:
        register(validator)


@hookimpl
def vscen_register_facts(register):
    for fact in FACTS:
        register(fact)


HOSTDEV_RE = re.compile(
    r"(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"  # PCI address
    r"|(?:pci|usb):[0-9a-fA-F]{4}:[0-9a-fA-F]{4}"  # by vendor:product
)


def _hostdev(value: str) -> str:
    if not HOSTDEV_RE.fullmatch(value):
        raise ValueError("is not a PCI address (0000:03:00.0) or pci:VENDOR:PRODUCT / usb:VENDOR:PRODUCT "
                         "(hex, as lspci -nn and lsusb show them)")
    return value.lower()


@hookimpl
def vscen_register_settings(register):
    register(Setting(name="hostdev", repeatable=True, parse=_hostdev, metavar="DEVICE", example="usb:046d:c52b",
                     help="Assign a host device: PCI address, pci:VENDOR:PRODUCT or usb:VENDOR:PRODUCT. Repeatable."))
