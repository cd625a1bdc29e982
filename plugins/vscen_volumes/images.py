"""What the two actions share while planning: the disk images found on the host (libvirt
volumes; files, on a local connection) and how they compare with the disk asked for, and the
``Planner`` that carries what a plan has read and decided so far."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vscen import HostError, LibvirtError, UsageError, VscenError, default_of, on_this_machine, parse_size, secret_uuid

if TYPE_CHECKING:
    from vscen_volumes.pools import Pool

VOLUME = "storage-volume"
ENCRYPTION = "disk-encryption"


def human(size: int) -> str:
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size // factor}{unit}" if size % factor == 0 else f"{size / factor:.1f}{unit}"
    return f"{size}B"


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
        return on_this_machine(c)

    @property
    def sees_files(self) -> bool:
        """The images are this machine's files: a local connection, or the embedded test driver,
        which stands for this machine (it makes nothing, but what exists here is what a real run
        would find)."""
        return bool(self.ctx.connection.is_local)


def libvirt_error(what: str, exc) -> LibvirtError:
    return LibvirtError(f"{what}: {exc.get_error_message()}")


def require_connection(ctx, action: str):
    if ctx.connection is None:
        raise VscenError(f"{action}: no libvirt connection to plan with")
    return ctx.connection


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
            raise libvirt_error(f"disk {path}: cannot look it up on {pl.uri}", exc) from None
        vol = None
    if vol is not None:
        try:
            return parse_volume(vol.XMLDesc(0), f"volume of pool '{vol.storagePoolLookupByVolume().name()}'")
        except libvirt.libvirtError:
            pass  # libvirt knew it, but the file is gone since its pool was last refreshed
    if pl.sees_files and os.path.lexists(path):
        if os.path.isdir(path):
            raise UsageError(f"disk.path: {path} is a directory; give the path of an image file")
        info = qemu_img_info(path)
        fmt = info.get("format", "raw")
        return Image(format=fmt, capacity=int(info.get("virtual-size", 0)),
                     backing=info.get("full-backing-filename") or info.get("backing-filename") or None,
                     encrypted=bool(info.get("encrypted")), where="file")
    return None


def round_size(size: int) -> int:
    """Sizes as QEMU makes them: whole 512-byte sectors."""
    return -(-size // 512) * 512


def size_asked(ctx, disk) -> bool:
    """Whether the user asked for this disk's size (rather than it being a default)."""
    s = ctx.settings
    if s.level("disk.size") == "user":
        return True
    # a --disk size=... equal to the default cannot be told apart from it: it counts as not asked
    return disk.size != parse_size("disk.size", default_of(ctx, "disk.size"), "g")


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
