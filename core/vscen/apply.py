"""Apply a plan step by step, journalling each change; on any failure, take back what this
run did, newest first, so that a failed run leaves the host as it found it.

Taking back goes through the records only (the owner's ``undo(connection, record)``), the same
path ``vscen destroy`` takes later: what rollback does is what destroy does.
"""

from __future__ import annotations

from pathlib import Path

from vscen.errors import UsageError, VscenError
from vscen.steps import (  # noqa: F401 -- the core's steps, as callers have named them here
    CORE,
    METADATA_NS,
    UNDO,
    create_transient,
    define,
    digest,
    make_dirs,
    start,
    stored_digest,
    write_file,
)


def apply(plan, journal, connection, registry, progress=None, wait: float | None = None) -> list[dict]:
    """Run *plan*'s steps; returns the journal entries this run added.

    The guest's lock is held from the first step whose directory exists (the core's
    ``make_dirs`` step is safe to race) to the end; the journal is read again once it is held,
    so that records another run added meanwhile are kept. *wait*: seconds to wait for the lock
    (default ``GuestLock.DEFAULT_WAIT``)."""
    from vscen.journal import GuestLock

    lock = GuestLock(journal.path.parent, wait)
    added: list[dict] = []
    try:
        for i, step in enumerate(plan.steps, 1):
            if not lock.held and lock.path.parent.is_dir():
                _lock(lock, journal)
            if progress:
                progress(i, len(plan.steps), step)
            try:
                record = step.do()
            except BaseException as exc:
                problems = rollback(added, journal, connection, registry)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                msg = str(exc) if isinstance(exc, VscenError) else f"{type(exc).__name__}: {exc}"
                tail = f"; rolling back failed too: {'; '.join(problems)}" if problems else "; rolled back what this run did"
                cls = type(exc) if isinstance(exc, VscenError) else VscenError
                raise cls(f"{step.description}: {msg}{tail}") from exc
            if record:
                if not lock.held and lock.path.parent.is_dir():
                    _lock(lock, journal)
                added.append(journal.add(step.owner or CORE, record))
        if lock.held:
            journal.compact()
    finally:
        lock.release()
    return added


def _lock(lock, journal) -> None:
    lock.acquire()
    journal.reload()


def rollback(entries: list[dict], journal, connection, registry, keep_storage: bool = False,
             errors: list | None = None) -> list[str]:
    """Take back *entries*, newest first; returns what could not be taken back.

    Each entry taken back costs one append to the journal's log (not a rewrite of the
    journal), and the journal is compacted once at the end: linear in the entries. *errors*,
    where given, receives the exceptions behind the problems."""
    problems: list[str] = []
    dirs = []
    for entry in reversed(entries):
        if keep_storage and entry["record"].get("storage") is True:
            continue
        if _is_dirs(entry):
            dirs.append(entry)  # last: the guest's directory holds the journal of the rest
            continue
        _undo_one(entry, journal, connection, registry, problems, errors)
    if not any(not _is_dirs(e) for e in journal.entries):
        # two runs racing to make the directories may each have made part of them: deepest first
        for entry in sorted(dirs, key=_deepest, reverse=True):
            _undo_one(entry, journal, connection, registry, problems, errors)
    journal.compact()
    return problems


def _undo_one(entry, journal, connection, registry, problems: list[str], errors: list | None) -> None:
    try:
        undo_entry(entry, connection, registry, home=journal.path.parent)
        journal.remove(entry)
    except Exception as exc:  # keep taking back the rest; report what stays
        if errors is not None:
            errors.append(exc)
        kind = entry["record"].get("kind", "")
        problems.append(f"{entry['owner']} {kind if isinstance(kind, str) else ''}: {exc}".replace("\n", " "))


def _deepest(entry: dict) -> int:
    paths = entry["record"].get("paths")
    return max((len(p) for p in paths if isinstance(p, str)), default=0) if isinstance(paths, list) else 0


def _is_dirs(entry: dict) -> bool:
    return entry["owner"] == CORE and entry["record"].get("kind") == "dirs"


def undo_entry(entry: dict, connection, registry, home: Path | None = None) -> None:
    """Take back one journal entry; *home* is the guest's directory (where its journal is)."""
    owner, record = entry["owner"], entry["record"]
    if owner == CORE:
        kind = record.get("kind")
        undo = UNDO.get(kind) if isinstance(kind, str) else None
        if undo is None:
            raise UsageError(f"vscen: the journal's record kind {kind!r} is not one vscen writes; not touched")
        undo(connection, record, home)
        return
    action = registry.host_actions.get(owner) if registry else None
    if action is None:
        raise VscenError(f"no plugin provides host action '{owner}' to take back its record; not touched")
    action.undo(connection, record)
