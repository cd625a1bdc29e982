"""Storage pools: the one a new disk goes into (``--pool``, the active pool of its directory,
or a new ``dir`` pool ``vscen-<directory>``), the step that defines one, and taking it back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vscen import Step, UsageError, VscenError, on_this_machine
from vscen_volumes.images import libvirt_error

if TYPE_CHECKING:
    from vscen_volumes.images import Planner


@dataclass
class Pool:
    """A storage pool that holds a guest's volumes, existing or to be defined."""

    name: str
    target: str | None
    active: bool
    obj: object = None
    new: bool = False


def list_pools(conn) -> list[Pool]:
    import libvirt
    from lxml import etree

    pools = []
    try:
        for p in conn.listAllStoragePools(0):
            target = etree.fromstring(p.XMLDesc(0).encode()).findtext("target/path")
            pools.append(Pool(p.name(), os.path.normpath(target) if target else None, bool(p.isActive()), p))
    except libvirt.libvirtError as exc:
        raise libvirt_error("storage pools: cannot list them", exc) from None
    return pools


def pool_name(directory: str, pools: list[Pool]) -> str:
    """``vscen-`` + the directory, sanitised; a hash suffix where that name is taken."""
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "/" for c in directory)
    base = "-".join(filter(None, kept.split("/"))).strip("-.") or "root"
    name = f"vscen-{base}"
    if len(name) > 64 or any(p.name == name for p in pools):
        import hashlib  # here: it loads OpenSSL, which most runs have no use for

        name = f"{name[:55]}-{hashlib.sha256(directory.encode()).hexdigest()[:8]}"
    return name


def free_bytes(pl: Planner, pool: Pool) -> int | None:
    """Free space where the pool's volumes go (None when it cannot be known yet)."""
    import libvirt

    if not pool.new:
        try:
            return int(pool.obj.info()[3])
        except libvirt.libvirtError as exc:
            raise libvirt_error(f"pool '{pool.name}': cannot read its free space", exc) from None
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


def lookup_pool(conn, name: str = "", uuid: str = ""):
    import libvirt

    try:
        return conn.storagePoolLookupByUUIDString(uuid) if uuid else conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return None
        raise


def holding_pool(conn, directory: str):
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
        if holding_pool(conn, directory) is not None:
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
            raise libvirt_error(f"pool '{pool.name}' for {directory}: libvirt refused it", exc) from None
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
            raise libvirt_error(f"pool '{pool.name}' for {directory}: cannot start it", exc) from None
        return {"kind": "pool", "name": pool.name, "uuid": obj.UUIDString(), "path": directory,
                "built": built, "dirs": missing, "preexisting": preexisting, "storage": True}

    return Step(f"define storage pool '{pool.name}' for {directory} (start, autostart)", do)


def _target(obj) -> str | None:
    from lxml import etree

    return etree.fromstring(obj.XMLDesc(0).encode()).findtext("target/path")


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


def undo_pool(connection, record: dict) -> None:
    """Stop and undefine the pool vscen defined (by its UUID, only while it still keeps its
    volumes in the directory vscen gave it); remove only the empty directories it built for it:
    that directory and its parents."""
    import libvirt

    from vscen import check_record, safe_path

    what = f"pool {record.get('name')!r}" if isinstance(record, dict) else "pool"
    check_record(record, {"uuid": str, "path": str, "built?": bool, "dirs?": list, "preexisting?": list}, what)
    directory = str(safe_path(record["path"], ["/"], what))
    dirs = record.get("dirs", [])
    chain = [directory]
    while chain[-1] != "/":
        chain.append(os.path.dirname(chain[-1]))
    if not all(isinstance(d, str) and d in chain for d in dirs) or not all(
            isinstance(v, str) for v in record.get("preexisting", [])):
        raise UsageError(f"{what}: the journal's dirs are not {directory} and its parents; not touched")
    if not record["uuid"]:
        return  # never defined (a step that found one made meanwhile)
    pool = lookup_pool(connection.conn, uuid=record["uuid"])
    if pool is None:
        return
    if _target(pool) != directory:
        raise VscenError(f"{what}: the pool of UUID {record['uuid']} keeps its volumes in {_target(pool)}, not "
                         f"{directory}; not touched")
    if pool.isActive():
        try:
            pool.refresh(0)
        except libvirt.libvirtError:
            pass
        names = {v.name() for v in pool.listAllVolumes(0)}
        if names - set(record.get("preexisting", ())):
            return  # it holds volumes vscen did not make here: it stays, as the user's
    _drop_pool(pool, bool(record.get("built")),
               record.get("dirs", []) if on_this_machine(connection) else [], strict=True)
