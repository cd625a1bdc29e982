"""The entry points of the group ``vscen``, remembered between runs.

``importlib_metadata`` finds them by reading every installed distribution's metadata: the
more distributions an environment has, the longer each ``vscen`` command takes to start. The
entry points found are kept in ``$XDG_CACHE_HOME/vscen`` (``~/.cache/vscen``), one file per
interpreter and ``sys.path``, with what they were read from:

- every ``sys.path`` entry's identity (device, inode, modification time, size): installing,
  removing or re-installing a distribution (``pip install -e .`` after a new entry point too)
  adds or removes a directory in one of them, which changes its modification time;
- the ``entry_points.txt`` of each distribution that declares a ``vscen`` entry point, and of
  every ``.egg-info`` (setuptools rewrites those in place).

The cache is used only while all of that is unchanged; a cache that cannot be read, is
corrupt, or was made by another interpreter or format is ignored (and rewritten); one that
cannot be written is not needed (``vscen.cache``). Nothing is cached while one of those times
is within the last few seconds (a change within the same clock tick would go unseen). What
the plugins register is kept apart, for the plugins that say it is static, each watched through
its own files (``vscen.regcache``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vscen.cache import cache_dir, enabled, read_data, recent, write_data
from vscen.cache import stat as _stat

FORMAT = 1




def _usable() -> bool:
    """Whether distributions can come only from ``sys.path`` (the standard finders): another
    finder on ``sys.meta_path`` could find them anywhere, and the cache could not tell."""
    if not enabled():
        return False
    for finder in sys.meta_path:
        if getattr(finder, "find_distributions", None) is None:
            continue
        kind = finder if isinstance(finder, type) else type(finder)
        if (kind.__module__, kind.__name__) not in (("_frozen_importlib_external", "PathFinder"),
                                                   ("importlib_metadata", "MetadataPathFinder")):
            return False
    return True


def _file(group: str) -> Path:
    import zlib

    ident = repr((FORMAT, group, sys.version, sys.executable, sys.path, os.getcwd() if "" in sys.path else ""))
    return cache_dir() / f"entry-points-{zlib.crc32(ident.encode()):08x}.marshal"


def _key() -> dict:
    paths = [p or "." for p in sys.path]
    return {"sys_path": list(sys.path), "version": sys.version, "executable": sys.executable,
            "stats": [_stat(p) for p in paths]}


def _unchanged(files: dict[str, list[int] | None]) -> bool:
    return all(_stat(path) == stat for path, stat in files.items())


def read(group: str) -> list[dict] | None:
    """The cached entry points of *group* (name, value, distribution, version), or None where
    there is no usable cache."""
    if not _usable():
        return None
    try:
        data = read_data(_file(group))
        if data["format"] != FORMAT or data["key"] != _key() or not _unchanged(data["files"]):
            return None
        entries = data["entry_points"]
        if all(isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("name", "value", "distribution",
                                                                              "version")) for e in entries):
            return entries
    except Exception:  # unreadable, corrupt, another shape: as good as none
        pass
    return None


def discover(group: str) -> list:
    """``importlib_metadata``'s entry points of *group*, sorted by name; written to the cache
    for the next run. Each has the ``name``, ``value`` and ``dist`` of an EntryPoint."""
    import importlib_metadata

    key = _key() if _usable() else None
    found = sorted(importlib_metadata.entry_points(group=group), key=lambda e: e.name)
    if key is not None:
        try:
            _write(group, key, found)
        except Exception:  # a cache is never required
            pass
    return found


def _write(group: str, key: dict, found: list) -> None:
    files: dict[str, list[int] | None] = {}
    entries = []
    for ep in found:
        dist = ep.dist
        path = getattr(dist, "_path", None)
        if path is None:
            return  # a distribution not in a directory: nothing to watch
        files[os.path.join(str(path), "entry_points.txt")] = None
        entries.append({"name": ep.name, "value": ep.value, "distribution": dist.metadata["Name"] or "?",
                        "version": dist.version or "?"})
    for entry in key["sys_path"]:
        try:
            with os.scandir(entry or ".") as it:
                for item in it:
                    if item.name.endswith(".egg-info") and item.is_dir():
                        files[os.path.join(item.path, "entry_points.txt")] = None
        except OSError:
            continue
    files = {path: _stat(path) for path in files}
    if recent([*key["stats"], *files.values()]) or key != _key():
        return  # something changed just now, or while we read: the next run writes it
    write_data(_file(group), {"format": FORMAT, "key": key, "files": files, "entry_points": entries})


class CachedEntryPoint:
    """An entry point from the cache: what ``get_plugin_manager`` asks of one."""

    __slots__ = ("name", "value", "distribution", "version")

    def __init__(self, name: str, value: str, distribution: str, version: str):
        self.name, self.value, self.distribution, self.version = name, value, distribution, version

    dist = None

    def load(self):
        """As ``importlib_metadata.EntryPoint.load``: import the module, follow the attributes."""
        import importlib

        module, _, attrs = self.value.partition(":")
        obj = importlib.import_module(module.partition("[")[0].strip())
        for attr in filter(None, attrs.partition("[")[0].strip().split(".")):
            obj = getattr(obj, attr)
        return obj


def entry_points(group: str) -> list:
    """The entry points of *group*, sorted by name: from the cache where it is current, else
    from ``importlib_metadata`` (and the cache written)."""
    cached = read(group)
    if cached is not None:
        return [CachedEntryPoint(e["name"], e["value"], e["distribution"], e["version"]) for e in cached]
    return discover(group)
