"""Host actions for the guest's disks: storage volumes, and LUKS encryption with a libvirt secret.

Both actions read the host through libvirt's API only (so they plan for remote URIs too);
a local connection additionally looks at files no pool knows (``qemu-img info``).

``storage-volume``
    For every disk of ``settings.disks`` whose file does not exist yet: a volume
    (``basename`` of the disk's path) in a libvirt storage pool. The pool is ``--pool`` when
    given (it must exist, be active, and keep its volumes in the disk's directory: the domain
    XML names the disk by path, so a volume elsewhere would not be the guest's disk), else the
    active pool whose target is the disk's directory; where no pool holds that directory, a
    ``dir`` pool ``vscen-<directory>`` is defined, started and set to autostart (the directory
    is built only when it is missing: building an existing one would change its mode). A pool
    vscen did not create is never started, changed or removed.

    The volume: ``capacity`` = the disk's size; qcow2 with ``compat 1.1``, ``<lazy_refcounts/>``
    and ``<clusterSize>`` when asked; ``preallocation=metadata`` -> libvirt's
    ``PREALLOC_METADATA`` (qcow2; a raw disk has no metadata and stays sparse),
    ``falloc``/``full`` -> ``allocation = capacity`` (libvirt reserves the space with
    ``fallocate`` for both; it writes no zeros). A disk with ``backing`` is a copy-on-write
    qcow2 overlay on that base (its format probed; the base is only read), at least as large
    as the base. A preallocated disk that does not fit in the pool's free space is refused
    before anything is made ("out of disk space").

    An existing disk is used as it is: same format (and backing, and encryption) -> unchanged.
    Another format, or another size when a size was asked for explicitly, is refused, with or
    without ``--force``: vscen never deletes, resizes or converts a disk it finds (it cannot
    give the data back); the message says what to change. Where no size was asked for, the
    default size applies to new disks only and an existing disk keeps its own, with a note.

``disk-encryption``
    For every disk with ``encrypt=yes`` (qcow2): a libvirt secret (usage ``volume`` = the
    disk's path, ``private='yes'``, ``ephemeral='no'``, UUID = ``uuid5(NAMESPACE_URL,
    "vscen:" + path)``, the same UUID the ``storage`` feature writes in the domain XML) whose
    value is the disk passphrase, read inside the step only (from ``--passphrase-file``,
    ``$VSCEN_DISK_PASSPHRASE`` or a prompt),
    never in the plan, and sent to libvirt's secret store only; then the qcow2 volume with
    ``<encryption format='luks'>`` naming it. ``storage-volume`` leaves encrypted disks to this
    action (it still plans their pools, so that one pool step serves both). A secret of
    another UUID for the same path (not vscen's) is refused; vscen's own secret without its
    volume (left by an earlier run) is refused unless ``--force``, which sets its value.

Records: ``{"kind": "pool", "name", "uuid", "path", "built", "dirs", "preexisting",
"storage": true}``, ``{"kind": "volume", "pool", "name", "path", "storage": true}``,
``{"kind": "secret", "uuid", "usage", "storage": true}`` (never the value). Undo: a volume is
deleted (``vol.delete``); a secret undefined; a pool vscen created is stopped and undefined
(files stay; a directory vscen built is removed when empty) unless it holds volumes besides
those that were in it when vscen created it: then it is left in place. Everything already gone
is fine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from vscen import HostAction, Setting, Step, hookimpl
from vscen.errors import ExistsError, HostError, LibvirtError, UsageError, VscenError
from vscen.secrets import secret_uuid

VOLUME = "storage-volume"
ENCRYPTION = "disk-encryption"



def human(size: int) -> str:
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size // factor}{unit}" if size % factor == 0 else f"{size / factor:.1f}{unit}"
    return f"{size}B"


# -- reading the host ---------------------------------------------------------------------------


@dataclass
class Image:
    """An existing disk image: a libvirt volume or (local connections) a file."""

    format: str
    capacity: int
    backing: str | None = None
    encrypted: bool = False
    #: the secret UUID its volume XML names (None when unknown)
    secret: str | None = None
    where: str = "file"


@dataclass
class Pool:
    name: str
    target: str | None
    active: bool
    obj: object = None
    new: bool = False


@dataclass
class Planner:
    """What one action's plan has read and decided so far."""

    ctx: object
    pools: list[Pool] = field(default_factory=list)
    #: directory -> the pool this plan defines for it
    new_pools: dict[str, Pool] = field(default_factory=dict)
    #: pool name -> bytes this plan preallocates in it
    claimed: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def conn(self):
        return self.ctx.connection.conn

    @property
    def uri(self) -> str:
        return self.ctx.connection.uri

    @property
    def local(self) -> bool:
        c = self.ctx.connection
        return bool(c.is_local and not c.is_test)


