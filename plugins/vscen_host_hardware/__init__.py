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

from vscen import Check, Conflict, FactProvider, Feature, Setting, Validator, hookimpl

FEATURE = "host-hardware"
#: the host's PCI and USB devices, a fact read at the facts stage
DEVICES = "host-hardware.devices"

#: the names the package offers from its modules, each module imported when first used: every
#: render runs the domain check below, which needs neither
_MODULE_OF = {**dict.fromkeys(("Choice", "HostDevices", "PciDevice", "UsbDevice", "choose", "host_devices",
                               "parse_device", "read_devices"), "devices"),
              **dict.fromkeys(("check_host_hardware", "group_checks", "iommu_checks"), "checks")}

__all__ = ["DEVICES", "FEATURE", *sorted(_MODULE_OF)]


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


# -- the feature --------------------------------------------------------------------------


def apply(domain, ctx) -> None:
    from vscen_host_hardware.devices import choose, host_devices

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

VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)


@hookimpl
def vscen_register_validators(register):
    from vscen_host_hardware.checks import check_host_hardware

    register(Validator(name=FEATURE, kind="host",
                       summary="the devices to assign exist, once each, and the IOMMU lets the guest have them",
                       check=check_host_hardware))
    register(Validator(name="hostdev-feature", kind="domain",
                       summary="--hostdev is not given without the host-hardware feature",
                       check=check_hostdev_feature))


@hookimpl
def vscen_register_facts(register):
    from vscen_host_hardware.devices import read_devices

    register(FactProvider(
        name=DEVICES, read=read_devices,
        summary="the host's PCI and USB devices (libvirt node devices): address, ids, driver, "
                "IOMMU group",
        example={"uri": "qemu:///system", "usb": [], "pci": [
            {"name": "pci_0000_03_00_0", "address": "0000:03:00.0", "vendor": "144d",
             "product": "a808", "pci_class": 67586, "driver": "nvme", "group": 14,
             "members": ["0000:03:00.0"], "bridge_cap": False}]}))


#: a --hostdev value (compiled by ``re`` when first used: most runs have none)
HOSTDEV = (
    r"(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"  # PCI address
    r"|(?:pci|usb):[0-9a-fA-F]{4}:[0-9a-fA-F]{4}"  # by vendor:product
)


def _hostdev(value: str) -> str:
    if not re.fullmatch(HOSTDEV, value):
        raise ValueError("is not a PCI address (0000:03:00.0) or pci:VENDOR:PRODUCT / usb:VENDOR:PRODUCT "
                         "(hex, as lspci -nn and lsusb show them)")
    return value.lower()


@hookimpl
def vscen_register_settings(register):
    register(Setting(name="hostdev", repeatable=True, parse=_hostdev, metavar="DEVICE", example="usb:046d:c52b",
                     help="Assign a host device: PCI address, pci:VENDOR:PRODUCT or usb:VENDOR:PRODUCT. Repeatable."))
