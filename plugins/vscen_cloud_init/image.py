"""``--image FILE``: a cloud image as the read-only base of the guest's first disk.

The image's format is read from its header here (qcow2 or raw; anything else is refused
with what to do), never guessed by QEMU at start: it is written as the overlay's backing
format by the ``storage-volume`` action (``disk.backing``, plugin ``volumes``) and as
``<backingStore>`` in the domain XML."""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import replace

QCOW2_MAGIC = b"QFI\xfb"
#: header magics of formats vscen does not take, with what to do instead
OTHER = (
    (0, b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (unxz)"),
    (0, b"\x1f\x8b", "gzip-compressed", "decompress it first (gunzip)"),
    (0, b"KDMV", "a vmdk image", "convert it: qemu-img convert -O qcow2 IN OUT"),
    (0, b"vhdxfile", "a vhdx image", "convert it: qemu-img convert -O qcow2 IN OUT"),
    (0, b"conectix", "a vpc (vhd) image", "convert it: qemu-img convert -O qcow2 IN OUT"),
    (0, b"QED\x00", "a qed image", "convert it: qemu-img convert -O qcow2 IN OUT"),
    (0, b"LUKS\xba\xbe", "a LUKS volume", "give an unencrypted image"),
    (64, b"\x7f\x10\xda\xbe", "a vdi image", "convert it: qemu-img convert -O qcow2 IN OUT"),
    (257, b"ustar", "a tar archive", "extract the disk image from it (tar -x)"),
    (0x8001, b"CD001", "an ISO 9660 image (install media)", "give it with --cdrom"),
)


def probe(path: str) -> tuple[str, int]:
    """(format, virtual size) of the image at *path*; a ValueError saying what is wrong."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file; give a cloud image file (qcow2 or raw)")
        with open(path, "rb") as f:
            head = f.read(0x8010)
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror}); give a cloud image file (qcow2 or raw)") from None
    if head[:4] == QCOW2_MAGIC:
        if len(head) < 104:
            raise ValueError("is a truncated qcow2 image")
        version, backing_offset = struct.unpack(">IQ", head[4:16])
        size, crypt = struct.unpack(">QI", head[24:36])
        if backing_offset:
            raise ValueError("is a qcow2 overlay on another image; give a standalone image "
                             "(qemu-img convert -O qcow2 IN OUT)")
        if crypt:
            raise ValueError("is an encrypted qcow2 image; give an unencrypted one")
        if version not in (2, 3):
            raise ValueError(f"is a qcow2 image of version {version}, which QEMU does not know")
        return "qcow2", size
    for offset, magic, what, todo in OTHER:
        if head[offset:offset + len(magic)] == magic:
            raise ValueError(f"is {what}; vscen takes a qcow2 or raw image: {todo}")
    if st.st_size == 0:
        raise ValueError("is empty")
    if st.st_size % 512:
        raise ValueError(f"is no disk image: neither qcow2 nor raw (a raw image is whole 512-byte sectors, "
                         f"and it has {st.st_size} bytes)")
    return "raw", st.st_size


def parse_image(text: str) -> str:
    """The image's absolute path, once it is known to be a qcow2 or raw image."""
    from vscen import check_path

    path = check_path("image", os.path.abspath(os.path.expanduser(str(text))))
    probe(path)
    return path


def prepare(ctx) -> None:
    """Disk 1 becomes a qcow2 overlay on the image (the ``storage-volume`` action makes it)."""
    from vscen import UsageError

    s = ctx.settings
    image = s.get("image")
    if not image:
        return
    if not s.disks:
        raise UsageError(f"image: {image} needs a disk to be the overlay on it, and the guest has none "
                         "(--disk none); leave out one of them")
    disk = s.disks[0]
    path = s.disk_path(0)
    if path == image:
        raise UsageError(f"image: {image} is also disk 1's path; the image is the read-only base and the disk "
                         "the overlay on it: give the disk another path (--disk path=...)")
    if disk.backing and disk.backing != image:
        raise UsageError(f"image: disk 1 has backing={disk.backing} already; give one of --image and --disk backing=")
    if disk.format != "qcow2":
        if _format_asked(ctx, disk):
            raise UsageError(f"image: disk 1 is format={disk.format}, but the overlay on {image} is qcow2; "
                             "leave out format= or give format=qcow2")
        ctx.note(f"cloud-image: disk 1 is qcow2, not {disk.format} ({s.source('disk.format')}): "
                 "a copy-on-write overlay on the image")
    if disk.preallocation != "off":
        ctx.note(f"cloud-image: disk 1 is not preallocated ({disk.preallocation} asked): QEMU cannot "
                 "preallocate an overlay")
    disk = replace(disk, backing=image, format="qcow2", preallocation="off")
    ctx.settings = replace(s, disks=(disk, *s.disks[1:]))


def _format_asked(ctx, disk) -> bool:
    """Whether the user chose disk 1's format (rather than a scenario or vscen's default)."""
    from vscen import default_of

    s = ctx.settings
    if s.level("disk.format") == "user":
        return True
    if not s.source("disks").startswith(("option", "config")):
        return False
    return disk.format != default_of(ctx, "disk.format")  # a --disk format=... equal to the default cannot be told from it


def finish(domain, ctx) -> None:
    """``<backingStore>`` of disk 1: the image, its probed format, and nothing below it."""
    s = ctx.settings
    image = s.get("image")
    if not image or not s.disks:
        return
    from vscen import UsageError

    try:
        fmt, _size = probe(image)
    except ValueError as exc:  # changed since the settings were read
        raise UsageError(f"image: {image} {exc}") from None
    path = s.disk_path(0)
    devices = domain.find("devices")
    for disk in devices.findall("disk") if devices is not None else ():
        source = disk.find("source")
        if disk.get("device") == "disk" and source is not None and source.get("file") == path:
            store = disk.add("backingStore", type="file")
            store.add("format", type=fmt)
            store.add("source", file=image)
            store.add("backingStore")
            return
