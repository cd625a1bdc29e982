"""Writing files safely: whole or not at all; and the SHA-256 of what vscen made."""

from __future__ import annotations

import os
from pathlib import Path

#: tries at a free temporary name before giving up (each name has 48 random bits)
TRIES = 100


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write *text* to *path* through a temporary file and rename: never half-written."""
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _temporary(path: Path) -> tuple[int, str]:
    """A new private file beside *path* (``.NAME.RANDOM``, 0600), created exclusively, not
    following a symlink: what ``tempfile.mkstemp`` makes, without importing ``tempfile`` and
    ``random`` in every command that writes a file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(TRIES):
        tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name} after {TRIES} tries")


def sha256(data: bytes = b""):
    """A new SHA-256 hash object of *data*, as ``hashlib.sha256(data)``: Python's own
    implementation where it has one, without loading OpenSSL, which ``import hashlib`` does
    (5 ms, for one digest a command)."""
    try:
        from _sha256 import sha256 as new  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256 as new  # CPython 3.12 and later
        except ImportError:
            from hashlib import sha256 as new
    return new(data)
