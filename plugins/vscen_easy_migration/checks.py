"""easy-migration's checks: the peers are readable and alike (host), and the domain holds
nothing that ties it to one host (domain)."""

from __future__ import annotations

from vscen import Check
from vscen_easy_migration.cpu import NoCommonCpu, choose_cpu, describe, hosts_of, peers_of

#: file systems every host can mount at the same path (/proc/mounts types)
SHARED_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "ceph", "fuse.ceph-fuse", "glusterfs", "fuse.glusterfs",
    "gpfs", "lustre", "beegfs", "9p", "virtiofs", "ocfs2", "gfs2",
})
#: disk caches libvirt live-migrates without --unsafe
SAFE_CACHES = ("none", "directsync")


def check_live_migration(ctx):
    host, peers = ctx.host, peers_of(ctx)
    checks = []
    arch = ctx.settings.arch or host.arch
    domain_type = ctx.settings.virt_type or host.domain_type
    if not peers:
        checks.append(Check("warn", "no --peer given: the guest can move only to hosts like this one",
                            fix="name every other host: --peer qemu+ssh://HOST/system, or --peer "
                                "FILE with its recorded facts (vscen host snapshot)"))
    for peer in peers:
        if peer.arch != arch:
            checks.append(Check("fail", f"peer {peer.source} is {peer.arch}, the guest {arch}",
                                fix="a guest migrates only between hosts of its arch"))
        elif not peer.has_domcaps:
            checks.append(Check("fail", f"peer {peer.source}: no domain capabilities, so its CPU "
                                        "models are unknown",
                                fix="record them there: virsh domcapabilities > domcaps.xml, or "
                                    "vscen host snapshot"))
        elif peer.domain_type != domain_type:
            checks.append(Check("fail", f"peer {peer.source} offers {peer.domain_type} guests, this "
                                        f"one is {domain_type}",
                                fix="give --virt-type qemu for TCG on every host, or enable KVM on "
                                    "the peer"))
    if ctx.settings.get("hostdev", ()):
        checks.append(Check("fail", f"--hostdev {', '.join(ctx.settings.get('hostdev', ()))}: an assigned "
                                    "host device ties the guest to this host (libvirt refuses to "
                                    "migrate it)",
                            fix="drop --hostdev; give the guest a virtio device instead"))
    if any(c.status == "fail" for c in checks):
        return checks
    try:
        choice = choose_cpu(ctx)
    except NoCommonCpu as exc:
        return checks + [Check("fail", f"no common CPU model: {exc}",
                               fix="leave out the host that has nothing in common with the others")]
    where = ", ".join(h.source for h in hosts_of(ctx))
    return checks + [Check("pass", f"CPU {describe(choice)} runs on {where}")]


def _path(el) -> str:
    return el.getroottree().getpath(el)


def _disks(root):
    return [d for d in root.iterfind("devices/disk") if d.get("device", "disk") == "disk"]


def check_migration_safe(ctx):
    root, checks = ctx.xml, []
    cpu = root.find("cpu")
    mode = cpu.get("mode", "custom") if cpu is not None else "none"
    if mode in ("host-passthrough", "maximum", "host-model") or cpu is None or cpu.find("model") is None:
        checks.append(Check("fail", f"the CPU is {mode}, not a named model: it may not exist on "
                                    "the other hosts", fix="keep the cpu-baseline CPU",
                            element=_path(cpu if cpu is not None else root)))
    for el in root.iterfind("devices/hostdev"):
        checks.append(Check("fail", "an assigned host device ties the guest to this host",
                            fix="drop it (host-hardware, --hostdev)", element=_path(el)))
    for el in root.iterfind("devices/filesystem"):
        checks.append(Check("fail", "a shared host directory ties the guest to this host",
                            fix="drop host-filesystem; share over the network (NFS) instead",
                            element=_path(el)))
    for disk in _disks(root):
        driver = disk.find("driver")
        cache = driver.get("cache", "default") if driver is not None else "default"
        if cache not in SAFE_CACHES:
            checks.append(Check("fail", f"disk cache '{cache}': libvirt refuses to live-migrate a "
                                        "disk the host caches (writes in the source's page cache "
                                        "would be lost)",
                                fix="--disk cache=none", element=_path(driver if driver is not None else disk)))
    return checks or [Check("pass", f"{cpu.findtext('model')} CPU, no host devices, uncached disks")]


def check_shared_storage(ctx):
    local = ctx.host.local
    checks = []
    for disk in _disks(ctx.xml):
        source = disk.find("source")
        where = _path(disk)
        if disk.get("type") == "network":
            what = source.get("protocol", "network") if source is not None else "network"
            checks.append(Check("pass", f"{what} disk: every host reaches it", element=where))
            continue
        path = (source.get("file") or source.get("dev") or "") if source is not None else ""
        mount = local.mount_of(path) if local is not None and local.mounts else None
        if mount is None:
            checks.append(Check("warn", f"{path or 'a disk'}: cannot tell whether it is on shared "
                                        "storage (the host's mounts are not known here)",
                                fix="keep it on storage every host mounts at the same path (NFS, "
                                    "Ceph, GlusterFS...) or use a network disk; else migrate with "
                                    "virsh migrate --copy-storage-all", element=where))
        elif mount.fstype in SHARED_FS:
            checks.append(Check("pass", f"{path} is on {mount.fstype} ({mount.path})", element=where))
        else:
            checks.append(Check("warn", f"{path} is on a local file system ({mount.fstype} at "
                                        f"{mount.path}): the other hosts do not see it",
                                fix="put it on storage every host mounts at the same path (NFS, "
                                    "Ceph, GlusterFS...) or use a network disk; else migrate with "
                                    "virsh migrate --copy-storage-all, which copies the whole disk",
                                element=where))
    return checks
