"""Disks and cdrom of the guest, and an I/O thread for its virtio disks.

``storage``
    One file-backed ``<disk>`` per ``settings.disks``, in order. The driver carries only what
    the user (or a scenario) asked for: ``cache``/``io`` left at "default" are omitted so that
    QEMU's own defaults apply, and ``discard`` is written only when set. Target names follow
    the guest kernel's naming per bus (``vda``.. for virtio; ``sda``.. for scsi, sata and usb,
    which Linux names from one shared sd sequence; ``nvme0n1``.. for nvme namespaces), so the
    names in the XML are the ones the guest will see. The cdrom goes on sata because every
    x86 machine type has an AHCI controller for it and no guest needs a driver for it; it
    takes the next sd letter after the disks so the two never collide. A scsi disk needs a
    SCSI controller, and ``virtio-scsi`` is the one that is fast and needs no legacy driver.
    No per-device ``<boot>``: the boot order is the core's, from ``settings.boot``.

``iothreads``
    One I/O thread (``<iothreads>1</iothreads>``) and every virtio disk bound to it, so disk
    I/O leaves QEMU's main loop and does not compete with device emulation. The binding is
    done in ``finish`` so that it sees every disk, whoever added it.
"""

from __future__ import annotations

from vscen import Feature, hookimpl

#: buses whose disks Linux names from one shared ``sd`` letter sequence
SD_BUSES = ("scsi", "sata", "usb")


def letters(index: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa': the suffix libvirt and Linux use for disk names."""
    out = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        out = chr(ord("a") + rest) + out
    return out


def apply(domain, ctx) -> None:
    s = ctx.settings
    devices = domain.ensure("devices")
    counters = {"vd": 0, "sd": 0, "nvme": 0}

    def target_for(bus: str) -> str:
        if bus == "nvme":
            counters["nvme"] += 1
            return f"nvme0n{counters['nvme']}"
        prefix = "sd" if bus in SD_BUSES else "vd"
        name = prefix + letters(counters[prefix])
        counters[prefix] += 1
        return name

    for i, disk in enumerate(s.disks):
        el = devices.add("disk", type="file", device="disk")
        driver = {"name": "qemu", "type": disk.format}
        for key in ("cache", "io"):
            if getattr(disk, key) not in (None, "default"):
                driver[key] = getattr(disk, key)
        if disk.discard:
            driver["discard"] = disk.discard
        el.add("driver", **driver)
        el.add("source", file=s.disk_path(i))
        el.add("target", dev=target_for(disk.bus), bus=disk.bus)

    if any(d.bus == "scsi" for d in s.disks):
        devices.child("controller", type="scsi", model="virtio-scsi")

    if s.cdrom:
        cd = devices.add("disk", type="file", device="cdrom")
        cd.add("driver", name="qemu", type="raw")
        cd.add("source", file=s.cdrom)
        cd.add("target", dev=target_for("sata"), bus="sata")
        cd.add("readonly")


def apply_iothreads(domain, ctx) -> None:
    if ctx.host.has_domcaps and "iothreads" not in ctx.host.supported:
        ctx.note("iothreads: the host's domain capabilities do not list I/O threads; "
                 "disks use QEMU's main loop")
        return
    domain.ensure("iothreads").text(1)


def finish_iothreads(domain, ctx) -> None:
    if domain.find("iothreads") is None:  # apply found no I/O thread support
        return
    devices = domain.find("devices")
    for disk in devices.findall("disk") if devices is not None else ():
        target = disk.find("target")
        if target is not None and target.get("bus") == "virtio":
            disk.ensure("driver").set(iothread=1)


FEATURES = (
    Feature(
        name="storage",
        summary="the disks from the settings, and the cdrom",
        category="storage",
        apply=apply,
        details="One <disk type='file' device='disk'> per disk: driver qemu with the disk's "
                "format and only the cache/io/discard asked for, source = the disk's path, "
                "target vda.. (virtio), sda.. (scsi/sata/usb, one sequence), nvme0n1.. "
                "(nvme); a virtio-scsi controller when a disk uses scsi. The cdrom as a raw, "
                "readonly sata disk after the disks' sd letters.",
    ),
    Feature(
        name="iothreads",
        summary="one I/O thread serving every virtio disk",
        category="storage",
        requires=("storage",),
        apply=apply_iothreads,
        finish=finish_iothreads,
        details="<iothreads>1</iothreads> and iothread='1' on the driver of every virtio "
                "disk, so disk I/O runs outside QEMU's main loop.",
    ),
)


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