def _libvirt_error(what: str, exc) -> LibvirtError:
    return LibvirtError(f"{what}: {exc.get_error_message()}")


def _connection(ctx, action: str):
    if ctx.connection is None:
        raise VscenError(f"{action}: no libvirt connection to plan with")
    return ctx.connection


def list_pools(conn) -> list[Pool]:
    import libvirt
    from lxml import etree

    pools = []
    try:
        for p in conn.listAllStoragePools(0):
            target = etree.fromstring(p.XMLDesc(0).encode()).findtext("target/path")
            pools.append(Pool(p.name(), os.path.normpath(target) if target else None, bool(p.isActive()), p))
    except libvirt.libvirtError as exc:
        raise _libvirt_error("storage pools: cannot list them", exc) from None
    return pools


def parse_volume(xml: str, where: str) -> Image:
    from lxml import etree

    root = etree.fromstring(xml.encode())
    fmt = root.find("target/format")
    enc = root.find("target/encryption")
    secret = enc.find("secret") if enc is not None else None
    return Image(format=fmt.get("type") if fmt is not None else "raw",
                 capacity=int(root.findtext("capacity") or 0),
                 backing=root.findtext("backingStore/path") or None,
                 encrypted=enc is not None,
                 secret=secret.get("uuid") if secret is not None else None,
                 where=where)


def qemu_img_info(path: str) -> dict:
    import json
    import subprocess

    try:
        proc = subprocess.run(["qemu-img", "info", "-U", "--output", "json", path],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise HostError(f"disk {path}: qemu-img is not installed, and vscen needs it to inspect "
                        "this existing image (install qemu-utils / qemu-img)") from None
    if proc.returncode != 0:
        raise HostError(f"disk {path}: qemu-img cannot read it ({proc.stderr.strip()})")
    return json.loads(proc.stdout)


def existing_image(pl: Planner, path: str) -> Image | None:
    """The image at *path*: a volume of an active pool, or (local) a file; None if none."""
    import libvirt

    try:
        vol = pl.conn.storageVolLookupByPath(path)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL):
            raise _libvirt_error(f"disk {path}: cannot look it up on {pl.uri}", exc) from None
        vol = None
    if vol is not None:
        try:
            return parse_volume(vol.XMLDesc(0), f"volume of pool '{vol.storagePoolLookupByVolume().name()}'")
        except libvirt.libvirtError:
            pass  # libvirt knew it, but the file is gone since its pool was last refreshed
    if pl.local and os.path.lexists(path):
        if os.path.isdir(path):
            raise UsageError(f"disk.path: {path} is a directory; give the path of an image file")
        info = qemu_img_info(path)
        fmt = info.get("format", "raw")
        return Image(format=fmt, capacity=int(info.get("virtual-size", 0)),
                     backing=info.get("full-backing-filename") or info.get("backing-filename") or None,
                     encrypted=bool(info.get("encrypted")), where="file")
    return None


