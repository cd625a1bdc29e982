"""The libvirt secret of an encrypted disk, named the same by the feature that writes the disk
into the domain XML and by the host action that defines the secret.

Reading the passphrase belongs to the volumes plugin (``vscen_volumes.encryption``), its only
user; vscen itself never sees it.
"""

from __future__ import annotations


def secret_uuid(path: str) -> str:
    """The UUID of the libvirt secret of the encrypted disk at *path*: derived from the path,
    so that the domain XML (which names it) is deterministic and the host action that defines
    the secret agrees with the feature that writes the disk."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, "vscen:" + path))
