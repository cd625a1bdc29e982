"""What vscen remembers between runs, in ``$XDG_CACHE_HOME/vscen`` (``~/.cache/vscen``).

Each cache holds what it was computed from and is used only while that is unchanged; one
that cannot be read or is corrupt is ignored, one that cannot be written is not needed:
a cache never changes what vscen does, only how long it takes. ``VSCEN_NO_CACHE=1`` turns
them all off. Files are written atomically (a temporary file, then renamed).

- ``entry-points-*.marshal``: the plugins' entry points (``vscen.plugincache``);
- ``registrations-*.marshal``: what the static plugins registered, so that a plugin is
  imported only when one of its functions is called (``vscen.regcache``);
- ``dataclass-code-*.marshal``: the code ``dataclasses`` generates, per command (``vscen.cli.codecache``);
- ``modules-*.marshal``: the code of the modules of vscen and its plugins a command imports,
  one file per command (``vscen.cli.bundle``);
- ``schema.marshal``: what libvirt's RelaxNG schema gave for the installed schema files (read
  from their identities) and libxml2 version: the domain XMLs it found valid (the last few,
  compared whole), and the values it lists for an attribute (``vscen.Support``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

#: set to anything but "" or "0" to neither read nor write a cache
OFF_ENV = "VSCEN_NO_CACHE"
#: seconds: nothing is cached while what it depends on changed more recently than this (a
#: change within the same clock tick would go unseen)
RECENT = 3.0
#: domain XMLs remembered as valid
VALID_KEPT = 16


def enabled() -> bool:
    return os.environ.get(OFF_ENV, "") in ("", "0")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vscen"


def stat(path: str) -> list[int] | None:
    """A file's identity: device, inode, modification time (ns), size; None if absent."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size]


def recent(stats) -> bool:
    """Whether one of *stats* (``stat()`` results) changed within the last RECENT seconds."""
    now = time.time_ns()
    return any(s is not None and now - s[2] < RECENT * 1e9 for s in stats)


def read_data(path: Path):
    """The data (dicts, lists, strings, numbers: what ``marshal`` keeps) in *path*, or None
    where it cannot be read or parsed. marshal, not JSON: the ``json`` module alone costs a
    command more to import than reading every cache does."""
    if not enabled():
        return None
    try:
        import marshal

        with open(path, "rb") as f:
            return marshal.loads(f.read())  # marshal.load(f) reads a file piece by piece: 7x slower
    except Exception:  # absent, unreadable, corrupt: as good as none
        return None


def write_data(path: Path, data) -> None:
    """Write *data* to *path* atomically; a failure is ignored (a cache is never needed)."""
    if enabled():
        import marshal

        write_bytes(path, marshal.dumps(data))


def write_bytes(path: Path, data: bytes) -> None:
    """Write *data* to the cache file *path* atomically (through a temporary file and a
    rename); a failure is ignored (a cache is never needed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the user's own, as their guests' XML
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except Exception:
        pass
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


# -------------------------------------------------------------------------------------------
# libvirt's schema
# -------------------------------------------------------------------------------------------


def _schema_key(directory: Path) -> dict | None:
    from lxml import etree

    try:
        with os.scandir(directory) as it:
            files = sorted((e.name, stat(e.path)) for e in it if e.name.endswith(".rng"))
    except OSError:
        return None
    if recent(s for _, s in files):
        return None
    return {"dir": str(directory), "libxml2": list(etree.LIBXML_VERSION), "files": files}


_SCHEMA = {"key": None, "data": None}


def _schema_data(directory: Path) -> tuple[dict | None, dict]:
    """(key, cached data) for the schema files in *directory*: key None where they cannot be
    cached (they changed just now); data empty where the cache does not match."""
    key = _schema_key(directory)
    if key is None:
        return None, {}
    if _SCHEMA["key"] != key:
        data = read_data(cache_dir() / "schema.marshal")
        if not isinstance(data, dict) or data.get("key") != key:
            data = {}
        _SCHEMA["key"], _SCHEMA["data"] = key, data
    return key, _SCHEMA["data"]


def _save_schema(key: dict, data: dict) -> None:
    data["key"] = key
    write_data(cache_dir() / "schema.marshal", data)


def known_valid(directory: Path, xml_text: str) -> bool:
    """Whether *xml_text* was found valid against the schema files in *directory* as they are."""
    _, data = _schema_data(directory)
    valid = data.get("valid")
    return isinstance(valid, list) and xml_text in valid


def remember_valid(directory: Path, xml_text: str) -> None:
    key, data = _schema_data(directory)
    if key is None:
        return
    valid = data.get("valid") if isinstance(data.get("valid"), list) else []
    data["valid"] = [xml_text, *(v for v in valid if v != xml_text)][:VALID_KEPT]
    _save_schema(key, data)


def schema_values(rng: Path, element: str, attribute: str, compute) -> frozenset[str]:
    """``compute()``: the values the schema at *rng* lists for *attribute* of *element*,
    remembered for the schema files as they are."""
    key, data = _schema_data(rng.parent)
    name = f"{rng.name}:{element}/@{attribute}"
    values = data.get("values") if isinstance(data.get("values"), dict) else {}
    found = values.get(name)
    if isinstance(found, list) and all(isinstance(v, str) for v in found):
        return frozenset(found)
    result = compute()
    if key is not None:
        data["values"] = {**values, name: sorted(result)}
        _save_schema(key, data)
    return result
