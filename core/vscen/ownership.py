"""What undo needs to prove before it takes something back: that a record has the expected
shape, that a path lies where vscen writes (reached without a symlink), that a file is still
the one vscen wrote, and that a host setting is undone on the host where it was made.

A journal is input like any other: an edited one must not make ``vscen destroy`` delete,
overwrite or write anything vscen did not make. Every refusal is a VscenError with one line
naming the record and what is wrong: a record of the wrong shape or a path outside the places
vscen writes is a UsageError (exit 2: the journal is damaged or edited); a thing that is no
longer what vscen made is a VscenError (exit 1).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path

from vscen.errors import UsageError, VscenError


def check_record(record, fields: dict, what: str) -> dict:
    """*record* if each key of *fields* is there with a value of its type (a type or a tuple of
    types; a key ending in ``?`` may be missing); a VscenError naming *what* otherwise."""
    if not isinstance(record, dict):
        raise UsageError(f"{what}: the journal's record is a {type(record).__name__}, not an object; not touched")
    for key, kind in fields.items():
        optional = key.endswith("?")
        key = key.rstrip("?")
        if key not in record:
            if optional:
                continue
            raise UsageError(f"{what}: the journal's record has no '{key}'; not touched")
        value = record[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            allowed = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise UsageError(f"{what}: the journal's '{key}' is {type(value).__name__}, not {allowed}; not touched")
    return record


def safe_path(path, roots, what: str, pattern: str | None = None) -> Path:
    """*path* (a string from a journal) if it is absolute, normalised (no ``..``), inside one
    of *roots* (or one of them), its name matching *pattern* (fnmatch) where given, and no
    part of it below the root a symbolic link; a VscenError naming *what* otherwise."""
    if not isinstance(path, str) or not path or "\0" in path or len(path) > 4096:
        raise UsageError(f"{what}: the journal names no usable path ({path!r}); not touched")
    if not os.path.isabs(path) or os.path.normpath(path) != path or "/../" in f"{path}/":
        raise UsageError(f"{what}: {path} is not a plain absolute path (relative, or with '..'); not touched")
    p = Path(path)
    for root in map(Path, roots):
        if p == root or root in p.parents:
            break
    else:
        places = ", ".join(str(r) for r in roots)
        raise UsageError(f"{what}: {path} is outside the places vscen writes ({places}); not touched")
    if pattern and not fnmatch.fnmatch(p.name, pattern):
        raise UsageError(f"{what}: {path} is not a file vscen writes (named {pattern}); not touched")
    current = root
    for part in p.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise UsageError(f"{what}: {current} is a symbolic link; {path} not touched")
    return p


def file_identity(path) -> dict | None:
    """``{"dev", "ino", "size", "sha256"}`` of the regular file at *path* (not following a
    symlink), None where there is none."""
    from vscen.files import sha256

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VscenError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VscenError(f"{path} is not a regular file")
        digest = sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
    finally:
        os.close(fd)
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "sha256": digest.hexdigest()}


IDENTITY = {"dev": int, "ino": int, "size": int, "sha256": str}
#: the mark of the copy of a file vscen replaced, kept beside it as a hard link
BACKUP_MARK = ".vscen-previous-"


def replace_file(path, text: str, mode: int = 0o644) -> dict:
    """Write *text* to *path* atomically, keeping a file there before beside it as a hard link
    (``.NAME.vscen-previous-*``), so that undo puts back the very same file, never text from a
    journal. Returns the record's part: ``{"identity", "backup", "previous"}`` (the identities
    of the file written and of the one replaced, None where there was none)."""
    import uuid
    from pathlib import Path

    from vscen.files import atomic_write

    path = Path(path)
    before = file_identity(path)
    backup = None
    if before is not None:
        backup = path.with_name(f".{path.name}{BACKUP_MARK}{uuid.uuid4().hex[:12]}")
        os.link(path, backup)
    atomic_write(path, text, mode)
    return {"identity": file_identity(path), "backup": str(backup) if backup else None, "previous": before}


def restore_file(connection, record: dict, own, what: str, pattern: str) -> bool:
    """Take back what :func:`replace_file` did at *own* (the one path the record may name, as a
    ``safe_path`` *pattern* below its folder) on the host of the record's ``host`` (reached by
    *connection*; a file outlives a reboot): the file removed, or the one it replaced put back
    (the very same file, from its hard link), only while the file there is still the one vscen
    wrote. True when something was changed."""
    own = Path(own)
    check_record(record, {"path": str, "identity": dict, "backup?": (str, type(None)),
                          "previous?": (dict, type(None)), "host": dict}, what)
    path = safe_path(record["path"], [own.parent], what, pattern=pattern)
    if path != own:
        raise UsageError(f"{what}: the journal names {path}, not {own}: not touched")
    check_host(record["host"], connection, what)
    backup = record.get("backup")
    if backup:
        backup = safe_path(backup, [own.parent], what, pattern=f".{own.name}{BACKUP_MARK}*")
    same = same_file(path, record["identity"])
    if same is False:
        return False  # rewritten since (another guest's run): leave it to that one
    if backup is None or file_identity(backup) is None:
        if not same:
            return False
        path.unlink()
        return True
    if not same_file(backup, record.get("previous")):
        raise VscenError(f"{what}: {backup} is not the file vscen replaced; not touched")
    os.replace(backup, path)
    return True


def same_file(path, identity) -> bool | None:
    """Whether the file at *path* is still the one of *identity* (same device, inode, size and
    content); None where it is gone."""
    now = file_identity(path)
    if now is None:
        return None
    return isinstance(identity, dict) and all(now[k] == identity.get(k) for k in IDENTITY)


# -- hosts ----------------------------------------------------------------------------------------


def _read_id(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read(128).strip()
    except OSError:
        return ""


def host_identity(connection) -> dict:
    """Which host *connection* reaches: ``{"connection": "local"|"remote"|"test", "uri",
    "hostname", "machine_id", "boot_id"}`` (the ids of this machine for a local connection)."""
    kind = "test" if connection.is_test else "local" if connection.is_local else "remote"
    ident = {"connection": kind, "uri": connection.uri}
    if kind == "local":
        # os.uname's node name is what gethostname(2) returns, without importing socket
        ident.update(hostname=os.uname().nodename, machine_id=_read_id("/etc/machine-id"),
                     boot_id=_read_id("/proc/sys/kernel/random/boot_id"))
    elif kind == "remote":
        try:
            ident["hostname"] = connection.conn.getHostname()
        except Exception:  # noqa: BLE001 -- libvirt's errors; an unknown name is compared as such
            ident["hostname"] = ""
    return ident


def check_host(recorded, connection, what: str) -> bool:
    """Whether a host setting recorded on *recorded* (a ``host_identity``) can be undone through
    *connection*: True on the same host and boot; False on the same machine after a reboot (a
    runtime setting is gone with it); a VscenError for another host, a test driver, or a record
    without the host's identity."""
    if not isinstance(recorded, dict) or not recorded.get("connection"):
        raise VscenError(f"{what}: the journal does not say on which host it was made; not undone "
                         "(set it back yourself if needed)")
    if connection is None or connection.is_test or recorded.get("connection") == "test":
        uri = connection.uri if connection is not None else "no connection"
        raise VscenError(f"{what}: a host setting is never undone through {uri} (not a real host); not undone")
    now = host_identity(connection)
    keys = ("connection", "machine_id", "hostname") if now["connection"] == "local" else ("connection", "hostname")
    if any(not now.get(k) or recorded.get(k) != now.get(k) for k in keys):
        raise VscenError(f"{what}: made on host {recorded.get('hostname') or '?'} "
                         f"({recorded.get('connection')}), not on {now.get('hostname') or '?'} ({now['connection']}) "
                         f"reached by {connection.uri}; not undone")
    return now["connection"] != "local" or recorded.get("boot_id") == now.get("boot_id")
