"""The config files: the system's, the user's and ``--config FILE``, each a TOML table of
settings (``[disk]`` for the disks' keys), read and checked before any value is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vscen.errors import UsageError, shown

SYSTEM_CONFIG = Path("/etc/vscen/config.toml")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if isinstance(value, dict) and key == "disk":
            out.update(flatten(value, "disk."))
        else:
            out[prefix + key] = value
    return out


def load_config(path: Path, required: bool) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        if required:
            raise UsageError(f"--config: '{path}' does not exist") from None
        return {}
    except OSError as exc:
        raise UsageError(f"config {path}: cannot read it ({exc.strerror})") from None
    import tomllib  # only for a file that exists: most machines have none, and it costs start-up

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"config {path}: not UTF-8 text (a TOML file is UTF-8)") from None
    except RecursionError:
        raise UsageError(f"config {path}: nested too deeply to be a vscen config") from None
    values = flatten(data)
    for key, value in values.items():
        problem = _config_type_problem(key, value)
        if problem:
            raise UsageError(f"{key}: {shown(value)} in config {path} {problem}")
    return values


#: the core's keys and the TOML types each takes (plugins' keys are checked by their Setting)
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "memory": (str, int), "vcpu": (int, str), "machine": (str,), "boot": (str, list),
    "arch": (str,), "virt_type": (str,), "firmware": (str,), "cdrom": (str,), "network": (str,),
    "graphics": (str,), "connect": (str,), "output": (str,), "transient": (bool, str),
    "disk.size": (str, int), "disk.cluster_size": (str, int),
}
_TYPE_NAMES = {str: "a string", int: "a whole number", list: "a list of strings", bool: "true or false"}


def _config_type_problem(key: str, value: Any) -> str:
    """Why *value* cannot be the config key *key* ('' where it can): the core's keys take
    strings (some numbers), and nothing nests deeper than a table of lists of values."""
    if key.startswith("disk.") and key not in _CONFIG_TYPES:
        types: tuple[type, ...] = (str, bool, int)
    else:
        types = _CONFIG_TYPES.get(key, ())
    if types:
        if isinstance(value, bool) and bool not in types:
            return "must be " + " or ".join(_TYPE_NAMES[t] for t in types)
        if not isinstance(value, types) or (isinstance(value, list) and not all(isinstance(v, str) for v in value)):
            return "must be " + " or ".join(_TYPE_NAMES[t] for t in types)
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        return "must be a value or a list of values, not nested lists or tables"
    if isinstance(value, dict):
        return "must be a value, not a table"
    return ""


def config_layers(explicit: Path | None) -> list[tuple[str, dict[str, Any]]]:
    """(label, values) of the config files in precedence order, lowest first."""
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    layers = [(f"config {SYSTEM_CONFIG}", load_config(SYSTEM_CONFIG, False)),
              (f"config {xdg / 'vscen/config.toml'}", load_config(xdg / "vscen/config.toml", False))]
    if explicit is not None:
        layers.append((f"config {explicit}", load_config(explicit, True)))
    return layers


def config_value(key: str, explicit: Path | None = None):
    """The value of a non-guest key (``output``, ``connect``...) from the config files, the
    highest-precedence one that sets it, or None."""
    value = None
    for _, values in config_layers(explicit):
        value = values.get(key, value)
    return value
