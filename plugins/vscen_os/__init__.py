"""The guest's operating system, from the osinfo database (issue 11, first slice).

``--os SHORTID`` (``win11``, ``debian11``, ``fedora36``: ``vscen os list``) names the OS the
guest runs; the ``os-profile`` feature, implied by it, fits the guest to what the osinfo
database (Debian package ``osinfo-db``, read by ``osdb.py``) says of it, as virt-install's
``--osinfo`` does:

- resources: a memory, vCPU count or first-disk size the user set below the OS's minimum is
  refused, naming the minimum; one that came from a scenario or vscen's defaults is raised to
  the OS's recommended value (at least its minimum), with a note, and never lowered;
- devices: an OS whose installer has no virtio block driver gets SATA disks, one without a
  virtio-net driver an e1000e NIC (e1000 where it has no e1000e), replacing the scenario's
  virtio choices with a note (for Windows: the virtio-win driver ISO); a virtio GPU an OS has
  no driver for becomes a VGA card; what the user chose stays, with a note;
- firmware: UEFI where the OS supports no BIOS (the user's ``--firmware bios`` is refused);
- Windows 11 needs Secure Boot and a TPM 2.0 (Microsoft's requirement; the 2022 database does
  not say it): added where the scenario has none, with a note;
- Windows: Hyper-V enlightenments (relaxed, vapic, spinlocks, vpindex, synic, stimer,
  frequencies) and the ``hypervclock`` timer, as virt-install gives Windows guests on KVM;
- the libosinfo metadata element (``<libosinfo:os id=...>``), so virt-manager and other
  tools recognise the OS.

Without ``--os``, the OS is detected (``Setting.derive``, ``media.py``) from the ``--cdrom``
ISO's volume, system, publisher and application ids and volume size, as libosinfo matches the
database's ``<media>`` rules, or from a disk image's file name (a disk's ``backing`` base or
an existing disk) equal to one of its ``<image>`` URLs; a note says what was found, or why
nothing was (no error); an explicit ``--os`` always wins and nothing is read then.

``vscen list os [--json] [--family linux|windows|...]`` (also ``vscen os list``) and ``vscen
os show SHORTID [--json]`` show what the database knows (``cli.py``).
"""

from __future__ import annotations

from vscen import Command, Feature, HostAction, Setting, hookimpl

LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
#: what an OS needs that the database does not say (the 2022 osinfo-db has no TPM for Windows
#: 11): OS id -> requirements
REQUIRES = {"http://microsoft.com/win/11": ("secure-boot", "tpm-2.0")}
VIRTIO_DISK = ("virtio-block", "virtio1.0-block")
VIRTIO_NET = ("virtio-net", "virtio1.0-net")
VIRTIO_GPU = ("virtio-gpu", "virtio1.0-gpu")
HYPERV = ("relaxed", "vapic", "spinlocks", "vpindex", "synic", "stimer", "frequencies")
X86 = ("x86_64", "i686")


def parse_os(text: str) -> str:
    from vscen_os import osdb

    if not any((d / "os").is_dir() for d in osdb.db_dirs()):
        raise ValueError("cannot be looked up: no osinfo database found (install the package osinfo-db)")
    known = osdb.short_ids()
    if text not in known:
        import difflib

        close = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"is not an OS the osinfo database knows ({hint}see 'vscen os list')")
    return text


def _size(n: int) -> str:
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def os_info(ctx):
    from vscen import UsageError
    from vscen_os import osdb

    if not ctx.settings.get("os"):
        raise UsageError("os-profile: name the OS with --os SHORTID (see 'vscen os list')")
    return osdb.lookup(ctx.settings.os)


def _user(s, key: str) -> bool:
    return s.level(key) == "user"