def _round(size: int) -> int:
    """Sizes as QEMU makes them: whole 512-byte sectors."""
    return -(-size // 512) * 512


def size_asked(ctx, disk) -> bool:
    """Whether the user asked for this disk's size (rather than it being a default)."""
    from vscen.settings import BUILTIN, flatten, parse_size

    s = ctx.settings
    if s.level("disk.size") == "user":
        return True
    default = BUILTIN["disk.size"]
    src = s.source("disk.size")
    reg = getattr(ctx, "registry", None)
    if src.startswith("scenario ") and reg is not None and src[9:] in reg.scenarios:
        default = flatten(dict(reg.scenarios[src[9:]].defaults)).get("disk.size", default)
    # a --disk size=... equal to the default cannot be told apart from it: it counts as not asked
    return disk.size != parse_size("disk.size", default, "g")


def check_existing(pl: Planner, disk, path: str, img: Image, size: int) -> bool:
    """Compare an existing image with the disk asked for: True when it can be used as it is;
    otherwise the differences go to ``pl.problems``."""
    ctx = pl.ctx
    never = "vscen never deletes, resizes or converts a disk it finds, --force included"
    bad = []
    if disk.backing and img.backing == disk.backing:
        base = existing_image(pl, disk.backing)
        if base is not None and base.capacity > size:
            size = base.capacity  # vscen made it as large as its base
    if img.format != disk.format:
        bad.append(f"disk {path} exists ({img.where}) as {img.format}, but the guest would open it "
                   f"as {disk.format}: give --disk path={path},format={img.format}, or another path")
    if img.capacity != size and size_asked(ctx, disk):
        bad.append(f"disk {path} exists ({img.where}) with {human(img.capacity)}, not the "
                   f"{human(size)} asked for: leave out size= to use it as it is, or give another path")
    if disk.backing and img.backing != disk.backing:
        bad.append(f"disk {path} exists ({img.where}) " + (f"as an overlay on {img.backing}" if img.backing else
                   "without a backing file") + f", not on {disk.backing}: give another path")
    if disk.encrypt and not img.encrypted:
        bad.append(f"disk {path} exists ({img.where}) unencrypted, but encrypt=yes: give another path")
    elif img.encrypted and not disk.encrypt:
        bad.append(f"disk {path} exists ({img.where}) encrypted: give encrypt=yes (and its passphrase), "
                   "or another path")
    elif disk.encrypt and img.secret not in (None, secret_uuid(path)):
        bad.append(f"disk {path} exists ({img.where}) encrypted with the libvirt secret {img.secret}, "
                   f"not vscen's {secret_uuid(path)}: give another path")
    if bad:
        pl.problems.extend(f"{b} ({never})" for b in bad)
        return False
    if img.capacity != size:
        ctx.note(f"disk {path} exists with {human(img.capacity)} ({img.format}): used as it is; "
                 f"the default size {human(size)} applies to new disks only")
    else:
        ctx.note(f"disk {path} exists ({img.format}, {human(img.capacity)}): unchanged")
    return True


def pool_name(directory: str, pools: list[Pool]) -> str:
    """``vscen-`` + the directory, sanitised; a hash suffix where that name is taken."""
    import hashlib

    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.strip("/")).strip("-.") or "root"
    name = f"vscen-{base}"
    suffix = hashlib.sha256(directory.encode()).hexdigest()[:8]
    if len(name) > 64:
        name = f"{name[:55]}-{suffix}"
    if any(p.name == name for p in pools):
        name = f"{name[:55]}-{suffix}"
    return name


def free_bytes(pl: Planner, pool: Pool) -> int | None:
    """Free space where the pool's volumes go (None when it cannot be known yet)."""
    import libvirt

    if not pool.new:
        try:
            return int(pool.obj.info()[3])
        except libvirt.libvirtError as exc:
            raise _libvirt_error(f"pool '{pool.name}': cannot read its free space", exc) from None
    if pl.local:
        probe = pool.target
        while probe and not os.path.isdir(probe):
            probe = os.path.dirname(probe)
        st = os.statvfs(probe or "/")
        return st.f_bavail * st.f_frsize
    return None  # a remote directory vscen will make a pool for: checked when the volume is made


