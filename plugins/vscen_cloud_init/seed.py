"""The ``cloud-init-seed`` action: the NoCloud seed ISO as a private volume of the storage
pool that holds the guest's first disk, written through libvirt (so remote hosts work too);
and taking it back.

The ISO is made in memory with pycdlib (imported when a seed is made or read): volume label
``cidata``, ISO 9660 names with Joliet and Rock Ridge so ``user-data``, ``meta-data`` and
``network-config`` keep their lower-case, dashed names whichever extension the guest reads."""

from __future__ import annotations

import io
import os

from vscen import on_this_machine
from vscen_cloud_init.spec import describe, seed_files

ACTION = "cloud-init-seed"
#: where disks without a path go (libvirt's default pool directory): the seed of a guest
#: without disks too
IMAGES_DIR = "/var/lib/libvirt/images"
LABEL = "cidata"
#: ISO 9660 level-1 names (8.3) of the files; Joliet and Rock Ridge carry the real ones
ISO_NAMES = {"user-data": "/USERDATA.;1", "meta-data": "/METADATA.;1", "network-config": "/NETCONF.;1"}
SUFFIX = "-cidata.iso"
#: a seed larger than this is not one vscen made (it compares only smaller ones)
MAX_SEED = 64 * 1024**2


def seed_path(settings) -> str:
    """The seed beside the guest's first disk: DIR/NAME-cidata.iso."""
    where = os.path.dirname(settings.disk_path(0)) if settings.disks else IMAGES_DIR
    return os.path.join(where, settings.name + SUFFIX)


# -- the ISO -------------------------------------------------------------------------------------


def build_iso(files: dict[str, bytes]) -> bytes:
    """The seed ISO. Its application-use field holds 256 random bits, so that the digest of
    the file, which the journal keeps to prove at undo that the seed is vscen's, tells
    nothing about a password inside it."""
    import secrets

    iso = _pycdlib().PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL, app_use=secrets.token_hex(32))
    for name, data in files.items():
        iso.add_fp(io.BytesIO(data), len(data), ISO_NAMES[name], rr_name=name, joliet_path="/" + name)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def read_iso(data: bytes) -> tuple[str, dict[str, bytes]]:
    """(volume label, files by Joliet name) of an ISO: to compare a seed that exists."""
    iso = _pycdlib().PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        label = iso.pvd.volume_identifier.decode(errors="replace").strip()
        files = {}
        if iso.has_joliet():
            for child in iso.list_children(joliet_path="/"):
                name = iso.full_path_from_dirrecord(child, rockridge=False)
                if child.is_file():
                    out = io.BytesIO()
                    iso.get_file_from_iso_fp(out, joliet_path=name)
                    files[name.lstrip("/")] = out.getvalue()
        return label, files
    finally:
        iso.close()


def _pycdlib():
    try:
        import pycdlib
    except ImportError:
        from vscen import HostError

        raise HostError("cloud-init: the seed ISO needs pycdlib, which is not installed; "
                        "pip install 'vscen[cloud]' (or pycdlib)") from None
    return pycdlib


# -- libvirt -------------------------------------------------------------------------------------


def _pool_holding(conn, directory: str):
    """The active pool whose volumes live in *directory*, or None."""
    from lxml import etree

    for pool in conn.listAllStoragePools(0):
        target = etree.fromstring(pool.XMLDesc(0).encode()).findtext("target/path") or ""
        if target and os.path.normpath(target) == directory and pool.isActive():
            return pool
    return None


def _volume_at(conn, path: str):
    import libvirt

    try:
        return conn.storageVolLookupByPath(path)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL):
            return None
        raise


def _error(what: str, exc):
    from vscen import LibvirtError

    return LibvirtError(f"{what}: {exc.get_error_message()}")


def _pool_planned(ctx, directory: str) -> bool:
    """Whether the storage-volume action (plugin volumes) makes a pool for *directory* in this
    run: it does for a new disk in a directory no pool holds."""
    s = ctx.settings
    if "storage-volume" not in ctx.resolution.host_actions():
        return False
    local = on_this_machine(ctx.connection)
    return any(os.path.dirname(s.disk_path(i)) == directory and not (local and os.path.exists(s.disk_path(i)))
               for i in range(len(s.disks)))


def plan(ctx):
    import libvirt

    from vscen import ExistsError, HostError, Step, VscenError

    s = ctx.settings
    value = s.get("cloud_init")
    if not value:
        return []
    if ctx.connection is None:
        raise VscenError(f"{ACTION}: no libvirt connection to plan with")
    conn, test = ctx.connection.conn, ctx.connection.is_test
    local = ctx.connection.is_local and not test
    path = seed_path(s)
    directory, name = os.path.split(path)
    try:
        pool = _pool_holding(conn, directory)
        existing = _volume_at(conn, path)
    except libvirt.libvirtError as exc:
        raise _error(f"cloud-init seed {path}: cannot look it up on {ctx.connection.uri}", exc) from None
    if pool is None and not _pool_planned(ctx, directory):
        raise HostError(f"cloud-init seed {path}: no active storage pool keeps its volumes in {directory}; "
                        f"start one (virsh pool-define-as NAME dir --target {directory}; virsh pool-start NAME)")
    replace = False
    if existing is not None or (local and os.path.lexists(path)):
        if not test and _same_seed(conn, existing, path if local else None, seed_files(value, s.name)):
            ctx.note(f"cloud-init seed {path} holds this seed already: unchanged")
            return []
        if not ctx.force:
            raise ExistsError(f"cloud-init seed {path} exists with other content (use --force to replace it)")
        if existing is None:
            raise ExistsError(f"cloud-init seed {path} exists, and no storage pool knows it: vscen replaces only "
                              "volumes; remove the file yourself")
        replace = True
    where = f"pool '{pool.name()}'" if pool is not None else f"the pool storage-volume makes for {directory}"
    if test:
        ctx.note(f"cloud-init: {ctx.connection.uri} stores no volume content: the seed volume stays empty there")
    description = (f"{'replace' if replace else 'create'} the cloud-init seed {name} in {where}: NoCloud ISO "
                   f"'{LABEL}' with {describe(value)}; mode 600, owner root")

    def do():
        return _make(ctx, value, path, replace)

    return [Step(description, do)]


