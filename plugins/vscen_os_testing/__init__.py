"""The os-testing scenario: a throwaway guest for trying an operating system or an installer,
and the snapshot that takes it back to the state before its first boot.

``os-testing``
    Boots an ISO (``--cdrom``: boot order cdrom, hd) or the network (``--boot network``), on
    a qcow2 disk; ``--disk backing=/base.qcow2`` makes that disk a copy-on-write overlay on a
    base image (the ``storage-volume`` action of plugin volumes), which the guest never
    writes. A serial console for installers that talk on one, a display and a USB tablet for
    those that do not; UEFI with Secure Boot and an emulated TPM 2.0 (CRB), the host's CPU
    (``cpu-migratable``: passthrough, so the installer's CPU checks see real features), q35,
    4 GiB, 2 vCPUs and a 64 GiB disk (thin): Windows 11's minimums, so that its installer
    runs as it is. ``--feature -secure-boot`` boots unsigned loaders. A note names what the
    chosen settings leave below those minimums.

``first-boot-snapshot`` (feature and host action)
    A libvirt snapshot ``vscen-first-boot`` of the defined, never started guest: internal
    snapshots of its qcow2 disks, taken by ``snapshotCreateXML`` after the define step and
    before the start step (``after_define``). libvirt 9.0 allows this for a shut-off UEFI
    guest (it refuses internal snapshots of a *running* one with pflash firmware, and cannot
    revert external ones), but the firmware variables (NVRAM) and the TPM state are outside
    any disk: they do not exist before the first boot, and ``vscen snapshot revert`` removes
    them again (libvirt makes both afresh at the next start), so the guest really is back
    before its first boot. What it cannot do, refused before anything is made: a transient
    guest (``--transient``: it exists only running, so it never is the defined, shut-off
    guest libvirt snapshots), raw disks (internal snapshots live inside qcow2), encrypted
    disks (libvirt 9.0 snapshots a shut-off guest with ``qemu-img``, which it does not give
    the disk's secret). A guest that exists already (it may have booted) gets no snapshot, a
    note says so. Record ``{"kind": "snapshot", "domain", "uuid", "name",
    "before_first_boot": true}``; undo deletes the snapshot (``vscen destroy``).
"""

from __future__ import annotations

from vscen import Conflict, Feature, HostAction, Scenario, Step, hookimpl, on_this_machine

SNAPSHOT = "vscen-first-boot"
ACTION = "first-boot-snapshot"
#: Windows 11's minimums, which the scenario's defaults meet: (memory KiB, vCPUs, disk bytes)
WINDOWS_11 = (4 * 1024**2, 2, 64 * 1024**3)


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def apply_scenario(domain, ctx) -> None:
    """Say what the chosen settings leave below Windows 11's minimums (fine for other systems)."""
    s = ctx.settings
    memory, vcpu, disk = WINDOWS_11
    short = []
    if s.memory < memory:
        short.append(f"memory {_size(s.memory * 1024)} < {_size(memory * 1024)}")
    if s.vcpu < vcpu:
        short.append(f"{s.vcpu} vCPU < {vcpu}")
    if s.disks and s.disks[0].size < disk:
        short.append(f"disk {_size(s.disks[0].size)} < {_size(disk)}")
    machine = s.machine or ctx.host.machine or ""
    if "q35" not in machine:
        short.append(f"machine {machine or '?'} (q35 needed)")
    # what the features wrote (they fall back where the host lacks something); the settings last
    os_ = domain.find("os")
    if s.firmware == "bios" or os_ is None or os_.get("firmware") != "efi":
        short.append("no UEFI")
    elif domain.find("os/firmware/feature", name="secure-boot") is None:
        short.append("no Secure Boot")
    if domain.find("devices/tpm") is None:
        short.append("no TPM 2.0")
    if short:
        ctx.note(f"os-testing: below Windows 11's minimums (fine for other systems): {', '.join(short)}")


# -- the first-boot snapshot ---------------------------------------------------------------------


