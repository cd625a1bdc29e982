"""The journal of a guest: what vscen created or changed for it, one record per step, kept
beside the domain XML (``<output>/<name>/journal.json``).

It is written after every step, so whatever happens, it lists what exists because of vscen;
a failed run takes its own records back, and ``vscen destroy`` takes back all of them.

Writes are cheap and crash-safe: ``journal.json`` is the compacted state, rewritten atomically
(temporary file, fsync, rename) only at the end of a run or destroy; each step in between
appends one line to ``journal.log`` (``{"add": entry}`` or ``{"remove": seq}``) and fsyncs it,
so a destroy of N entries costs N small appends and one rewrite, and a crash at any point
leaves journal.json + log from which the next ``vscen destroy`` finishes. Replaying the log is
idempotent (entries have a unique ``seq``), so a crash between the rewrite and the removal of
the log loses nothing either.

A journal is refused unless vscen can trust it, as ssh refuses a key others could have
written: a regular file (no symlink, FIFO or device) in a real directory, both owned by the
user running vscen and writable by nobody else; bounded in size and nesting; every entry of
the expected shape. Every refusal is a one-line UsageError (exit 2) naming the file.

``GuestLock`` serialises the commands that change a guest (run, destroy, snapshot revert):
an ``flock`` on ``<output>/.<name>.lock``, taken before the journal is read.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

from vscen.errors import UsageError, VscenError

FILENAME = "journal.json"
LOGNAME = "journal.log"
#: bounds on what is read from a journal: it is input like any other
MAX_BYTES = 32 * 1024 * 1024
MAX_ENTRIES = 100_000
MAX_DEPTH = 12


class BusyError(VscenError):
    """Another vscen holds the guest's lock, and waiting for it was not asked for or timed out."""


