"""What the shell's parts share: its error output, completion of paths and specs, and the
small text helpers."""

from __future__ import annotations

import os
import sys
from typing import Any

from vscen.cli.shell.keys import Key, long_option


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _error(exc) -> None:
    """A VscenError as ``vscen`` prints it: one line, or a summary and its problems."""
    from vscen.cli.common import STATE

    if STATE["debug"]:
        import traceback

        traceback.print_exception(exc)
    if getattr(exc, "summary", "") and len(exc.problems) > 1:
        _err(f"error: {exc.summary} ({len(exc.problems)} problems):")
        for problem in exc.problems:
            _err(f"  - {problem}")
    else:
        _err(f"error: {exc}")


def _usage(message: str):
    from vscen.errors import UsageError

    return UsageError(message)


def _split_features(tokens) -> tuple[list[str], list[str]]:
    add = [t[1:] for t in tokens if t.startswith("+")]
    remove = [t[1:] for t in tokens if t.startswith("-")]
    return add, remove


def _abspath(value: str) -> str:
    return os.path.abspath(os.path.expanduser(value))


def _size(kib: int) -> str:
    for unit, scale in (("TiB", 1 << 30), ("GiB", 1 << 20), ("MiB", 1 << 10)):
        if kib >= scale:
            return f"{kib / scale:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{kib} KiB"


# ------------------------------------------------------------------------------------------
# completion helpers (pure functions)
# ------------------------------------------------------------------------------------------


def complete_path(text: str, dirs_only: bool = False) -> list[str]:
    """Paths starting with *text* (``~`` kept as typed); directories end in ``/``, files in a
    space (the word is done)."""
    import glob

    expanded = os.path.expanduser(text)
    out = []
    for path in sorted(glob.glob(glob.escape(expanded) + "*")):
        shown = text + path[len(expanded):]
        if os.path.isdir(path):
            out.append(shown + "/")
        elif not dirs_only:
            out.append(shown + " ")
    return out


def complete_spec(text: str, keys: dict[str, Any], bare: tuple[str, ...] = ()) -> list[str]:
    """Complete the last ``KEY=VALUE`` of a comma-separated spec: *keys* maps each key to its
    values (a tuple of choices, "path", "dir" or None); *bare* are words allowed alone first."""
    head, comma, seg = text.rpartition(",")
    prefix = head + comma
    if "=" not in seg:
        words = [f"{k}=" for k in keys] + ([f"{b} " for b in bare] if not prefix else [])
        return [prefix + w for w in words if w.startswith(seg)]
    key, _, value = seg.partition("=")
    values = keys.get(key)
    if values in ("path", "dir"):
        found = complete_path(value, dirs_only=values == "dir")
        return [f"{prefix}{key}={p.rstrip(' ')}" for p in found]
    return [f"{prefix}{key}={v}" for v in values or () if v.startswith(value)]


def _shown(value) -> str:
    """A plugin's parsed value for ``show``: what the user would type where it is a plain one."""
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool)):
        return str(value)
    fields = getattr(value, "__dataclass_fields__", None)
    if fields:
        return ",".join(f"{k}={getattr(value, k)}" for k in fields)
    return str(value)


def _opt(option: str, value) -> list[str]:
    value = str(value)
    # a value starting with '-' (--feature -tpm) must not read as an option
    return [f"{option}={value}"] if value.startswith("-") else [option, value]


def _flags(arg: str, allowed: tuple[str, ...]) -> bool:
    bad = [w for w in arg.split() if w not in allowed]
    if bad:
        _err(f"error: '{bad[0]}' is not one of {', '.join(allowed)} here")
    return not bad


def _check_set(item: str) -> None:
    """``XPATH=VALUE`` as ``--set`` takes it (whether it matches is known once built)."""
    from vscen.domain.customise import parse_set

    parse_set(item)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _suggest(word: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _where(key: Key) -> str:
    if not key.param:
        return f"vscen run --disk {key.name[5:]}=VALUE (every disk; a --disk spec's own value wins)"
    if key.kind == "names":
        return "vscen run SCENARIOS..."
    return f"vscen run {long_option(key.param)}" + (" (repeatable)" if key.kind == "list" else "")


def _dedent(doc: str | None) -> str:
    import inspect

    return inspect.cleandoc(doc or "")


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def commands_of(cls) -> list[tuple[str, str]]:
    """(usage, first sentence) of every ``do_*`` command of *cls*, from the docstrings."""
    rows = []
    for name in sorted(n for n in dir(cls) if n.startswith("do_") and n not in ("do_EOF", "do_exit")):
        doc = _dedent(getattr(cls, name).__doc__)
        usage, _, text = doc.partition("\n\n")
        first = " ".join(text.split()).split(". ")[0].rstrip(".") + "."
        rows.append((usage.strip(), first))
    return rows
