"""The ``encrypted-disk`` feature: LUKS-encrypted disks by default (the secure-vm scenario's),
wherever the connection can hold the libvirt secret that unlocks them.

It only settles a setting (``prepare``): every new qcow2 disk gets ``encrypt=yes``, which the
``storage`` feature writes as ``<encryption format='luks'>`` and the ``disk-encryption`` host
action makes (secret, then volume). With no passphrase given (``--passphrase-file``,
``$VSCEN_DISK_PASSPHRASE``), the key is a random one vscen generates when the step runs and
sends only to libvirt's private secret store (``private='yes'``: libvirt never gives it back);
``vscen destroy`` undefines that secret with the disk. Left as it is, each with a note:

- ``--no-encrypt-disk`` / ``--encrypt-disk`` (or ``[disk] encrypt`` in a config file): the
  user decided; a disk given ``encrypt=yes`` by ``--disk``: the user manages encryption per
  disk, so the others are left alone too;
- a connection without a secret store (libvirt's embedded ``test:///default`` driver has no
  secret driver: ``virSecretDefineXML`` is "not supported by the connection driver"), or no
  connection: no encryption;
- a raw disk (LUKS lives inside qcow2), an overlay (``backing=``), a disk that exists already
  (used as it is; vscen never converts a disk).
"""

from __future__ import annotations

from dataclasses import replace

#: the mark this feature leaves in ``settings.sources["disk.encrypt"]``: the encryption is the
#: default, not the user's request, so a missing passphrase means a random key, not a prompt
MARK = "(encrypted-disk)"


def secret_store(connection) -> bool | None:
    """Whether *connection* can hold libvirt secrets; None where there is no connection or it
    cannot tell."""
    if connection is None or getattr(connection, "conn", None) is None:
        return None
    import libvirt

    try:
        connection.conn.numOfSecrets()
    except libvirt.libvirtError as exc:
        return False if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT else None
    return True


def is_default(settings) -> bool:
    """Whether the disks' encryption is this feature's default (not asked for by the user)."""
    return settings.source("disk.encrypt").endswith(MARK)


def prepare(ctx) -> None:
    s = ctx.settings
    if not s.disks:
        return
    if s.level("disk.encrypt") == "user":
        if not any(d.get("encrypt") for d in s.disks):
            ctx.note(f"encrypted-disk: disks not encrypted (disk.encrypt = no, {s.source('disk.encrypt')})")
        return
    if any(d.get("encrypt") for d in s.disks):
        return  # encrypt=yes on a --disk: the user chose per disk
    store = secret_store(ctx.connection)
    if not store:
        where = ctx.uri or "no connection"
        why = ("keeps no libvirt secrets (the embedded test driver has no secret store)" if store is False
               else "cannot be asked whether it keeps libvirt secrets")
        ctx.note(f"encrypted-disk: {where} {why}: the disk is not encrypted; on a qemu:// connection "
                 "it is LUKS-encrypted with a key kept in libvirt's secret store (--no-encrypt-disk leaves it out)")
        return
    disks = list(s.disks)
    encrypted = []
    for i, disk in enumerate(disks):
        why = _unencryptable(ctx, s, i, disk)
        if why:
            ctx.note(f"encrypted-disk: disk {i + 1} not encrypted: {why}")
            continue
        disks[i] = replace(disk, extras={**disk.extras, "encrypt": True})
        encrypted.append(str(i + 1))
    if not encrypted:
        return
    who = ", ".join(f"scenario {sc.name}" for sc in ctx.resolution.scenarios if sc.features
                    and "encrypted-disk" in sc.features) or "feature encrypted-disk"
    ctx.settings = replace(s, disks=tuple(disks), sources={**s.sources, "disk.encrypt": f"{who} {MARK}"})
    key = ("the passphrase given" if s.get("passphrase_file") or _env_passphrase()
           else "a random key vscen generates, kept only in libvirt's private secret store")
    ctx.note(f"encrypted-disk: disk {', '.join(encrypted)} LUKS-encrypted; key: {key} (--no-encrypt-disk leaves it out)")


def _env_passphrase() -> bool:
    import os

    from vscen_volumes.encryption import ENV

    return bool(os.environ.get(ENV))


def _unencryptable(ctx, s, index: int, disk) -> str:
    if disk.format != "qcow2":
        src = s.source("disk.format")
        where = f" ({src})" if src != "default" else ""
        return f"it is {disk.format}{where}, and LUKS lives inside qcow2 (--disk format=qcow2 encrypts it)"
    if disk.backing:
        return "it is an overlay on a base image (backing=)"
    from vscen_volumes.images import Planner, existing_image

    path = s.disk_path(index)
    img = existing_image(Planner(ctx), path)
    if img is not None and not img.encrypted:
        return f"{path} exists unencrypted and is used as it is"
    return ""