def choose_pool(pl: Planner, path: str) -> Pool:
    """The pool the new disk at *path* goes into; a new one (``pool.new``) where none holds
    its directory."""
    import libvirt

    directory = os.path.dirname(path)
    wanted = pl.ctx.settings.pool
    if wanted:
        pool = next((p for p in pl.pools if p.name == wanted), None)
        if pool is None:
            names = ", ".join(sorted(p.name for p in pl.pools)) or "none"
            raise UsageError(f"pool: '{wanted}' does not exist on {pl.uri} (pools there: {names}); "
                             "create it, or leave out --pool to use the pool of the disk's directory")
        if not pool.active:
            raise UsageError(f"pool: '{wanted}' on {pl.uri} is not active; start it (virsh pool-start "
                             f"{wanted}) or leave out --pool")
        if pool.target and pl.local and not os.path.isdir(pool.target):
            raise UsageError(f"pool: '{wanted}' keeps its volumes in {pool.target}, which does not exist; "
                             f"create it (virsh pool-build {wanted}) or choose another pool")
        if pool.target != directory:
            raise UsageError(f"disk {path}: it is not in pool '{wanted}', whose volumes live in "
                             f"{pool.target}; give --disk path={pool.target}/{os.path.basename(path)}, "
                             "or leave out --pool")
        return pool
    if directory in pl.new_pools:
        return pl.new_pools[directory]
    held = [p for p in pl.pools if p.target == directory]
    active = [p for p in held if p.active]
    if active:
        try:  # see files made since libvirt last looked (reads only)
            active[0].obj.refresh(0)
        except libvirt.libvirtError:
            pass
        return active[0]
    if held:
        raise UsageError(f"disk {path}: pool '{held[0].name}' holds {directory} but is not active; "
                         f"start it (virsh pool-start {held[0].name}) or give --pool")
    pool = Pool(pool_name(directory, pl.pools), directory, active=False, new=True)
    pl.new_pools[directory] = pool
    return pool


# -- steps ---------------------------------------------------------------------------------------


def _lookup_pool(conn, name: str = "", uuid: str = ""):
    import libvirt

    try:
        return conn.storagePoolLookupByUUIDString(uuid) if uuid else conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return None
        raise


def _holding_pool(conn, directory: str):
    for p in list_pools(conn):
        if p.target == directory and p.active:
            return p
    return None


def pool_step(pl: Planner, pool: Pool) -> Step:
    connection = pl.ctx.connection
    local = pl.local
    directory = pool.target

    def do():
        import libvirt
        from lxml import etree

        conn = connection.conn
        if _holding_pool(conn, directory) is not None:
            return None  # another step (or someone) made one meanwhile
        root = etree.Element("pool", type="dir")
        etree.SubElement(root, "name").text = pool.name
        etree.SubElement(etree.SubElement(root, "target"), "path").text = directory
        missing = []
        if local:
            probe = directory
            while probe and probe != "/" and not os.path.exists(probe):
                missing.append(probe)
                probe = os.path.dirname(probe)
        try:
            obj = conn.storagePoolDefineXML(etree.tostring(root, encoding="unicode"), 0)
        except libvirt.libvirtError as exc:
            raise _libvirt_error(f"pool '{pool.name}' for {directory}: libvirt refused it", exc) from None
        built = False
        try:
            # build only a missing directory: building an existing one resets its mode
            if missing or (not local and not _starts(obj)):
                obj.build(0)
                built = True
            if not obj.isActive():
                obj.create(0)
            obj.setAutostart(1)
            preexisting = sorted(v.name() for v in obj.listAllVolumes(0))
        except libvirt.libvirtError as exc:
            _drop_pool(obj, built, missing)
            raise _libvirt_error(f"pool '{pool.name}' for {directory}: cannot start it", exc) from None
        return {"kind": "pool", "name": pool.name, "uuid": obj.UUIDString(), "path": directory,
                "built": built, "dirs": missing, "preexisting": preexisting, "storage": True}

    return Step(f"define storage pool '{pool.name}' for {directory} (start, autostart)", do)


