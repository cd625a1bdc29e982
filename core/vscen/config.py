"""The config files: the system's, the user's and ``--config FILE``, each a TOML table of
settings (``[disk]`` for the disks' keys) and of named hosts (``[hosts.NAME]``: ``uri``, and
optionally ``facts``, a recorded ``vscen host snapshot``), read and checked before any value is
used.
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
    hosts = data.pop("hosts", None)
    values = flatten(data)
    if hosts is not None:
        values["hosts"] = _hosts(hosts, path)
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


def _hosts(table: Any, path: Path) -> dict[str, dict[str, str]]:
    """The ``[hosts.NAME]`` tables of the config file at *path*, checked: NAME -> ``{"uri",
    "facts"?}``, a relative ``facts`` path taken from the config file's directory."""
    import re

    if not isinstance(table, dict):
        raise UsageError(f"hosts: {shown(table)} in config {path} must be tables [hosts.NAME] with a uri")
    out = {}
    for name, host in table.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            raise UsageError(f"hosts.{name}: in config {path}: a host name is 1-64 letters, digits, '.', '_' "
                             "or '-', starting with a letter or digit")
        if not isinstance(host, dict):
            raise UsageError(f"hosts.{name}: {shown(host)} in config {path} must be a table (uri = \"...\")")
        unknown = sorted(set(host) - set(HOST_KEYS))
        if unknown:
            raise UsageError(f"hosts.{name}.{unknown[0]}: in config {path} is not a host key; "
                             f"known keys are {', '.join(HOST_KEYS)}")
        for key in HOST_KEYS:
            value = host.get(key)
            if key == "uri" and value is None:
                raise UsageError(f"hosts.{name}: in config {path} has no uri (uri = \"qemu+ssh://root@{name}/system\")")
            if value is not None and (not isinstance(value, str) or not value.strip() or "\0" in value):
                raise UsageError(f"hosts.{name}.{key}: {shown(value)} in config {path} must be a non-empty string")
        entry = {"uri": host["uri"]}
        if "facts" in host:
            entry["facts"] = str(path.parent / Path(host["facts"]).expanduser())
        out[name] = entry
    return out


#: the keys of a named host (``[hosts.NAME]``)
HOST_KEYS = ("uri", "facts")


def _config_type_problem(key: str, value: Any) -> str:
    """Why *value* cannot be the config key *key* ('' where it can): the core's keys take
    strings (some numbers), and nothing nests deeper than a table of lists of values."""
    if key == "hosts":
        return ""  # checked by _hosts
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


def named_hosts(explicit: Path | None = None) -> dict[str, dict[str, str]]:
    """The named hosts of the config files (``[hosts.NAME]``), a higher-precedence file's
    NAME replacing a lower one's: NAME -> ``{"uri", "facts"?}``, sorted by name."""
    hosts: dict[str, dict[str, str]] = {}
    for _, values in config_layers(explicit):
        hosts.update(values.get("hosts", {}))
    return dict(sorted(hosts.items()))
