"""host-hardware's host check: IOMMU on, the chosen devices in IOMMU groups VFIO accepts."""

from __future__ import annotations

import re

from vscen import Check
from vscen_host_hardware.devices import STUB_DRIVERS, Choice, HostDevices, PciDevice, UsbDevice, choose, host_devices


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