def _starts(obj) -> bool:
    import libvirt

    try:
        obj.create(0)
        return True
    except libvirt.libvirtError:
        return False


def _drop_pool(obj, built: bool, dirs: list[str], strict: bool = False) -> None:
    """Stop and undefine a pool vscen made; the files in it stay. A directory vscen built goes
    when empty (libvirt's pool delete is an rmdir), and so do the empty parents it built.
    *strict*: a pool that cannot be stopped or undefined is an error (else: best effort)."""
    import libvirt

    try:
        if obj.isActive():
            obj.destroy()
        if built:
            try:
                obj.delete(0)
            except libvirt.libvirtError:
                pass  # not empty (or gone): it stays
        obj.undefine()
    except libvirt.libvirtError:
        if strict:
            raise
    for d in dirs:  # deepest first; only empty ones
        try:
            os.rmdir(d)
        except OSError:
            pass


@dataclass
class VolumeSpec:
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
        pool = _lookup_pool(conn, spec.pool.name)
        if pool is None or not pool.isActive():  # another pool came to hold the directory meanwhile?
            held = _holding_pool(conn, os.path.dirname(spec.path))
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
                raise _libvirt_error(f"volume {spec.path}: libvirt could not create it", exc) from None
            try:  # libvirt removes what a failed build left; make sure before trying again
                pool.refresh(0)
                pool.storageVolLookupByName(spec.name).delete(0)
            except libvirt.libvirtError:
                pass
    raise AssertionError("unreachable")


# -- storage-volume -------------------------------------------------------------------------------


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
        if disk.encrypt != encrypted:
            continue
        size = _round(disk.size)
        img = existing_image(pl, path)
        if img is not None:
            check_existing(pl, disk, path, img, size)
            continue
        yield i, disk, path, size


def plan_volumes(ctx) -> list[Step]:
    if not ctx.settings.disks:
        return []
    _connection(ctx, VOLUME)
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


# -- disk-encryption -----------------------------------------------------------------------------


def lookup_secret(pl: Planner, path: str):
    """(secret, is_vscens) of the secret for the disk at *path*, or (None, False)."""
    import libvirt

    try:
        sec = pl.conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_VOLUME, path)
        return sec, sec.UUIDString() == secret_uuid(path)
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        if code == libvirt.VIR_ERR_NO_SUPPORT:
            raise HostError(f"disk {path}: encrypt=yes needs libvirt's secret store, which {pl.uri} "
                            "does not offer; use a qemu:// connection") from None
        if code != libvirt.VIR_ERR_NO_SECRET:
            raise _libvirt_error(f"disk {path}: cannot look up its secret on {pl.uri}", exc) from None
    try:
        return pl.conn.secretLookupByUUIDString(secret_uuid(path)), True
    except libvirt.libvirtError:
        return None, False


def secret_step(pl: Planner, path: str, existing) -> Step:
    connection = pl.ctx.connection
    given = pl.ctx.settings.get("passphrase_file")
    name = pl.ctx.settings.name
    uuid = secret_uuid(path)

    def do():
        import libvirt
        from lxml import etree

        from vscen.secrets import default_source, passphrase

        # first, so that a bad passphrase source makes nothing
        value = passphrase(default_source(given))
        conn = connection.conn
        made = False
        if existing:
            try:
                sec = conn.secretLookupByUUIDString(uuid)
            except libvirt.libvirtError as exc:
                raise _libvirt_error(f"secret {uuid} for {path}: gone since the plan", exc) from None
        else:
            root = etree.Element("secret", ephemeral="no", private="yes")
            etree.SubElement(root, "uuid").text = uuid
            etree.SubElement(root, "description").text = f"vscen: passphrase of disk {path} of guest {name}"
            etree.SubElement(etree.SubElement(root, "usage", type="volume"), "volume").text = path
            try:
                sec = conn.secretDefineXML(etree.tostring(root, encoding="unicode"), 0)
            except libvirt.libvirtError as exc:
                raise _libvirt_error(f"secret for {path}: libvirt refused it", exc) from None
            made = True
        try:
            sec.setValue(value, 0)
        except libvirt.libvirtError as exc:
            if made:
                sec.undefine()
            raise _libvirt_error(f"secret {uuid} for {path}: cannot set its value", exc) from None
        return {"kind": "secret", "uuid": uuid, "usage": path, "storage": True}

    verb = "set the value of the existing" if existing else "define the"
    return Step(f"{verb} libvirt secret {uuid} for {path} (private; value: the disk passphrase)", do)


