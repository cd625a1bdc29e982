"""The disk-encryption passphrase: read from an owner-only file, an environment variable or
a prompt, only when a step needs it. It is never put on a command line, in a log, in the XML,
the journal or any file of vscen's; it goes to libvirt's secret store through the API only.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from vscen.errors import UsageError

ENV = "VSCEN_DISK_PASSPHRASE"
_cache: dict = {}


def secret_uuid(path: str) -> str:
    """The UUID of the libvirt secret of the encrypted disk at *path*: derived from the path,
    so that the domain XML (which names it) is deterministic and the host action that defines
    the secret agrees with the feature that writes the disk."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, "vscen:" + path))


def default_source(passphrase_file: Path | None):
    if passphrase_file is not None:
        return ("file", str(passphrase_file))
    if os.environ.get(ENV):
        return ("env", ENV)
    return ("prompt", None)


def passphrase(source) -> bytes:
    """The passphrase from *source* (see ``default_source``), read once per process."""
    if source in _cache:
        return _cache[source]
    kind, where = source
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
