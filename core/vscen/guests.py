"""The guests vscen made, found by their journals: what ``vscen destroy``, ``vscen status``
and plugins' commands (``vscen snapshot``) use to touch only vscen's own guests; and the
journalled path of ``vscen run`` and ``vscen destroy`` as functions, for commands that make or
remove many guests in one process (``render_guest``, ``run_guest``, ``destroy_guest``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from vscen.errors import UsageError

_LOADED: dict = {}
#: one render at a time in a process: the pipeline shares lxml's RelaxNG validator (whose error
#: log is its own) and the registry between threads; planning and applying run in parallel
_RENDERING = threading.Lock()


def loaded(config: Path | None = None):
    """(plugin manager, registry) for *config*, loaded once per process for these helpers."""
    key = str(config) if config is not None else None
    if key not in _LOADED:
        from vscen.registry import load

        _LOADED[key] = load(config)
    return _LOADED[key]


def _request(scenarios, features, remove, settings, disks=None, **kw):
    from vscen.config import flatten
    from vscen.pipeline import Request

    options = flatten(dict(settings or {}))
    return Request(scenarios=list(scenarios), add=list(features), remove=list(remove), options=options,
                   disks=list(disks) if disks is not None else None, loaded=loaded(kw.get("config")), **kw)


def render_guest(scenarios, *, features=(), remove=(), settings: dict | None = None, disks=None,
                 host: Any = None, uri: str | None = None, config: Path | None = None):
    """The guest *scenarios* (+ *features*, - *remove*, with *settings* as a config file gives
    them: ``{"name": "a", "memory": "2GiB", "disk": {"size": "4GiB"}}``; *disks* as ``--disk``
    takes them, ``["none"]``) built for *host* (the
    facts ``read_host`` returns) to be defined on *uri*, checked as ``vscen run --dry-run``
    checks it: the rules, the host validators, libvirt's schema, the domain validators.
    Nothing is opened or changed. Returns the result (``.xml``, ``.checks``, ``.settings``,
    ``.resolution``, ``.warnings``); vscen's errors say why the guest cannot be had there."""
    from vscen.pipeline import render

    request = _request(scenarios, features, remove, settings, disks, facts=host, connect=uri, config=config)
    with _RENDERING:
        return render(request, keep_connection=False)


def run_guest(scenarios, *, features=(), remove=(), settings: dict | None = None, disks=None, uri: str | None = None,
              host_facts=(), output: Path | None = None, start: bool = False, force: bool = False,
              wait: float | None = 60.0, progress=None, config: Path | None = None) -> dict:
    """Make the guest as ``vscen run`` does (render, plan, apply step by step into the guest's
    journal, rolled back on failure), on *uri*, from recorded *host_facts* where given.
    Returns ``{"name", "connection", "applied": [step...], "unchanged": [...], "journal"}``:
    nothing applied when the guest exists as asked. *progress(i, total, step)* is told of
    each step."""
    from vscen.apply import apply
    from vscen.journal import Journal
    from vscen.pipeline import render
    from vscen.plan import make_plan, output_dir

    request = _request(scenarios, features, remove, settings, disks, host_facts=[Path(p) for p in host_facts],
                       connect=uri, force=force, config=config)
    with _RENDERING:
        result = render(request)
    try:
        plan = make_plan(result, output_dir(output, config), force=force, start=start)
        journal = Journal.open(plan.out_dir, result.settings.name, result.ctx.uri)
        apply(plan, journal, result.connection, result.ctx.registry, progress, wait=wait)
    finally:
        if result.connection is not None:
            result.connection.close()
    return {"name": result.settings.name, "connection": result.ctx.uri,
            "applied": [s.description for s in plan.steps], "unchanged": list(plan.unchanged),
            "journal": str(journal.path) if journal.entries else None}


def destroy_guest(name: str, *, output: Path | None = None, connect: str | None = None,
                  keep_storage: bool = False, wait: float | None = 60.0, notify=None, registry=None) -> tuple[int, int, Path]:
    """Remove what vscen made for guest *name*, newest first, as ``vscen destroy`` does
    (through *connect*, default the URI it was made on); returns (things removed, things kept,
    the journal's path). Raises a VscenError listing what could not be removed."""
    from vscen.apply import rollback
    from vscen.errors import VscenError, raise_all
    from vscen.host.connect import open_connection as _open
    from vscen.journal import GuestLock

    journal = guest_journal(name, output, command="destroy")
    path = journal.path
    lock = GuestLock(path.parent, wait, notify=notify)
    with lock:
        journal.reload()  # what another run added while this one waited
        reg = registry if registry is not None else loaded()[1]
        conn = _open(connect or journal.uri)
        try:
            total = len(journal.entries)
            errors: list = []
            problems = rollback(list(journal.entries), journal, conn, reg, keep_storage=keep_storage, errors=errors)
        finally:
            conn.close()
        if not journal.entries:
            lock.remove()
    if any(isinstance(e, UsageError) for e in errors):
        # records of the wrong shape, or naming what vscen does not write: an edited journal
        raise_all(UsageError, f"destroy {name}: {path} names what vscen did not make; those records were "
                  "not taken back", [f"{path}: {p}" for p in problems])
    raise_all(VscenError, f"destroy {name}: some things could not be removed", problems)
    kept = len(journal.entries)
    return total - kept, kept, path


def guest_journal(name: str, output: Path | None = None, command: str = "vscen"):
    """The journal (``.entries``: ``{"owner", "record"}`` dicts; ``.uri``; ``.name``) of guest
    *name* that vscen made under *output* (default: the config's output, else
    ``$XDG_DATA_HOME/vscen``); a UsageError naming *command* for any other guest."""
    from vscen.journal import FILENAME, LOGNAME, Journal
    from vscen.plan import output_dir
    from vscen.settings import check_name

    path = output_dir(output).absolute() / check_name(name) / FILENAME
    if not (path.exists() or path.is_symlink() or path.with_name(LOGNAME).exists()):
        raise UsageError(f"{command}: vscen made no guest '{name}' here (no {path}); it touches only its own guests")
    return Journal.load(path)


def guest_lock(name: str, output: Path | None = None, wait: float | None = None, notify=None):
    """The lock of guest *name* (a context manager): held by ``vscen run``, ``destroy`` and
    plugins' commands that change the guest (``vscen snapshot revert``), so that one waits for
    the other (at most *wait* seconds; then a ``busy`` VscenError). *notify* is told, once, that
    it waits (default: a line on stderr)."""
    from vscen.journal import GuestLock
    from vscen.plan import output_dir
    from vscen.settings import check_name

    return GuestLock(output_dir(output).absolute() / check_name(name), wait, notify)


def open_connection(uri: str | None):
    """A libvirt connection to *uri* (vscen's wrapper: ``.conn`` is libvirt's ``virConnect``,
    ``.uri``, ``.close()``); a LibvirtError saying why when it cannot be opened."""
    from vscen.host.connect import open_connection as _open

    return _open(uri)