def _disk_problems(s) -> list[str]:
    problems = []
    for i, disk in enumerate(s.disks):
        path = s.disk_path(i)
        if disk.format != "qcow2":
            problems.append(f"disk.format: '{disk.format}' for {path}: the first-boot snapshot lives inside "
                            "the disks, which needs qcow2; give format=qcow2, or --feature -first-boot-snapshot")
        if disk.get("encrypt"):
            problems.append(f"disk.encrypt: {path} is encrypted, and libvirt 9.0 cannot snapshot an encrypted "
                            "disk of a shut-off guest; give encrypt=no, or --feature -first-boot-snapshot")
    return problems


def _exists(connection, path: str) -> bool:
    """Whether an image is at *path* already: a volume libvirt knows, or (here) a file."""
    import os

    import libvirt

    if on_this_machine(connection):
        return os.path.exists(path)
    try:
        connection.conn.storageVolLookupByPath(path)
        return True
    except libvirt.libvirtError:
        return False


def _recommend_overlays(ctx) -> None:
    s = ctx.settings
    for i, disk in enumerate(s.disks):
        path = s.disk_path(i)
        if not disk.backing and _exists(ctx.connection, path):
            ctx.note(f"os-testing: disk {path} exists: the guest writes into it and its first-boot snapshot "
                     f"is kept inside it; to leave it untouched, give --disk path=NEW.qcow2,backing={path} "
                     "(a copy-on-write overlay on it)")


def plan_snapshot(ctx) -> list[Step]:
    import libvirt

    from vscen import UsageError, raise_all

    s = ctx.settings
    if s.transient:
        raise UsageError(f"transient: {ACTION} needs a defined guest: libvirt snapshots it shut off, before "
                         "it first starts, and a transient guest exists only running; leave out --transient, "
                         f"or give --feature -{ACTION}")
    raise_all(UsageError, ACTION, _disk_problems(s))
    if ctx.connection is None:
        return []
    if not s.disks:
        ctx.note(f"{ACTION}: the guest has no disk: nothing to snapshot")
        return []
    _recommend_overlays(ctx)
    conn, name = ctx.connection, s.name
    try:
        dom = conn.conn.lookupByName(name)
    except libvirt.libvirtError:
        dom = None
    if dom is not None:
        try:
            dom.snapshotLookupByName(SNAPSHOT)
            ctx.note(f"{ACTION}: {name} has its snapshot {SNAPSHOT}: unchanged")
        except libvirt.libvirtError:
            ctx.note(f"{ACTION}: domain {name} exists already and may have booted: no snapshot taken "
                     f"(vscen destroy {name}, then run again, for one)")
        return []
    return [Step(f"take snapshot {SNAPSHOT} of {name}'s disks before its first boot", _taker(conn, name))]


def _taker(connection, name: str):
    def do():
        import libvirt
        from lxml import etree

        from vscen import LibvirtError, VscenError

        dom = connection.conn.lookupByName(name)
        if dom.isActive():
            raise VscenError(f"{name} is running already: too late for a snapshot before its first boot")
        root = etree.Element("domainsnapshot")
        etree.SubElement(root, "name").text = SNAPSHOT
        etree.SubElement(root, "description").text = f"vscen: {name} before its first boot"
        try:
            dom.snapshotCreateXML(etree.tostring(root, encoding="unicode"),
                                  libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"libvirt could not snapshot {name}: {exc.get_error_message()}") from None
        return {"kind": "snapshot", "domain": name, "uuid": dom.UUIDString(), "name": SNAPSHOT,
                "before_first_boot": True}

    return do


def undo_snapshot(connection, record: dict) -> None:
    """Delete the snapshot (its data inside the disks and libvirt's metadata); gone is fine.
    Only the snapshot vscen takes (its name), of the domain vscen recorded (by UUID)."""
    import libvirt

    from vscen import UsageError, check_record

    check_record(record, {"kind": str, "uuid": str, "name": str}, "snapshot")
    if record["kind"] != "snapshot" or record["name"] != SNAPSHOT:
        raise UsageError(f"snapshot: {record['name']!r} is not the snapshot vscen takes ({SNAPSHOT}); not touched")
    conn = connection.conn
    try:
        dom = conn.lookupByUUIDString(record["uuid"])
        snap = dom.snapshotLookupByName(record["name"])
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT):
            return
        raise
    snap.delete(0)