def _open_private(path: Path, flags: int = os.O_RDONLY) -> int:
    """An fd on *path*, a regular file owned by this user and writable by no one else, reached
    without following a symlink and without blocking (a FIFO would)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        why = "is a symbolic link" if exc.errno == 40 else (exc.strerror or str(exc))
        raise UsageError(f"journal: {path} {why}; refused") from None
    try:
        st = os.fstat(fd)
        _check_owner(path, st, "file")
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"journal: {path} is not a regular file; refused")
        if st.st_size > MAX_BYTES:
            raise UsageError(f"journal: {path} is {st.st_size} bytes, more than a journal can be "
                             f"({MAX_BYTES}); refused")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_owner(path: Path, st: os.stat_result, what: str) -> None:
    if st.st_uid != os.geteuid():
        raise UsageError(f"journal: {path} is owned by uid {st.st_uid}, not by the user running vscen "
                         f"(uid {os.geteuid()}); refused")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"journal: {path} can be written by others (mode {stat.S_IMODE(st.st_mode):o}); "
                         f"refused (chmod go-w it if it is yours)")


def check_directory(directory: Path) -> None:
    """The guest's directory must be a real directory of this user, writable by no one else."""
    try:
        st = os.lstat(directory)
    except OSError as exc:
        raise UsageError(f"journal: cannot read {directory} ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"journal: {directory} is not a directory (a symbolic link?); refused")
    _check_owner(directory, st, "directory")


def _read(path: Path) -> bytes:
    fd = _open_private(path)
    try:
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_BYTES:
                raise UsageError(f"journal: {path} is larger than a journal can be ({MAX_BYTES} bytes); refused")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _depth(value, limit: int) -> bool:
    """Whether *value* nests no deeper than *limit* (iteratively: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > limit:
                return False
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return True


def _parse(path: Path, text: bytes, what: str):
    try:
        return json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"journal: {path}: {what} is not UTF-8; the journal is damaged") from None
    except RecursionError:
        raise UsageError(f"journal: {path}: {what} is nested too deeply; the journal is damaged") from None
    except ValueError as exc:
        raise UsageError(f"journal: {path}: {what} is not JSON ({exc}); the journal is damaged") from None


def check_entry(path: Path, entry, where: str) -> dict:
    """*entry* if it has the shape of a journal entry; a UsageError naming *path* otherwise."""
    if not isinstance(entry, dict):
        raise UsageError(f"journal: {path}: {where} is a {type(entry).__name__}, not an object")
    owner, record = entry.get("owner"), entry.get("record")
    if not isinstance(owner, str) or not owner or len(owner) > 128:
        raise UsageError(f"journal: {path}: {where} has no owner (a host action's name)")
    if not isinstance(record, dict):
        raise UsageError(f"journal: {path}: {where} ({owner}) has no record object")
    if not isinstance(entry.get("seq", 0), int) or isinstance(entry.get("seq"), bool):
        raise UsageError(f"journal: {path}: {where} ({owner}) has a seq that is not a number")
    if not _depth(record, MAX_DEPTH):
        raise UsageError(f"journal: {path}: {where} ({owner}) is nested deeper than {MAX_DEPTH} levels")
    return entry


class Journal:
    #: how many times the journal's files were written and fsynced (tests check destroy is linear)
    writes = 0

    def __init__(self, path: Path, name: str, uri: str, entries: list[dict] | None = None):
        self.path = Path(os.path.abspath(path))
        self.name = name
        self.uri = uri
        #: [{"owner": action or "vscen", "record": {...}, "seq": n}], oldest first
        self.entries: list[dict] = entries or []
        self._next = max((e.get("seq", 0) for e in self.entries), default=0) + 1
        for entry in self.entries:
            if "seq" not in entry:
                entry["seq"] = self._next
                self._next += 1

    @property
    def log_path(self) -> Path:
        return self.path.with_name(LOGNAME)

    @classmethod
    def open(cls, directory: Path, name: str, uri: str) -> Journal:
        path = Path(directory) / FILENAME
        if path.exists() or path.with_name(LOGNAME).exists() or path.is_symlink():
            return cls.load(path, name=name, uri=uri)
        return cls(path, name, uri)

    @classmethod
    def load(cls, path: Path, name: str | None = None, uri: str | None = None) -> Journal:
        """The journal at *path* (and its log), checked; a one-line UsageError otherwise."""
        path = Path(path)
        log = path.with_name(LOGNAME)
        check_directory(path.parent)
        try:
            data = _parse(path, _read(path), "its content")
        except FileNotFoundError:
            if not log.exists() and not log.is_symlink():
                raise UsageError(f"journal: {path} does not exist") from None
            data = {"name": name or path.parent.name, "uri": uri or "", "entries": []}
        if not isinstance(data, dict):
            raise UsageError(f"journal: {path} holds a {type(data).__name__}, not a journal object")
        for key, kind in (("name", str), ("uri", str), ("entries", list)):
            if key not in data:
                raise UsageError(f"journal: {path} has no '{key}'; the journal is damaged")
            if not isinstance(data[key], kind):
                raise UsageError(f"journal: {path}: '{key}' is a {type(data[key]).__name__}, not a {kind.__name__}")
        if len(data["entries"]) > MAX_ENTRIES:
            raise UsageError(f"journal: {path} has more than {MAX_ENTRIES} entries; refused")
        from vscen.settings import check_name

        try:
            check_name(data["name"])
        except UsageError as exc:
            raise UsageError(f"journal: {path}: its guest name is not valid ({exc})") from None
        if len(data["uri"]) > 1024 or any(ord(c) < 32 for c in data["uri"]):
            raise UsageError(f"journal: {path}: its uri is not a libvirt URI")
        entries = [check_entry(path, e, f"entry {i + 1}") for i, e in enumerate(data["entries"])]
        journal = cls(path, data["name"], data["uri"], entries)
        journal._replay()
        return journal

    def _replay(self) -> None:
        """Apply the log's lines to the compacted entries; a torn last line (a crash in the
        middle of an append) is ignored: its step was not journalled, so not done either."""
        try:
            text = _read(self.log_path)
        except FileNotFoundError:
            return
        lines = text.split(b"\n")
        by_seq = {e["seq"]: e for e in self.entries}
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                op = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                if n == len(lines):  # no newline after it: torn
                    break
                raise UsageError(f"journal: {self.log_path}: line {n} is not JSON; the journal is damaged") from None
            if isinstance(op, dict) and "add" in op:
                entry = check_entry(self.log_path, op["add"], f"line {n}")
                if not isinstance(entry.get("seq"), int):
                    raise UsageError(f"journal: {self.log_path}: line {n} has no seq")
                if entry["seq"] not in by_seq:
                    by_seq[entry["seq"]] = entry
                    self.entries.append(entry)
            elif isinstance(op, dict) and isinstance(op.get("remove"), int) and not isinstance(op["remove"], bool):
                gone = by_seq.pop(op["remove"], None)
                if gone is not None:
                    self.entries.remove(gone)
            else:
                raise UsageError(f"journal: {self.log_path}: line {n} is neither an add nor a remove")
            if len(self.entries) > MAX_ENTRIES:
                raise UsageError(f"journal: {self.log_path} has more than {MAX_ENTRIES} entries; refused")
        self._next = max([self._next, *by_seq]) + 1 if by_seq else self._next

    def reload(self) -> None:
        """Read the journal again (another run may have added to it), keeping this object."""
        if not (self.path.exists() or self.log_path.exists()):
            return
        other = Journal.load(self.path, name=self.name, uri=self.uri)
        self.entries, self._next = other.entries, other._next

    # -- writing -------------------------------------------------------------------------------

    def _append(self, op: dict) -> None:
        if not self.path.parent.is_dir():
            return  # its directory was taken back: nothing left to record
        line = (json.dumps(op, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
            Journal.writes += 1
        finally:
            os.close(fd)

    def add(self, owner: str, record: dict) -> dict:
        entry = {"owner": owner, "record": record, "seq": self._next}
        self._next += 1
        self.entries.append(entry)
        self._append({"add": entry})
        return entry

    def remove(self, entry: dict) -> None:
        # newest first is the usual order: look from the end, by identity, then by value
        for i in range(len(self.entries) - 1, -1, -1):
            if self.entries[i] is entry:
                del self.entries[i]
                break
        else:
            self.entries.remove(entry)
        if self.entries:
            self._append({"remove": entry["seq"]})
        else:
            self.save()

    def save(self) -> None:
        """Compact: journal.json holds every entry, the log goes (nothing at all when empty)."""
        from vscen.files import atomic_write

        if not self.entries:
            self.path.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)
            return
        if not self.path.parent.is_dir():
            return  # its directory was taken back: nothing left to record
        data = {"name": self.name, "uri": self.uri, "entries": self.entries}
        atomic_write(self.path, json.dumps(data, indent=2) + "\n", mode=0o600)
        Journal.writes += 1
        # only once journal.json holds them: replaying the log again would change nothing
        self.log_path.unlink(missing_ok=True)

    def compact(self) -> None:
        """Fold the log into journal.json, where there is a log."""
        if self.log_path.exists() or not self.entries:
            self.save()


# -- the guest's lock ----------------------------------------------------------------------------


def lock_path(directory: Path) -> Path:
    """The lock of the guest whose directory is *directory*: beside it, so that it can be taken
    before the directory exists and outlives its removal."""
    directory = Path(directory)
    return directory.parent / f".{directory.name}.lock"


class GuestLock:
    """An exclusive ``flock`` on the guest's lock file, waited for at most *wait* seconds (0: not
    at all); a BusyError once that is over. *notify* is told, once, that it waits."""

    #: how long the commands wait by default
    DEFAULT_WAIT = 60.0

    def __init__(self, directory: Path, wait: float | None = None, notify=None):
        self.directory = Path(directory)
        self.path = lock_path(self.directory)
        self.wait = self.DEFAULT_WAIT if wait is None else max(0.0, float(wait))
        self.notify = notify or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.fd: int | None = None
        self.depth = 0

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> GuestLock:
        import fcntl

        if self.fd is not None:
            self.depth += 1
            return self
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                raise VscenError(f"lock: {self.path.parent} does not exist") from None
            except OSError as exc:
                raise UsageError(f"lock: cannot open {self.path} ({exc.strerror}); refused") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise BusyError(
                        f"guest '{self.directory.name}' is busy: another vscen (run, destroy or snapshot) "
                        f"holds {self.path}" + (f"; waited {self.wait:g}s" if self.wait else "")
                        + "; try again later, or give --wait SECONDS") from None
                if not told:
                    self.notify(f"vscen: guest '{self.directory.name}' is busy (another vscen holds "
                                f"{self.path}); waiting up to {self.wait:g}s")
                    told = True
                time.sleep(0.05)
                continue
            # the holder may have removed the file (destroy): then this lock guards nothing
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                self.depth = 1
                return self
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        self.depth -= 1
        if self.depth > 0:
            return
        os.close(self.fd)
        self.fd = None

    def remove(self) -> None:
        """Remove the lock file (the guest is gone), still holding it."""
        if self.fd is not None:
            try:
                if os.path.samestat(os.fstat(self.fd), os.lstat(self.path)):
                    self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> GuestLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