def prepare(ctx) -> None:
    """The settings the OS needs, before any feature reads them."""
    from dataclasses import replace

    from vscen import UsageError, raise_all

    s, info = ctx.settings, os_info(ctx)
    arch = s.arch or ctx.host.arch
    low, rec = info.resource("minimum", arch), info.resource("recommended", arch)
    changes: dict = {}
    sources = dict(s.sources)
    refused = []
    who = f"os-profile ({info.short_id})"

    def fit(key, have, minimum, recommended, shown, option):
        if minimum and have < minimum and _user(s, key):
            refused.append(f"{key}: {shown(have)} is below {info.name}'s minimum of {shown(minimum)} "
                           f"(give {option} {shown(minimum)} or more)")
            return have
        want = max(v for v in (minimum, recommended, 0) if v is not None)
        if want and have < want and not _user(s, key):
            ctx.note(f"os-profile: {key} raised from {shown(have)} to {shown(want)}, "
                     f"{'the recommended' if recommended and want == recommended else 'the minimum'} "
                     f"for {info.name} (osinfo)")
            sources[key] = who
            return want
        return have

    memory = fit("memory", s.memory, (low.ram or 0) // 1024, (rec.ram or 0) // 1024,
                 lambda kib: _size(kib * 1024), "--memory")
    if memory != s.memory:
        changes["memory"] = memory
    vcpu = fit("vcpu", s.vcpu, low.n_cpus, rec.n_cpus, str, "--vcpu")
    if vcpu != s.vcpu:
        changes["vcpu"] = vcpu

    disks = list(s.disks)
    if disks and s.source("disks") == "option":
        # --disk gives each disk's keys: which were the user's is not known (a path of an
        # existing image keeps the default size), so only a note
        if low.storage and disks[0].size < low.storage and not disks[0].backing:
            ctx.note(f"os-profile: disk 1 is {_size(disks[0].size)}, below {info.name}'s minimum of "
                     f"{_size(low.storage)} (for a new disk, give --disk ...,size={_size(low.storage)})")
    elif disks and not disks[0].backing:
        size = fit("disk.size", disks[0].size, low.storage, rec.storage, _size, "--disk-size")
        if size != disks[0].size:
            disks[0] = replace(disks[0], size=size)
    if not info.supports(*VIRTIO_DISK):
        for i, disk in enumerate(disks):
            if disk.bus == "virtio":
                if _user(s, "disk.bus"):
                    ctx.note(f"os-profile: {info.name}'s installer has no virtio block driver: disk {i + 1} "
                             f"on virtio needs one loaded during installation{_virtio_win(info)}")
                    continue
                disks[i] = replace(disk, bus="sata")
                sources["disk.bus"] = who
                ctx.note(f"os-profile: disk {i + 1} on sata instead of virtio: {info.name}'s installer has no "
                         f"virtio block driver{_virtio_win(info)}")
    if disks != list(s.disks):
        changes["disks"] = tuple(disks)

    net = s.network
    if net.kind != "none" and net.model == "virtio" and not info.supports(*VIRTIO_NET):
        model = "e1000e" if info.supports("e1000e") else "e1000"
        if _user(s, "network"):
            ctx.note(f"os-profile: {info.name} has no virtio-net driver of its own: the virtio NIC needs "
                     f"one{_virtio_win(info)}")
        else:
            changes["network"] = replace(net, model=model)
            sources["network"] = who
            ctx.note(f"os-profile: NIC model {model} instead of virtio: {info.name} has no virtio-net "
                     f"driver of its own{_virtio_win(info)}")

    if arch in X86 and info.requires_efi(arch) and s.firmware != "efi":
        if s.firmware == "bios" and _user(s, "firmware"):
            refused.append(f"firmware: bios is not supported by {info.name}, which needs UEFI (give --firmware efi)")
        else:
            changes["firmware"] = "efi"
            sources["firmware"] = who
            if not ctx.has("uefi"):
                ctx.note(f"os-profile: UEFI firmware: {info.name} supports no BIOS")
    raise_all(UsageError, f"--os {info.short_id}", refused)
    if changes:
        ctx.settings = replace(s, **changes, sources=sources)


def _virtio_win(info) -> str:
    return ("; its drivers are on the virtio-win ISO (https://fedorapeople.org/groups/virt/virtio-win/): "
            "attach it as a second CD-ROM") if info.is_windows else ""


def _requires(info, arch: str) -> tuple[str, ...]:
    out = set(REQUIRES.get(info.id, ()))
    if info.firmware_features(arch).get("secure-boot"):
        out.add("secure-boot")
    return tuple(sorted(out))


def apply(domain, ctx) -> None:
    info = os_info(ctx)
    arch = ctx.settings.arch or ctx.host.arch
    meta = domain.ensure("metadata").child("libosinfo:libosinfo").namespace("libosinfo", LIBOSINFO_NS)
    meta.child("libosinfo:os", id=info.id)
    needs = _requires(info, arch)
    if "secure-boot" in needs and not ctx.has("secure-boot"):
        fw = domain.ensure("os/firmware")
        fw.child("feature", name="secure-boot").set(enabled="yes")
        fw.child("feature", name="enrolled-keys").set(enabled="yes")
        domain.ensure("os").set(firmware="efi")
        if arch in X86:
            domain.ensure("features/smm").set(state="on")
        ctx.note(f"os-profile: UEFI Secure Boot with enrolled keys: {info.name} requires it")
    if "tpm-2.0" in needs and not ctx.has("tpm"):
        model = "tpm-crb" if arch in X86 else "tpm-tis"
        domain.ensure("devices").child("tpm").set(model=model).ensure("backend").set(type="emulator", version="2.0")
        ctx.note(f"os-profile: an emulated TPM 2.0: {info.name} requires one")
    if info.is_windows and arch in X86:
        if (ctx.settings.virt_type or ctx.host.domain_type) != "kvm":
            ctx.note("os-profile: no Hyper-V enlightenments for Windows: they need KVM")
            return
        hyperv = domain.ensure("features/hyperv").set(mode="custom")
        for name in HYPERV:
            hyperv.ensure(name).set(state="on")
        hyperv.ensure("spinlocks").set(retries=8191)
        clock = domain.ensure("clock").set(offset="utc")
        clock.child("timer", name="hypervclock").set(present="yes")
        # virt-install gives Windows offset='localtime'; vscen's clock is UTC for every guest
        ctx.note(f"os-profile: the guest's RTC runs in UTC, while {info.name} reads it as local time by "
                 "default: set RealTimeIsUniversal=1 in the guest's registry, or --set ./clock/@offset=localtime")


