"""The ``disk-encryption`` action: for each encrypted disk, a libvirt secret holding the disk
passphrase, then its LUKS volume; and taking a secret back.

The passphrase is read from an owner-only file, an environment variable or a prompt, only
when the step that needs it runs; where the encryption is the ``encrypted-disk`` default and
no passphrase is given, it is a random key (``secrets.token_urlsafe``, 256 bits) made in the
step. It is never put on a command line, in a log, in the XML, the journal or any file of
vscen's; it goes to libvirt's secret store (``private='yes'``) through the API only.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from vscen import ExistsError, HostError, Step, UsageError, secret_uuid
from vscen_volumes.images import (
    ENCRYPTION,
    VOLUME,
    Planner,
    check_existing,
    existing_image,
    libvirt_error,
    require_connection,
    round_size,
)
from vscen_volumes.pools import choose_pool, list_pools, pool_step
from vscen_volumes.volumes import volume_spec, volume_step

#: the environment variable that may hold the passphrase
ENV = "VSCEN_DISK_PASSPHRASE"
_cache: dict = {}


def default_source(passphrase_file: Path | None, generated: bool = False):
    """Where the passphrase comes from: *passphrase_file* when given, else ``$VSCEN_DISK_PASSPHRASE``
    when set, else a random key where *generated* (the encryption is vscen's default), else a
    prompt: ``("file", path)``, ``("env", name)``, ``("random", None)`` or ``("prompt", None)``."""
    if passphrase_file is not None:
        return ("file", str(passphrase_file))
    if os.environ.get(ENV):
        return ("env", ENV)
    return ("random", None) if generated else ("prompt", None)


def passphrase(source) -> bytes:
    """The passphrase from *source* (see ``default_source``), read once per process; a random
    key is new each time (one per disk)."""
    if source in _cache:
        return _cache[source]
    kind, where = source
    if kind == "random":
        import secrets

        return secrets.token_urlsafe(32).encode()
    if kind == "file":
        path = Path(where)
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise UsageError(f"passphrase-file: {path} can be read by others; chmod 600 it")
            value = path.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise UsageError(f"passphrase-file: cannot read {path} ({exc.strerror})") from None
    elif kind == "env":
        value = os.environ.get(where, "").encode()
    else:
        if not sys.stdin.isatty():
            raise UsageError(
                f"passphrase: no terminal to ask on; give --passphrase-file FILE (mode 600) or set {ENV}"
            )
        import getpass

        value = getpass.getpass("disk passphrase: ").encode()
        if getpass.getpass("again: ").encode() != value:
            raise UsageError("passphrase: the two entries differ")
    if len(value) < 8:
        raise UsageError(f"passphrase: from {kind}, it is shorter than 8 characters")
    _cache[source] = value
    return value


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
            raise libvirt_error(f"disk {path}: cannot look up its secret on {pl.uri}", exc) from None
    try:
        return pl.conn.secretLookupByUUIDString(secret_uuid(path)), True
    except libvirt.libvirtError:
        return None, False


def secret_step(pl: Planner, path: str, existing) -> Step:
    connection = pl.ctx.connection
    given = pl.ctx.settings.get("passphrase_file")
    name = pl.ctx.settings.name
    uuid = secret_uuid(path)
    from vscen_volumes.default import is_default

    source = default_source(given, generated=is_default(pl.ctx.settings))

    def do():
        import libvirt
        from lxml import etree

        # first, so that a bad passphrase source makes nothing
        value = passphrase(source)
        conn = connection.conn
        made = False
        if existing:
            try:
                sec = conn.secretLookupByUUIDString(uuid)
            except libvirt.libvirtError as exc:
                raise libvirt_error(f"secret {uuid} for {path}: gone since the plan", exc) from None
        else:
            root = etree.Element("secret", ephemeral="no", private="yes")
            etree.SubElement(root, "uuid").text = uuid
            etree.SubElement(root, "description").text = f"vscen: passphrase of disk {path} of guest {name}"
            etree.SubElement(etree.SubElement(root, "usage", type="volume"), "volume").text = path
            try:
                sec = conn.secretDefineXML(etree.tostring(root, encoding="unicode"), 0)
            except libvirt.libvirtError as exc:
                raise libvirt_error(f"secret for {path}: libvirt refused it", exc) from None
            made = True
        try:
            sec.setValue(value, 0)
        except libvirt.libvirtError as exc:
            if made:
                sec.undefine()
            raise libvirt_error(f"secret {uuid} for {path}: cannot set its value", exc) from None
        return {"kind": "secret", "uuid": uuid, "usage": path, "storage": True}

    verb = "set the value of the existing" if existing else "define the"
    what = ("a random key vscen generates, kept only in libvirt's secret store" if source[0] == "random"
            else "the disk passphrase")
    return Step(f"{verb} libvirt secret {uuid} for {path} (private; value: {what})", do)


def plan_encryption(ctx) -> list[Step]:
    if not any(d.encrypt for d in ctx.settings.disks):
        return []
    require_connection(ctx, ENCRYPTION)
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
            if check_existing(pl, disk, path, img, round_size(disk.size)):
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
        specs.append((path, has_secret, volume_spec(pl, disk, path, pool, round_size(disk.size))))
    if pl.problems:
        raise ExistsError("; ".join(pl.problems), pl.problems)
    if own_pools:
        steps.extend(pool_step(pl, p) for p in pl.new_pools.values())
    for path, has_secret, spec in specs:
        steps.append(secret_step(pl, path, existing=has_secret))
        steps.append(volume_step(pl, spec))
    return steps


def undo_secret(connection, record: dict) -> None:
    """Undefine the secret vscen defined: its UUID is the one vscen derives from the disk's path."""
    import libvirt

    from vscen import check_record

    check_record(record, {"uuid": str, "usage": str}, "secret")
    if record["uuid"] != secret_uuid(record["usage"]):
        raise UsageError(f"secret {record['uuid']}: not the UUID vscen gives the secret of {record['usage']}; "
                         "not touched")
    try:
        sec = connection.conn.secretLookupByUUIDString(record["uuid"])
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SECRET, libvirt.VIR_ERR_NO_SUPPORT):
            return
        raise
    sec.undefine()
