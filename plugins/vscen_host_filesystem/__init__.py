"""Host directories shared with the guest through virtiofs.

``host-filesystem``: one virtiofs ``<filesystem>`` per ``--filesystem source=/DIR,target=TAG``
(the guest mounts it with ``mount -t virtiofs TAG /mnt``). virtiofs rather than 9p: it is
much faster, keeps POSIX semantics and is the transport QEMU still develops.
``accessmode='passthrough'``, the only mode libvirt supports for virtiofs: files carry the
guest user's own ownership and permissions. virtiofsd reads and writes guest memory directly,
so the guest memory must be shareable: ``<memoryBacking><source type='memfd'/><access
mode='shared'/>`` (memfd needs no file path on the host; a ``file`` source where the host
offers no memfd). The ``virtiofsd`` host check warns where virtiofsd is not installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vscen import Feature, Setting, hookimpl


@dataclass(frozen=True)
class Filesystem:
    """A host directory shared with the guest."""

    source: str  # host directory
    target: str  # mount tag in the guest
    readonly: bool = False


def parse_filesystem(spec: str) -> Filesystem:
    """``source=/srv/data,target=data[,readonly=yes]`` or ``/srv/data:data[:ro]``."""
    from vscen import check_path

    if "=" in spec:
        parts = dict(p.partition("=")[::2] for p in spec.split(","))
    else:
        bits = spec.split(":")
        parts = {"source": bits[0], "target": bits[1] if len(bits) > 1 else ""}
        if len(bits) > 2:
            parts["readonly"] = "yes" if bits[2] == "ro" else bits[2]
    extra = set(parts) - {"source", "target", "readonly"}
    target = parts.get("target", "")
    if extra or not re.fullmatch(r"[A-Za-z0-9_.-]{1,36}", target) or parts.get("readonly", "no") not in ("yes", "no"):
        raise ValueError("is not source=/HOST/DIR,target=TAG[,readonly=yes] (TAG: 1-36 letters, digits, '.', '_' or '-')")
    return Filesystem(check_path("filesystem.source", parts.get("source", "")), target,
                      parts.get("readonly") == "yes")


SETTINGS = (
    Setting(name="filesystem", repeatable=True, parse=parse_filesystem, metavar="SPEC", implies=("host-filesystem",),
            spec={"source": "dir", "target": (), "readonly": ("yes", "no")},
            example="source=/srv/data,target=data,readonly=yes",
            help="Share a host directory with the guest through virtiofs: source=/DIR,target=TAG[,readonly=yes]."),
)


def apply_host_filesystem(domain, ctx) -> None:
    shares = ctx.settings.filesystem
    if not shares:
        ctx.note("host-filesystem: no directory to share was given "
                 "(--filesystem source=/HOST/DIR,target=TAG): nothing is shared")
        return
    devices = domain.ensure("devices")
    for fs in shares:
        el = devices.add("filesystem", type="mount", accessmode="passthrough")
        el.ensure("driver").set(type="virtiofs")
        el.ensure("source").set(dir=fs.source)
        el.ensure("target").set(dir=fs.target)
        if fs.readonly:
            el.ensure("readonly")
    backing = domain.ensure("memoryBacking")
    offered = ctx.host.enums.get("memoryBacking.sourceType")
    source = "memfd"
    if offered and "memfd" not in offered:
        source = "file"
        ctx.note("host-filesystem: the host offers no memfd memory backing: guest memory is "
                 "shared through a file instead")
    backing.ensure("source").set(type=source)
    backing.ensure("access").set(mode="shared")


FEATURES = (
    Feature(
        name="host-filesystem",
        summary="host directories shared through virtiofs",
        category="host filesystem",
        validators=("virtiofsd",),
        details="<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/> per "
                "--filesystem; <memoryBacking><source type='memfd'/><access mode='shared'/>",
        apply=apply_host_filesystem,
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)


@hookimpl
def vscen_register_settings(register):
    for setting in SETTINGS:
        register(setting)