# -- registration --------------------------------------------------------------------------------

OS_TESTING = Scenario(
    name="os-testing",
    summary="a throwaway guest for trying an OS or an installer: ISO or network boot, overlay disk, "
            "snapshot before first boot",
    details=(
        "For trying an operating system or an installer and starting over. It boots an ISO "
        "(--cdrom: boot order cdrom, hd) or the network (--boot network); its disk is qcow2, and "
        "--disk backing=/base.qcow2 makes it a copy-on-write overlay on a base image, which the "
        "guest never writes (recommended in a note when the disk given is an existing image). "
        "first-boot-snapshot takes a snapshot of the disks once the guest is defined, before it "
        "first starts; 'vscen snapshot revert NAME' goes back to it as often as wanted, with "
        "fresh firmware variables and TPM state, and 'vscen snapshot list NAME' shows it. A "
        "serial console, a display with a USB tablet, UEFI with Secure Boot (--feature "
        "-secure-boot turns it off) and an emulated TPM 2.0 (CRB); the host's CPU, since "
        "installers check CPU features. Defaults: machine q35, 4 GiB of memory, 2 vCPUs, a 64 "
        "GiB qcow2 disk (thin): with UEFI, Secure Boot and TPM 2.0, Windows 11's minimums, so its "
        "installer runs unmodified; a note names what chosen settings leave below them. Not "
        "with destroy-on-events: installers reboot the guest. Not with --transient while "
        "first-boot-snapshot is chosen (libvirt snapshots the defined guest, shut off)."
    ),
    features=(
        "uefi", "secure-boot", "tpm", "cpu-migratable", "storage", "network", "serial-console",
        "graphics", "usb-tablet", "acpi", "clock", "rng", "first-boot-snapshot",
    ),
    defaults={"machine": "q35", "memory": "4GiB", "vcpu": 2, "disk": {"format": "qcow2", "size": "64GiB"}},
    conflicts=(
        Conflict("destroy-on-events", "installers reboot the guest, and destroy-on-events would stop it "
                                      "at every reboot"),
    ),
    validators=("kvm",),
    apply=apply_scenario,
)

FIRST_BOOT_SNAPSHOT = Feature(
    name="first-boot-snapshot",
    summary="a snapshot of the disks taken before the first boot, for 'vscen snapshot revert'",
    category="snapshot",
    requires=("storage",),
    host_actions=(ACTION,),
    details="No XML. Host action first-boot-snapshot: once the domain is defined and before it "
            "starts, a libvirt snapshot vscen-first-boot (internal snapshots of every qcow2 "
            "disk). 'vscen snapshot revert NAME' goes back to it and removes the NVRAM and TPM "
            "state, which libvirt makes afresh at the next start: the state before the first "
            "boot. Refused with --transient (a transient guest exists only running; libvirt "
            "snapshots the defined guest shut off), raw disks (internal snapshots need qcow2) and "
            "encrypted disks (libvirt 9.0 cannot snapshot them shut off).",
)

FIRST_BOOT_ACTION = HostAction(
    name=ACTION,
    summary="a libvirt snapshot of the defined guest before its first boot",
    plan=plan_snapshot,
    undo=undo_snapshot,
    after_define=True,
    details="After the define step, before the start step: snapshotCreateXML of the shut-off "
            "domain (internal snapshots of its qcow2 disks), named vscen-first-boot. A domain "
            "that exists already gets none (it may have booted). Undo: the snapshot deleted.",
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_scenarios(register):
    register(OS_TESTING)


@hookimpl
def vscen_register_features(register):
    register(FIRST_BOOT_SNAPSHOT)


@hookimpl
def vscen_register_host_actions(register):
    register(FIRST_BOOT_ACTION)


@hookimpl
def vscen_register_commands(register):
    from vscen import Command

    register(Command(name="snapshot", summary="Snapshots of a guest vscen made: revert to the state before its first boot.",
                     app="vscen_os_testing.snapshots:app"))
