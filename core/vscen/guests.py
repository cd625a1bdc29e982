"""The guests vscen made, found by their journals: what ``vscen destroy``, ``vscen status``
and plugins' commands (``vscen snapshot``) use to touch only vscen's own guests."""

from __future__ import annotations

from pathlib import Path

from vscen.errors import UsageError


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