def finish(domain, ctx) -> None:
    """A virtio GPU the OS has no driver for (Windows) becomes a VGA card."""
    info = os_info(ctx)
    devices = domain.find("devices")
    if devices is None or info.supports(*VIRTIO_GPU):
        return
    for video in devices.findall("video"):
        model = video.find("model")
        if model is None or model.get("type") != "virtio":
            continue
        heads, primary = model.get("heads"), model.get("primary")
        model.remove()
        video.add("model", type="vga", heads=heads, primary=primary)
        ctx.note(f"os-profile: video vga instead of virtio: {info.name} has no virtio-gpu driver of its own")


OS_PROFILE = Feature(
    name="os-profile",
    summary="fit the guest to its OS (--os) from the osinfo database",
    category="os",
    prepare=prepare,
    apply=apply,
    finish=finish,
    details="From the osinfo database (osinfo-db): memory, vCPUs and first-disk size below the "
            "OS's minimum refused when the user set them, raised to its recommended values (with a "
            "note) when a scenario or default did; sata disks, an e1000e NIC and a vga card where "
            "the OS has no virtio block, net or gpu driver (a note names the virtio-win ISO for "
            "Windows); <os firmware='efi'> where it supports no BIOS; for Windows 11 Secure Boot "
            "(smm) and a TPM 2.0 where the scenario has none; for Windows on KVM <hyperv "
            "mode='custom'> relaxed, vapic, spinlocks (8191), vpindex, synic, stimer, frequencies "
            "and <timer name='hypervclock'/>; <metadata><libosinfo:libosinfo><libosinfo:os id=OS-ID/>.",
)


def detect_os(settings, note):
    """The OS of the --cdrom ISO or of a disk's image, where --os is not given (``media.py``)."""
    if not settings.cdrom and not any(d.backing or d.path for d in settings.disks) and not settings.get("image"):
        return None  # nothing to look at: the media module is not even imported
    from vscen_os import media

    return media.detect(settings, note)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_settings(register):
    register(Setting(name="os", parse=parse_os, example="win11", metavar="SHORTID", implies=("os-profile",),
                     derive=detect_os,
                     help="The guest's operating system, by osinfo short-id (win11, debian11: 'vscen list os'): "
                          "its minimum resources, drivers and firmware. Without it, detected from the --cdrom "
                          "ISO's volume id or a disk image's file name, as osinfo's media rules say."))
    register(Setting(name="unattend", parse=_parse_unattend, example="admin-password-file=/root/win-admin.txt",
                     metavar="KEY=VALUE,...", implies=("windows-unattend",),
                     spec={"admin-password-file": "path", "product-key": (), "language": ()},
                     help="Install Windows unattended: admin-password-file=FILE (the Administrator's password, "
                          "written only into the guest's autounattend.xml ISO), optionally product-key=KEY and "
                          "language=en-US."))


def _parse_unattend(text):
    from vscen_os import unattend

    return unattend.parse(text)


def _unattend_finish(domain, ctx):
    from vscen_os import unattend

    unattend.finish(domain, ctx)


def _unattend_plan(ctx):
    from vscen_os import unattend

    return unattend.plan(ctx)


def _unattend_undo(connection, record):
    from vscen_os import unattend

    unattend.undo(connection, record)


WINDOWS_UNATTEND = Feature(
    name="windows-unattend",
    summary="Windows installed unattended (--unattend) from an autounattend.xml ISO",
    category="os",
    finish=_unattend_finish,
    host_actions=("unattend-media",),
    details="For a Windows --os: autounattend.xml and windows.cmd made by the osinfo database's own "
            "install scripts (the XSLT templates virt-install runs through libosinfo), with the "
            "Administrator's password from admin-password-file=FILE, on a small Joliet ISO "
            "/var/lib/libvirt/images/NAME-unattend.iso (mode 600, host action unattend-media, removed by "
            "vscen destroy), attached as the next SATA CD-ROM (E:, after the install ISO).",
)


@hookimpl
def vscen_register_features(register):
    register(OS_PROFILE)
    register(WINDOWS_UNATTEND)


@hookimpl
def vscen_register_host_actions(register):
    register(HostAction(name="unattend-media", summary="the unattended-installation ISO of a Windows guest",
                        plan=_unattend_plan, undo=_unattend_undo))


@hookimpl
def vscen_register_commands(register):
    register(Command(name="os", summary="What the osinfo database knows of operating systems (--os).",
                     app="vscen_os.cli:app", listing="list"))
