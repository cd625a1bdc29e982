"""The ``storage-volume`` action: a volume for each new disk, with the qcow2 options, the
preallocation and the backing asked for, in the pool chosen for it; and taking one back."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vscen import ExistsError, HostError, LibvirtError, Step, UsageError, VscenError, on_this_machine, secret_uuid
from vscen_volumes.images import (
    ENCRYPTION,
    VOLUME,
    Planner,
    check_existing,
    existing_image,
    human,
    libvirt_error,
    parse_volume,
    require_connection,
    round_size,
)
from vscen_volumes.pools import Pool, choose_pool, free_bytes, holding_pool, list_pools, lookup_pool, pool_step


@dataclass
class VolumeSpec:
    """A volume to create: its pool, name, path and XML."""

    path: str
    name: str
    pool: Pool
    xml: str
    flags: int
    capacity: int
    need: int
    disk: object
    description: str


def volume_spec(pl: Planner, disk, path: str, pool: Pool, size: int) -> VolumeSpec:
    """The volume XML and flags for a new disk (its capacity at least *size*)."""
    import libvirt
    from lxml import etree

    ctx = pl.ctx
    name = os.path.basename(path)
    qcow2 = disk.format == "qcow2"
    capacity, base = size, None
    words = [disk.format, None]
    if disk.backing:
        if disk.backing == path:
            raise UsageError(f"disk.backing: {path} cannot be its own base")
        if disk.preallocation != "off":
            raise UsageError(f"disk {path}: preallocation={disk.preallocation} cannot be combined with "
                             "backing= (QEMU refuses to preallocate an overlay); leave out one of them")
        base = existing_image(pl, disk.backing)
        if base is None:
            where = "does not exist" if pl.local else f"is in no storage pool on {pl.uri}, so vscen cannot check it"
            raise UsageError(f"disk.backing: {disk.backing} {where}; give an existing base image")
        if base.capacity > capacity:
            ctx.note(f"disk {path}: an overlay cannot be smaller than its base {disk.backing} "
                     f"({human(base.capacity)}): made {human(base.capacity)}, not {human(size)}")
            capacity = base.capacity
        words.append(f"overlay on {disk.backing} ({base.format})")
    words[1] = human(capacity)
    allocation, flags, need = 0, 0, 0
    if disk.preallocation == "metadata":
        if qcow2:
            flags |= libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA
            words.append("metadata preallocated")
        else:
            ctx.note(f"disk {path}: preallocation=metadata does nothing for raw (no metadata): sparse")
    elif disk.preallocation in ("falloc", "full"):
        allocation = need = capacity
        if qcow2:  # allocation = capacity with this flag: qemu-img preallocation=falloc
            flags |= libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA
        words.append("fully preallocated")
        if disk.preallocation == "full":
            ctx.note(f"disk {path}: preallocation=full: libvirt reserves the space with fallocate "
                     "(as falloc); it does not write zeros")
    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    # libvirt takes a missing allocation as "all of it": say 0 for a sparse volume
    etree.SubElement(root, "allocation", unit="bytes").text = str(allocation)
    target = etree.SubElement(root, "target")
    etree.SubElement(target, "format", type=disk.format)
    if qcow2:
        etree.SubElement(target, "compat").text = "1.1"
        if disk.cluster_size:
            cs = disk.cluster_size
            if cs < 512 or cs > 2 * 1024**2 or cs & (cs - 1):
                raise UsageError(f"disk.cluster_size: {human(cs)} is not a power of two from 512B to 2MiB")
            etree.SubElement(target, "clusterSize", unit="B").text = str(cs)
            words.append(f"clusters of {human(cs)}")
        if disk.lazy_refcounts:
            etree.SubElement(etree.SubElement(target, "features"), "lazy_refcounts")
            words.append("lazy refcounts")
        if disk.encrypt:
            enc = etree.SubElement(target, "encryption", format="luks")
            etree.SubElement(enc, "secret", type="passphrase", uuid=secret_uuid(path))
            words.append(f"LUKS-encrypted with secret {secret_uuid(path)}")
    elif disk.cluster_size or disk.lazy_refcounts:
        ctx.note(f"disk {path}: cluster_size and lazy_refcounts are qcow2 settings: not used for raw")
    if base is not None:
        bs = etree.SubElement(root, "backingStore")
        etree.SubElement(bs, "path").text = disk.backing
        etree.SubElement(bs, "format", type=base.format)

    available = free_bytes(pl, pool)
    claimed = pl.claimed.get(pool.name, 0) + need
    if need and available is not None and claimed > available:
        where = f"{pool.target} (no pool yet)" if pool.new else f"pool '{pool.name}'"
        raise HostError(f"disk {path}: {human(claimed)} preallocated does not fit in {where} "
                        f"({human(available)} free): out of disk space; free some space, give a smaller "
                        "size=, or preallocation=off")
    pl.claimed[pool.name] = claimed
    if not need and available is not None and capacity > available:
        ctx.note(f"disk {path}: {human(capacity)} (sparse) in pool '{pool.name}' with {human(available)} "
                 "free: the guest can fill the host's disk")
    desc = f"create volume {name} in pool '{pool.name}': " + ", ".join(w for w in words if w)
    return VolumeSpec(path, name, pool, etree.tostring(root, encoding="unicode"), flags, capacity,
                      need, disk, desc)


def volume_step(pl: Planner, spec: VolumeSpec) -> Step:
    connection = pl.ctx.connection
    ctx = pl.ctx

    def do():
        import libvirt

        conn = connection.conn
        pool = lookup_pool(conn, spec.pool.name)
        if pool is None or not pool.isActive():  # another pool came to hold the directory meanwhile?
            held = holding_pool(conn, os.path.dirname(spec.path))
            pool = held.obj if held is not None else None
        if pool is None:
            raise LibvirtError(f"volume {spec.path}: pool '{spec.pool.name}' is not there or not active")
        try:
            pool.refresh(0)
        except libvirt.libvirtError:
            pass
        try:  # made meanwhile (or, remotely, unknown at plan time)?
            img = parse_volume(pool.storageVolLookupByName(spec.name).XMLDesc(0), f"volume of pool '{spec.pool.name}'")
        except libvirt.libvirtError:
            img = None
        if img is not None:
            late = Planner(ctx)
            if check_existing(late, spec.disk, spec.path, img, spec.capacity):
                return None
            raise ExistsError(late.problems[0], late.problems)
        if spec.need and int(pool.info()[3]) < spec.need:
            raise HostError(f"disk {spec.path}: {human(spec.need)} preallocated does not fit in pool "
                            f"'{spec.pool.name}' ({human(int(pool.info()[3]))} free): out of disk space")
        vol = _create_volume(pool, spec)
        return {"kind": "volume", "pool": spec.pool.name, "name": spec.name, "path": vol.path(),
                "storage": True}

    return Step(spec.description, do)


#: QEMU up to 8.0 times the LUKS key derivation with the thread's CPU time; where that clock is
#: coarse, its first short measurement reads 0 ms and qemu-img gives up with this message
#: (at random: a new attempt usually succeeds)
_LUKS_TIMING = "Unable to get accurate CPU usage"


def _create_volume(pool, spec: VolumeSpec):
    import libvirt

    attempts = 10 if spec.disk.encrypt else 1
    for attempt in range(1, attempts + 1):
        try:
            return pool.createXML(spec.xml, spec.flags)
        except libvirt.libvirtError as exc:
            message = exc.get_error_message() or ""
            if _LUKS_TIMING not in message or attempt == attempts:
                raise libvirt_error(f"volume {spec.path}: libvirt could not create it", exc) from None
            try:  # libvirt removes what a failed build left; make sure before trying again
                pool.refresh(0)
                pool.storageVolLookupByName(spec.name).delete(0)
            except libvirt.libvirtError:
                pass
    raise AssertionError("unreachable")


def new_disks(pl: Planner, encrypted: bool):
    """(index, disk, path, size) of the disks this action looks after that do not exist yet;
    existing ones are checked (problems or "unchanged" notes)."""
    s = pl.ctx.settings
    seen: dict[str, int] = {}
    for i, disk in enumerate(s.disks):
        path = s.disk_path(i)
        if path in seen:
            raise UsageError(f"disk: {path} is given for disk {seen[path] + 1} and disk {i + 1}; "
                             "give each disk its own path")
        seen[path] = i
        if bool(disk.encrypt) != encrypted:
            continue
        size = round_size(disk.size)
        img = existing_image(pl, path)
        if img is not None:
            check_existing(pl, disk, path, img, size)
            continue
        yield i, disk, path, size


def plan_volumes(ctx) -> list[Step]:
    if not ctx.settings.disks:
        return []
    require_connection(ctx, VOLUME)
    pl = Planner(ctx, pools=list_pools(ctx.connection.conn))
    steps: list[Step] = []
    specs = []
    for _i, disk, path, size in list(new_disks(pl, encrypted=False)):
        specs.append(volume_spec(pl, disk, path, choose_pool(pl, path), size))
    if any(d.encrypt for d in ctx.settings.disks) and ENCRYPTION in ctx.resolution.host_actions():
        # one pool step for both actions: the encrypted disks' pools are planned here too
        enc = Planner(ctx, pools=pl.pools, new_pools=pl.new_pools)
        for _i, _disk, path, _size in list(new_disks(enc, encrypted=True)):
            choose_pool(enc, path)
    elif any(d.encrypt for d in ctx.settings.disks):
        raise UsageError(f"disk.encrypt: no chosen feature names the host action '{ENCRYPTION}', "
                         "so nothing would create the encrypted disks")
    if pl.problems:
        raise ExistsError("; ".join(pl.problems), pl.problems)
    steps.extend(pool_step(pl, p) for p in pl.new_pools.values())
    steps.extend(volume_step(pl, spec) for spec in specs)
    return steps


def undo_volume(connection, record: dict) -> None:
    """Delete the volume vscen made: found in its pool by name, and only while it is still at
    the path vscen recorded (a volume of that name elsewhere is not the same one)."""
    import libvirt

    from vscen import check_record, safe_path

    check_record(record, {"pool": str, "name": str, "path": str}, "volume")
    path = str(safe_path(record["path"], ["/"], f"volume {record['name']}"))
    if os.path.basename(path) != record["name"]:
        raise UsageError(f"volume {path}: the journal names it '{record['name']}', not its file's name; not touched")
    conn = connection.conn
    pool = lookup_pool(conn, record["pool"])
    vol = None
    if pool is not None:
        if not pool.isActive():
            raise VscenError(f"volume {record['path']}: its pool '{record['pool']}' is not active; start it "
                             f"(virsh pool-start {record['pool']}) and try again")
        try:
            pool.refresh(0)
        except libvirt.libvirtError:
            pass
        try:
            vol = pool.storageVolLookupByName(record["name"])
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
    else:
        try:
            vol = conn.storageVolLookupByPath(record["path"])
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
    if vol is not None and vol.path() != path:
        raise VscenError(f"volume {record['name']} of pool '{record['pool']}' is at {vol.path()}, not at "
                         f"{path} where vscen made it; not touched")
    if vol is None:
        if on_this_machine(connection) and os.path.exists(record["path"]):
            raise VscenError(f"volume {record['path']}: the file is still there but no active pool holds "
                             "it; remove it yourself if it is no longer wanted")
        return
    vol.delete(0)
