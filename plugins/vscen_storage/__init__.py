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
    An encrypted disk (``encrypt=yes``) gets ``<encryption format='luks'>`` naming the libvirt
    secret by UUID: ``uuid5(NAMESPACE_URL, "vscen:" + path)``, the secret the
    ``disk-encryption`` host action defines (the passphrase itself never enters the XML), so
    the XML is the same on every run. The disks' files are made by the host actions
    ``storage-volume`` and ``disk-encryption`` (plugin ``volumes``). Where the user overrode a
    disk setting a chosen scenario recommends, a note says so, one per setting.

``iothreads``
    One I/O thread (``<iothreads>1</iothreads>``) and every virtio disk bound to it, so disk
    I/O leaves QEMU's main loop and does not compete with device emulation. The binding is
    done in ``finish`` so that it sees every disk, whoever added it.
"""

from __future__ import annotations

from vscen import Feature, hookimpl, parse_size, scenario_defaults, secret_uuid

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



def _normal(key: str, value):
    """A disk setting as comparable value: sizes in bytes, yes/no as booleans."""
    if value is None:
        return None
    if key in ("size", "cluster_size"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return parse_size(f"disk.{key}", value, "g" if key == "size" else "k")
    if key in ("lazy_refcounts", "encrypt"):
        return value in (True, "yes")
    return str(value)


def _shown(key: str, value) -> str:
    if key in ("lazy_refcounts", "encrypt"):
        return "yes" if value else "no"
    if key in ("size", "cluster_size") and isinstance(value, int):
        for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value % factor == 0:
                return f"{value // factor}{unit}"
    return str(value)


def note_overrides(ctx) -> None:
    """One note per disk setting a chosen scenario recommends and the user chose otherwise."""
    s = ctx.settings
    per_disk = s.source("disks").startswith(("option", "config"))
    for scenario in ctx.resolution.scenarios:
        for key, recommended in scenario_defaults(scenario).items():
            if not key.startswith("disk.") or key == "disk.path":
                continue
            field = key[5:]
            user = s.source(key).startswith(("option", "config"))
            if not (user or per_disk):
                continue
            want = _normal(field, recommended)
            chosen = list(dict.fromkeys(_normal(field, getattr(d, field, None)) for d in s.disks))
            chosen = [c for c in chosen if c != want]
            if not chosen:
                continue
            where = s.source(key) if user else "option"
            values = ", ".join(f"'{_shown(field, c)}'" for c in chosen)
            ctx.note(f"storage: {key} recommended '{recommended}' (scenario {scenario.name}), "
                     f"chosen {values} ({where})")


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
        if disk.get("encrypt"):  # the volumes plugin's disk key
            enc = el.add("encryption", format="luks")
            enc.add("secret", type="passphrase", uuid=secret_uuid(s.disk_path(i)))

    if any(d.bus == "scsi" for d in s.disks):
        devices.child("controller", type="scsi", model="virtio-scsi")

    if s.cdrom:
        cd = devices.add("disk", type="file", device="cdrom")
        cd.add("driver", name="qemu", type="raw")
        cd.add("source", file=s.cdrom)
        cd.add("target", dev=target_for("sata"), bus="sata")
        cd.add("readonly")
    note_overrides(ctx)


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
        host_actions=("storage-volume", "disk-encryption"),
        details="One <disk type='file' device='disk'> per disk: driver qemu with the disk's "
                "format and only the cache/io/discard asked for, source = the disk's path, "
                "target vda.. (virtio), sda.. (scsi/sata/usb, one sequence), nvme0n1.. "
                "(nvme); a virtio-scsi controller when a disk uses scsi; for an encrypted disk "
                "<encryption format='luks'> with the secret uuid5(NAMESPACE_URL, 'vscen:' + "
                "path). The cdrom as a raw, readonly sata disk after the disks' sd letters. "
                "New disks are made by the host actions storage-volume and disk-encryption; a "
                "note names each disk setting the user chose against a scenario's "
                "recommendation.",
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


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