def plan_encryption(ctx) -> list[Step]:
    if not any(d.encrypt for d in ctx.settings.disks):
        return []
    _connection(ctx, ENCRYPTION)
    pl = Planner(ctx, pools=list_pools(ctx.connection.conn))
    own_pools = VOLUME not in ctx.resolution.host_actions()
    steps: list[Step] = []
    pending = []
    s = ctx.settings
    for i, disk in enumerate(s.disks):
        if not disk.encrypt:
            continue
        path = s.disk_path(i)
        sec, ours = lookup_secret(pl, path)
        if sec is not None and not ours:
            pl.problems.append(f"disk {path}: the libvirt secret {sec.UUIDString()} for it exists and is not "
                               f"vscen's; undefine it (virsh secret-undefine {sec.UUIDString()}) or give another "
                               "path (--force does not replace it)")
            continue
        img = existing_image(pl, path)
        if img is not None:
            if check_existing(pl, disk, path, img, _round(disk.size)):
                if sec is None:
                    ctx.note(f"disk {path}: exists encrypted without its secret: defining it with the "
                             "passphrase given (a wrong one shows when the guest starts)")
                    steps.append(secret_step(pl, path, existing=False))
                else:
                    ctx.note(f"secret {sec.UUIDString()} for {path} exists: unchanged")
            continue
        if sec is not None and not ctx.force:
            pl.problems.append(f"disk {path}: vscen's secret {sec.UUIDString()} for it exists (left by an "
                               "earlier run) but the disk does not; use --force to set it to the new "
                               f"passphrase, or undefine it (virsh secret-undefine {sec.UUIDString()})")
            continue
        pending.append((disk, path, sec is not None))
    specs = []
    for disk, path, has_secret in pending:
        pool = choose_pool(pl, path)
        specs.append((path, has_secret, volume_spec(pl, disk, path, pool, _round(disk.size))))
    if pl.problems:
        raise ExistsError("; ".join(pl.problems), pl.problems)
    if own_pools:
        steps.extend(pool_step(pl, p) for p in pl.new_pools.values())
    for path, has_secret, spec in specs:
        steps.append(secret_step(pl, path, existing=has_secret))
        steps.append(volume_step(pl, spec))
    return steps


# -- undo ------------------------------------------------------------------------------------------


def undo(connection, record: dict) -> None:
    """Take back one record of either action; what is gone already is fine."""
    import libvirt

    kind = record.get("kind")
    handler = {"pool": _undo_pool, "volume": _undo_volume, "secret": _undo_secret}.get(kind)
    if handler is None:
        raise VscenError(f"volumes: no way to take back a record of kind '{kind}'")
    try:
        handler(connection, record)
    except libvirt.libvirtError as exc:
        raise _libvirt_error(f"{kind} {record.get('name') or record.get('uuid')}: cannot take it back", exc) from None


def _undo_volume(connection, record: dict) -> None:
    import libvirt

    conn = connection.conn
    pool = _lookup_pool(conn, record["pool"])
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
    if vol is None:
        if connection.is_local and not connection.is_test and os.path.exists(record["path"]):
            raise VscenError(f"volume {record['path']}: the file is still there but no active pool holds "
                             "it; remove it yourself if it is no longer wanted")
        return
    vol.delete(0)


