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
    value is the disk passphrase, read from ``ctx.passphrase_source`` inside the step only,
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

``encrypted-disk`` (a feature; the secure-vm scenario's)
    Encryption by default: every new qcow2 disk ``encrypt=yes`` where the connection holds
    libvirt secrets, the key a random one kept only in libvirt's private secret store when no
    passphrase is given; a note and no encryption on a connection without a secret store
    (``test:///default``), for raw disks, overlays and disks that exist; ``--no-encrypt-disk``
    leaves it out (see :mod:`vscen_volumes.default`).

Modules: ``images`` (the images found on the host, compared with the disks asked for; the
planner both actions share), ``pools``, ``volumes`` (the ``storage-volume`` action),
``encryption`` (the ``disk-encryption`` action and the passphrase) and ``default`` (the
``encrypted-disk`` feature).
"""

from __future__ import annotations

import re

from vscen import Feature, HostAction, Setting, VscenError, hookimpl
from vscen_volumes.encryption import plan_encryption, undo_secret
from vscen_volumes.images import ENCRYPTION, VOLUME, libvirt_error
from vscen_volumes.pools import undo_pool
from vscen_volumes.volumes import plan_volumes, undo_volume


def undo(connection, record: dict) -> None:
    """Take back one record of either action; what is gone already is fine."""
    import libvirt

    kind = record.get("kind") if isinstance(record, dict) else None
    handler = {"pool": undo_pool, "volume": undo_volume, "secret": undo_secret}.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise VscenError(f"volumes: no way to take back a record of kind '{kind}'")
    try:
        handler(connection, record)
    except libvirt.libvirtError as exc:
        raise libvirt_error(f"{kind} {record.get('name') or record.get('uuid')}: cannot take it back", exc) from None


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


def _prepare_encrypted_disk(ctx) -> None:
    from vscen_volumes.default import prepare

    prepare(ctx)


ENCRYPTED_DISK = Feature(
    name="encrypted-disk",
    summary="LUKS-encrypted disks by default where the connection keeps libvirt secrets",
    category="storage",
    requires=("storage",),
    prepare=_prepare_encrypted_disk,
    details="prepare: encrypt=yes on every new qcow2 disk when the connection has a libvirt secret "
            "store (not test:///default: a note, no encryption) and the user set no encryption "
            "(--encrypt-disk/--no-encrypt-disk, encrypt= on a --disk); the key is the passphrase "
            "given, else a random one kept only in libvirt's private secret store. Raw disks, "
            "overlays and existing disks are left as they are, with a note.",
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    register(ENCRYPTED_DISK)


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
    """The file's name, once it is known to be there and the owner's only (it is read only when
    the secret is made)."""
    import stat
    from pathlib import Path

    from vscen import UsageError

    if not value or "\0" in value:
        raise ValueError("is not a file name")
    path = Path(value).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise UsageError(f"passphrase-file: cannot read {path} ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"passphrase-file: {path} can be read by others; chmod 600 it")
    return path


SETTINGS = (
    Setting(name="pool", parse=_pool_name, metavar="NAME", example="fast-nvme",
            help="libvirt storage pool for new disks (default: the pool of their directory, made if none)."),
    Setting(name="disk.encrypt", flag=True, default=None, option="--encrypt-disk", example="yes", check=_qcow2_only,
            help="LUKS-encrypt new disks (qcow2); the passphrase comes from --passphrase-file, "
                 "$VSCEN_DISK_PASSPHRASE or a prompt (secure-vm encrypts by default, with a random "
                 "key kept in libvirt's secret store; --no-encrypt-disk leaves it out)."),
    Setting(name="passphrase_file", parse=_passphrase_file, metavar="FILE", example="~/.vault-pass",
            help="File holding the disk passphrase (mode 600): read only when the secret is made, never stored."),
)


@hookimpl
def vscen_register_settings(register):
    for setting in SETTINGS:
        register(setting)
