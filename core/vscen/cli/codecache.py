"""The code that ``dataclasses`` generates, compiled once and kept between runs.

Python caches a module's bytecode (``.pyc``) but not the methods ``@dataclass`` writes as
source and compiles anew for every class in every process (``__init__``, ``__eq__``,
``__repr__``, ...): for the few dozen dataclasses a ``vscen`` command defines, that parsing
and compiling is about a quarter of its start-up. The command line (an application, not the
library) keeps the code objects compiled from each exact source text in
``$XDG_CACHE_HOME/vscen/dataclass-code-<magic>-<id>.marshal``, one file per command,
interpreter and ``sys.path`` as the modules' bundle (``vscen.cli.bundle``), so that a command
reads the code of its own classes only: the same text compiles to the same code, so nothing
changes but the time. Installed only where ``dataclasses`` has the one
function it replaces, as it is written in CPython 3.10 and 3.11; elsewhere, and
with ``VSCEN_NO_CACHE=1``, nothing is done.
"""

from __future__ import annotations

import dataclasses
import sys

#: source texts kept at most (the commands' dataclasses are well under this)
KEPT = 2000

_CODE: dict = {}
_NEW: dict = {}
_ARGS = ("name", "args", "body", "globals", "locals", "return_type")


def _path(command: str | None):
    import importlib.util

    from vscen.cache import cache_dir
    from vscen.cli.bundle import ident

    return cache_dir() / f"dataclass-code-{importlib.util.MAGIC_NUMBER.hex()}-{ident(command)}.marshal"


def install(command: str | None = None) -> bool:
    """Serve dataclasses' generated code from the cache of *command* (the first word of the
    command line); False where it cannot be done."""
    from vscen import cache

    original = getattr(dataclasses, "_create_fn", None)
    code = getattr(original, "__code__", None)
    if (code is None or code.co_varnames[:len(_ARGS)] != _ARGS or sys.version_info[:2] not in ((3, 10), (3, 11))
            or "->_return_type" not in code.co_consts or getattr(original, "_vscen_cached", False)
            or not cache.enabled()):
        return False
    path = _path(command)
    loaded = cache.read_data(path)  # None where absent, unreadable or corrupt: compile as Python does
    if isinstance(loaded, dict):
        _CODE.update((k, v) for k, v in loaded.items() if isinstance(k, str) and type(v) is type(code))
    dataclasses._create_fn = _create_fn
    import atexit

    atexit.register(_save, path)
    return True


def _create_fn(name, args, body, *, globals=None, locals=None, return_type=dataclasses.MISSING):
    # dataclasses._create_fn of CPython 3.10 and 3.11, the compile step remembered
    if locals is None:
        locals = {}
    return_annotation = ""
    if return_type is not dataclasses.MISSING:
        locals["_return_type"] = return_type
        return_annotation = "->_return_type"
    args = ",".join(args)
    body = "\n".join(f"  {b}" for b in body)
    txt = f" def {name}({args}){return_annotation}:\n{body}"
    local_vars = ", ".join(locals.keys())
    txt = f"def __create_fn__({local_vars}):\n{txt}\n return {name}"
    code = _CODE.get(txt)
    if code is None:
        code = _CODE[txt] = _NEW[txt] = compile(txt, "<string>", "exec")
    ns = {}
    exec(code, globals, ns)
    return ns["__create_fn__"](**locals)


_create_fn._vscen_cached = True


def _save(path) -> None:
    if not _NEW:
        return
    from vscen.cache import write_data

    write_data(path, dict(list(_CODE.items())[-KEPT:]))