def _undo_secret(connection, record: dict) -> None:
    import libvirt

    try:
        sec = connection.conn.secretLookupByUUIDString(record["uuid"])
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SECRET, libvirt.VIR_ERR_NO_SUPPORT):
            return
        raise
    sec.undefine()


def _undo_pool(connection, record: dict) -> None:
    import libvirt

    pool = _lookup_pool(connection.conn, uuid=record["uuid"])
    if pool is None:
        return
    if pool.isActive():
        try:
            pool.refresh(0)
        except libvirt.libvirtError:
            pass
        names = {v.name() for v in pool.listAllVolumes(0)}
        if names - set(record.get("preexisting", ())):
            return  # it holds volumes vscen did not make here: it stays, as the user's
    _drop_pool(pool, bool(record.get("built")),
               record.get("dirs", []) if connection.is_local and not connection.is_test else [], strict=True)


# -- registration --------------------------------------------------------------------------------

ACTIONS = (
    HostAction(
        name=VOLUME,
        summary="a storage volume (and, where needed, a dir pool) for each new disk",
        plan=plan_volumes,
        undo=undo,
        details="For each disk whose file does not exist: a volume in --pool, or in the active "
                "pool of the disk's directory, or in a new dir pool vscen-<dir> (defined, started, "
                "autostarted; the directory built only if missing). qcow2 compat 1.1 with "
                "lazy_refcounts/clusterSize as asked; preallocation metadata -> PREALLOC_METADATA, "
                "falloc/full -> allocation = capacity; backing= -> a qcow2 overlay on the probed "
                "base. Existing disks of the same format are used as they are; another format (or "
                "an explicitly asked other size) is refused, --force included. A preallocated disk "
                "larger than the pool's free space is refused. Encrypted disks are left to "
                "disk-encryption.",
    ),
    HostAction(
        name=ENCRYPTION,
        summary="a libvirt secret and a LUKS-encrypted qcow2 volume for each encrypted disk",
        plan=plan_encryption,
        undo=undo,
        details="For each disk with encrypt=yes: a private, persistent libvirt secret (usage "
                "volume = the disk's path, UUID uuid5(NAMESPACE_URL, 'vscen:' + path), as the "
                "storage feature writes in the domain XML) set to the disk passphrase (read only "
                "when the step runs), then the qcow2 volume with <encryption format='luks'>. A "
                "secret for the path that is not vscen's is refused.",
    ),
)


@hookimpl
def vscen_register_host_actions(register):
    for action in ACTIONS:
        register(action)


def _pool_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise ValueError("is not a storage pool name (letters, digits, '.', '_', '-')")
    return value


def _qcow2_only(encrypt: bool, disk) -> None:
    if encrypt and disk.format != "qcow2":
        raise ValueError(f"an encrypted disk must be qcow2 (LUKS inside qcow2), not {disk.format}")


def _passphrase_file(value: str):
    from pathlib import Path

    if not value or "\0" in value:
        raise ValueError("is not a file name")
    return Path(value).expanduser()


SETTINGS = (
    Setting(name="pool", parse=_pool_name, metavar="NAME", example="fast-nvme",
            help="libvirt storage pool for new disks (default: the pool of their directory, made if none)."),
    Setting(name="disk.encrypt", flag=True, default=False, option="--encrypt-disk", example="yes", check=_qcow2_only,
            help="LUKS-encrypt new disks (qcow2); the passphrase comes from --passphrase-file, "
                 "$VSCEN_DISK_PASSPHRASE or a prompt."),
    Setting(name="passphrase_file", parse=_passphrase_file, metavar="FILE", example="~/.vault-pass",
            help="File holding the disk passphrase (mode 600): read only when the secret is made, never stored."),
)


@hookimpl
def vscen_register_settings(register):
    for setting in SETTINGS:
        register(setting)
