"""Facts only this machine can tell: what the kernel, sysfs and the file system say.

libvirt reports what QEMU offers; whether ``/dev/kvm`` can be opened, which KVM modules are
loaded, whether transparent huge pages are on or which firmware descriptors QEMU ships are
read here, and only for a local connection; so are what a real-time guest needs from the
kernel (isolated and tickless CPUs, a PREEMPT_RT kernel, tuned's profile) and the mounted file
systems (is a disk on shared storage?). Every path is taken relative to ``SYSFS_ROOT``
(``/``), so the tests point it at a fake tree. :func:`to_xml` and :func:`from_xml` carry the
facts in a ``<local>`` element of a ``<hostFacts>`` snapshot.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vscen.cpulist import format_cpulist, parse_cpulist

#: the root every path below is read from (tests point it at a fake tree)
SYSFS_ROOT = Path("/")

KVM_MODULES = ("kvm", "kvm_amd", "kvm_intel")
#: where distributions install the programs libvirt needs (virtiofsd lives outside PATH)
PROGRAMS = {
    "swtpm": ("usr/bin/swtpm", "usr/local/bin/swtpm"),
    "virtiofsd": ("usr/libexec/virtiofsd", "usr/lib/qemu/virtiofsd", "usr/bin/virtiofsd",
                  "usr/local/bin/virtiofsd"),
}
#: lowest precedence first: a file in /etc/qemu/firmware hides one of the same name in /usr/share
FIRMWARE_DIRS = ("usr/share/qemu/firmware", "etc/qemu/firmware")
#: kernel-internal file systems no disk lives on: left out of the recorded mounts
PSEUDO_FS = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "pstore", "rpc_pipefs",
    "securityfs", "selinuxfs", "sysfs", "tracefs",
})


@dataclass(frozen=True)
class Mount:
    """A mounted file system (``/proc/mounts``): where, and of which type."""

    path: str
    fstype: str


@dataclass(frozen=True)
class NodePages:
    """Huge pages of one size on one NUMA node (sysfs)."""

    node: int
    size_kib: int
    total: int
    free: int


@dataclass(frozen=True)
class FirmwareDescriptor:
    """One QEMU firmware descriptor (``/usr/share/qemu/firmware/*.json``)."""

    file: str
    executable: str = ""
    nvram_template: str = ""
    description: str = ""
    device: str = ""
    interfaces: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    machines: tuple[str, ...] = ()
    #: secure-boot, enrolled-keys, requires-smm, amd-sev, amd-sev-es, amd-sev-snp,
    #: intel-tdx, acpi-s3, acpi-s4, verbose-dynamic...
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalFacts:
    """What this machine says of itself beyond libvirt: /dev/kvm, modules, programs."""

    #: /dev/kvm exists
    kvm_device: bool = False
    #: /dev/kvm opens for reading and writing (as this user)
    kvm_usable: bool = False
    #: the KVM modules loaded (kvm, kvm_amd, kvm_intel)
    modules: tuple[str, ...] = ()
    #: entries in /sys/kernel/iommu_groups (0: no IOMMU enabled)
    iommu_groups: int = 0
    #: the bracketed values of /sys/kernel/mm/transparent_hugepage/{enabled,defrag}
    thp_enabled: str = ""
    thp_defrag: str = ""
    #: /sys/kernel/mm/ksm/run: 0 stopped, 1 running, 2 unmerging; None if there is no KSM
    ksm_run: int | None = None
    hugepages: tuple[NodePages, ...] = ()
    swtpm: str = ""
    virtiofsd: str = ""
    cmdline: str = ""
    firmware: tuple[FirmwareDescriptor, ...] = ()
    #: CPUs kept from the scheduler's load balancing (isolcpus=): /sys/devices/system/cpu/isolated
    isolated_cpus: tuple[int, ...] = ()
    #: CPUs without the periodic tick (nohz_full=): /sys/devices/system/cpu/nohz_full
    nohz_full_cpus: tuple[int, ...] = ()
    #: a PREEMPT_RT kernel: /sys/kernel/realtime reads 1
    realtime_kernel: bool = False
    #: tuned's active profile (/etc/tuned/active_profile); "" where tuned is not set up
    tuned_profile: str = ""
    #: mounted file systems (/proc/mounts, kernel-internal ones left out), in mount order
    mounts: tuple[Mount, ...] = ()

    def cmdline_has(self, option: str) -> bool:
        """Whether the kernel command line holds *option* ("mem_encrypt=on", "iommu=pt")."""
        return option in self.cmdline.split()

    def mount_of(self, path: str) -> Mount | None:
        """The mount holding *path* (the longest mount point above it; the last one mounted
        there wins), or None where no mount is known."""
        import posixpath

        path = posixpath.normpath("/" + path.lstrip("/"))
        best = None
        for m in self.mounts:
            top = m.path.rstrip("/") or "/"
            if path == top or path.startswith(top if top.endswith("/") else top + "/"):
                if best is None or len(top) >= len(best.path.rstrip("/") or "/"):
                    best = m
        return best

    @property
    def ksm(self) -> str:
        return {None: "unavailable", 0: "stopped", 1: "running", 2: "unmerging"}.get(
            self.ksm_run, f"run={self.ksm_run}")


# -- reading ----------------------------------------------------------------------------------


def _path(rel: str) -> Path:
    return SYSFS_ROOT / rel.lstrip("/")


def host_path(path: str) -> Path:
    """*path* ("/dev/sev", "/sys/module/kvm_amd/parameters/sev") on this machine, for a fact
    provider reading the local host (``probe.local``): under the root that tests point at a
    fake tree (public as ``vscen.host_path``)."""
    return _path(path)


def _text(where: str | Path) -> str | None:
    path = where if isinstance(where, Path) else _path(where)
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(where: str | Path) -> int | None:
    text = _text(where)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts() -> tuple[Mount, ...]:
    out = []
    for line in (_text("proc/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] not in PSEUDO_FS:
            out.append(Mount(_unescape(fields[1]), fields[2]))
    return tuple(out)


def bracketed(text: str | None) -> str:
    """``always [madvise] never`` -> ``madvise``."""
    if not text:
        return ""
    found = re.search(r"\[([^\]]+)\]", text)
    return found.group(1) if found else text.strip()


def _usable(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _program(name: str) -> str:
    if SYSFS_ROOT == Path("/"):
        import shutil

        found = shutil.which(name)
        if found:
            return found
    for rel in PROGRAMS[name]:
        path = _path(rel)
        if path.is_file() and os.access(path, os.X_OK):
            return str(Path("/") / rel)
    return ""


def _hugepages() -> tuple[NodePages, ...]:
    out = []
    for node_dir in _path("sys/devices/system/node").glob("node[0-9]*"):
        if not node_dir.name[4:].isdigit():
            continue
        node = int(node_dir.name[4:])
        for size_dir in (node_dir / "hugepages").glob("hugepages-*kB"):
            size = int(size_dir.name[len("hugepages-"):-2])
            total, free = _int(size_dir / "nr_hugepages"), _int(size_dir / "free_hugepages")
            out.append(NodePages(node, size, total or 0, free or 0))
    return tuple(sorted(out, key=lambda p: (p.node, p.size_kib)))


def _firmware() -> tuple[FirmwareDescriptor, ...]:
    import json

    files: dict[str, Path] = {}
    for rel in FIRMWARE_DIRS:
        for path in sorted(_path(rel).glob("*.json")):
            files[path.name] = path
    out = []
    for name in sorted(files):
        path = files[name]
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # unreadable, or empty: an empty file masks the descriptor of that name
        if not isinstance(data, dict):
            continue
        mapping = data.get("mapping") or {}
        executable = (mapping.get("executable") or {}).get("filename") or mapping.get("filename", "")
        targets = [t for t in data.get("targets") or () if isinstance(t, dict)]
        out.append(FirmwareDescriptor(
            file=str(Path("/") / path.relative_to(SYSFS_ROOT)),
            executable=executable or "",
            nvram_template=(mapping.get("nvram-template") or {}).get("filename", ""),
            description=data.get("description", ""),
            device=mapping.get("device", ""),
            interfaces=tuple(data.get("interface-types") or ()),
            architectures=tuple(dict.fromkeys(t.get("architecture", "") for t in targets)),
            machines=tuple(dict.fromkeys(m for t in targets for m in t.get("machines") or ())),
            features=tuple(data.get("features") or ()),
        ))
    return tuple(out)


def read() -> LocalFacts:
    """The local facts of this machine (of the tree under ``SYSFS_ROOT``)."""
    groups = _path("sys/kernel/iommu_groups")
    kvm = _path("dev/kvm")
    return LocalFacts(
        kvm_device=kvm.exists(),
        kvm_usable=kvm.exists() and _usable(kvm),
        modules=tuple(m for m in KVM_MODULES if _path(f"sys/module/{m}").is_dir()),
        iommu_groups=len(list(groups.iterdir())) if groups.is_dir() else 0,
        thp_enabled=bracketed(_text("sys/kernel/mm/transparent_hugepage/enabled")),
        thp_defrag=bracketed(_text("sys/kernel/mm/transparent_hugepage/defrag")),
        ksm_run=_int("sys/kernel/mm/ksm/run"),
        hugepages=_hugepages(),
        swtpm=_program("swtpm"),
        virtiofsd=_program("virtiofsd"),
        cmdline=_text("proc/cmdline") or "",
        firmware=_firmware(),
        isolated_cpus=parse_cpulist(_text("sys/devices/system/cpu/isolated")),
        nohz_full_cpus=parse_cpulist(_text("sys/devices/system/cpu/nohz_full")),
        realtime_kernel=_int("sys/kernel/realtime") == 1,
        tuned_profile=_text("etc/tuned/active_profile") or "",
        mounts=_mounts(),
    )


# -- the <local> element of a snapshot --------------------------------------------------------


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def to_xml(facts: LocalFacts):
    """The ``<local>`` element of a ``<hostFacts>`` snapshot (an lxml element)."""
    from lxml import etree

    root = etree.Element("local")
    etree.SubElement(root, "kvm", device=_yes(facts.kvm_device), usable=_yes(facts.kvm_usable))
    for module in facts.modules:
        etree.SubElement(root, "module", name=module)
    etree.SubElement(root, "iommuGroups", count=str(facts.iommu_groups))
    etree.SubElement(root, "transparentHugepages", enabled=facts.thp_enabled, defrag=facts.thp_defrag)
    if facts.ksm_run is not None:
        etree.SubElement(root, "ksm", run=str(facts.ksm_run))
    for p in facts.hugepages:
        etree.SubElement(root, "hugepages", node=str(p.node), size=str(p.size_kib), unit="KiB",
                         total=str(p.total), free=str(p.free))
    for name in ("swtpm", "virtiofsd"):
        if getattr(facts, name):
            etree.SubElement(root, "program", name=name, path=getattr(facts, name))
    etree.SubElement(root, "cmdline").text = facts.cmdline
    etree.SubElement(root, "isolatedCpus").text = format_cpulist(facts.isolated_cpus)
    etree.SubElement(root, "nohzFull").text = format_cpulist(facts.nohz_full_cpus)
    etree.SubElement(root, "realtime", kernel=_yes(facts.realtime_kernel))
    if facts.tuned_profile:
        etree.SubElement(root, "tuned", profile=facts.tuned_profile)
    for m in facts.mounts:
        etree.SubElement(root, "mount", path=m.path, type=m.fstype)
    for fw in facts.firmware:
        el = etree.SubElement(root, "firmware", file=fw.file)
        for tag, value in (("description", fw.description), ("executable", fw.executable),
                           ("nvramTemplate", fw.nvram_template), ("device", fw.device)):
            if value:
                etree.SubElement(el, tag).text = value
        for tag, values in (("interface", fw.interfaces), ("architecture", fw.architectures),
                            ("machine", fw.machines), ("feature", fw.features)):
            for value in values:
                etree.SubElement(el, tag).text = value
    return root


def from_xml(el) -> LocalFacts:
    """:class:`LocalFacts` from a ``<local>`` element (what :func:`to_xml` writes)."""
    def num(value, default=0):
        try:
            return int(value)
        except (TypeError, ValueError):
            return default

    kvm = el.find("kvm")
    thp = el.find("transparentHugepages")
    ksm = el.find("ksm")
    programs = {p.get("name"): p.get("path", "") for p in el.iterfind("program")}
    firmware = []
    for fw in el.iterfind("firmware"):
        firmware.append(FirmwareDescriptor(
            file=fw.get("file", ""), executable=fw.findtext("executable", ""),
            nvram_template=fw.findtext("nvramTemplate", ""),
            description=fw.findtext("description", ""), device=fw.findtext("device", ""),
            interfaces=tuple(e.text or "" for e in fw.iterfind("interface")),
            architectures=tuple(e.text or "" for e in fw.iterfind("architecture")),
            machines=tuple(e.text or "" for e in fw.iterfind("machine")),
            features=tuple(e.text or "" for e in fw.iterfind("feature")),
        ))
    return LocalFacts(
        kvm_device=kvm is not None and kvm.get("device") == "yes",
        kvm_usable=kvm is not None and kvm.get("usable") == "yes",
        modules=tuple(m.get("name", "") for m in el.iterfind("module")),
        iommu_groups=num(el.find("iommuGroups").get("count")) if el.find("iommuGroups") is not None else 0,
        thp_enabled=thp.get("enabled", "") if thp is not None else "",
        thp_defrag=thp.get("defrag", "") if thp is not None else "",
        ksm_run=num(ksm.get("run"), None) if ksm is not None else None,
        hugepages=tuple(NodePages(num(p.get("node")), num(p.get("size")), num(p.get("total")),
                                  num(p.get("free"))) for p in el.iterfind("hugepages")),
        swtpm=programs.get("swtpm", ""),
        virtiofsd=programs.get("virtiofsd", ""),
        cmdline=el.findtext("cmdline") or "",
        firmware=tuple(firmware),
        isolated_cpus=parse_cpulist(el.findtext("isolatedCpus")),
        nohz_full_cpus=parse_cpulist(el.findtext("nohzFull")),
        realtime_kernel=el.find("realtime[@kernel='yes']") is not None,
        tuned_profile=el.find("tuned").get("profile", "") if el.find("tuned") is not None else "",
        mounts=tuple(Mount(m.get("path", ""), m.get("type", "")) for m in el.iterfind("mount")),
    )