def _same_seed(conn, vol, path: str | None, files: dict[str, bytes]) -> bool:
    """Whether the seed there holds *files* (read from the file on this machine, else through
    libvirt): the same command run again changes nothing."""
    try:
        if path is not None:
            with open(path, "rb") as f:
                data = f.read(MAX_SEED)
        elif vol is not None and vol.info()[1] <= MAX_SEED:
            data = _download(conn, vol)
        else:
            return False
        return read_iso(data) == (LABEL, files)
    except Exception:  # unreadable, or not an ISO at all: not this seed
        return False


def _download(conn, vol) -> bytes:
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, 0)
    chunks = []
    try:
        while True:
            chunk = stream.recv(1024**2)
            if not chunk:
                break
            if isinstance(chunk, int):  # -2: would block (a blocking stream does not)
                continue
            chunks.append(chunk)
        stream.finish()
    except BaseException:
        stream.abort()
        raise
    return b"".join(chunks)


def _make(ctx, value, path: str, replace: bool) -> dict:
    import libvirt
    from lxml import etree

    from vscen import LibvirtError, file_identity

    s = ctx.settings
    conn, connection = ctx.connection.conn, ctx.connection
    directory, name = os.path.split(path)
    pool = _pool_holding(conn, directory)
    if pool is None:
        raise LibvirtError(f"cloud-init seed {path}: no active storage pool keeps its volumes in {directory}")
    data = build_iso(seed_files(value, s.name))
    try:
        pool.refresh(0)
        if replace:
            old = _volume_at(conn, path)
            if old is not None:
                old.delete(0)
        root = etree.Element("volume")
        etree.SubElement(root, "name").text = name
        etree.SubElement(root, "capacity", unit="bytes").text = str(len(data))
        etree.SubElement(root, "allocation", unit="bytes").text = "0"
        target = etree.SubElement(root, "target")
        etree.SubElement(target, "format", type="raw")
        perms = etree.SubElement(target, "permissions")
        etree.SubElement(perms, "mode").text = "0600"
        if "/session" not in connection.uri:  # a privileged daemon: root's
            etree.SubElement(perms, "owner").text = "0"
            etree.SubElement(perms, "group").text = "0"
        vol = pool.createXML(etree.tostring(root, encoding="unicode"), 0)
    except libvirt.libvirtError as exc:
        raise _error(f"cloud-init seed {path}: libvirt could not create it", exc) from None
    record = {"kind": "seed", "pool": pool.name(), "name": name, "path": vol.path(), "size": len(data)}
    if not connection.is_test:
        try:
            _upload(conn, vol, data)
        except libvirt.libvirtError as exc:
            try:
                vol.delete(0)
            except libvirt.libvirtError:
                pass
            raise _error(f"cloud-init seed {path}: libvirt could not write it", exc) from None
    if on_this_machine(connection):
        record["identity"] = file_identity(vol.path())
    return record


def _upload(conn, vol, data: bytes) -> None:
    stream = conn.newStream(0)
    vol.upload(stream, 0, len(data), 0)
    try:
        view = memoryview(data)
        for start in range(0, len(data), 1024**2):
            chunk = view[start:start + 1024**2]
            while chunk:
                sent = stream.send(bytes(chunk))
                chunk = chunk[sent:]
        stream.finish()
    except BaseException:
        stream.abort()
        raise


def undo(connection, record: dict) -> None:
    """Delete the seed vscen made: found in its pool by name, at the path it was made, and (on
    this machine) only while the file is still the one it wrote."""
    import libvirt

    from vscen import UsageError, VscenError, check_record, safe_path, same_file

    what = "cloud-init seed"
    check_record(record, {"kind": str, "pool": str, "name": str, "path": str, "size": int, "identity?": dict}, what)
    if record["kind"] != "seed":
        raise VscenError(f"{what}: no way to take back a record of kind '{record['kind']}'")
    path = str(safe_path(record["path"], ["/"], what, pattern="*" + SUFFIX))
    if os.path.basename(path) != record["name"]:
        raise UsageError(f"{what} {path}: the journal names it '{record['name']}', not its file's name; not touched")
    conn = connection.conn
    try:
        try:  # a pool that was not refreshed may still list a file that is gone
            conn.storagePoolLookupByName(record["pool"]).refresh(0)
        except libvirt.libvirtError:
            pass
        vol = _volume_at(conn, path)
        if vol is None:
            return  # gone already
        if vol.path() != path or vol.name() != record["name"] or vol.storagePoolLookupByVolume().name() != record["pool"]:
            raise VscenError(f"{what} {path}: the volume there is not the one vscen made in pool "
                             f"'{record['pool']}'; not touched")
        if vol.info()[1] != record["size"]:
            raise VscenError(f"{what} {path}: its size changed since vscen made it; left in place")
        if "identity" in record and on_this_machine(connection):
            same = same_file(path, record["identity"])
            if same is False:
                raise VscenError(f"{what} {path}: changed since vscen made it; left in place")
        vol.delete(0)
    except libvirt.libvirtError as exc:
        raise _error(f"{what} {path}: cannot take it back", exc) from None
