"""Named hosts and the facts of a host, for commands that work on several hosts.

A named host is a ``[hosts.NAME]`` table of the config files (``uri``, and optionally
``facts``: a recorded ``vscen host snapshot`` to plan from); ``vscen run --host NAME`` and
``vscen hosts`` use them, plugins' commands read them with ``vscen.named_hosts()``.
``read_host`` reads a host's facts once, as ``vscen host`` does: libvirt's capabilities and
domain capabilities (live or recorded) and every plugin's fact provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vscen.host.facts import HostFacts


@dataclass(frozen=True)
class NamedHost:
    """A ``[hosts.NAME]`` of the config files."""

    name: str
    uri: str
    #: recorded facts to plan from (a ``vscen host snapshot``); () for the live host
    facts: tuple[Path, ...] = ()


def named_hosts(config: Path | None = None) -> dict[str, NamedHost]:
    """The named hosts of the config files (and of *config*, ``--config``), by name."""
    from vscen.config import named_hosts as from_config

    return {name: NamedHost(name, h["uri"], (Path(h["facts"]),) if h.get("facts") else ())
            for name, h in from_config(config).items()}


def read_host(uri: str | None = None, facts=(), *, config: Path | None = None) -> HostFacts:
    """The facts of the host at libvirt *uri*, or recorded in the *facts* files (then *uri* is
    not opened), with every plugin's fact: a recorded one as recorded, the others read through
    the open connection (or unknown). A LibvirtError where *uri* cannot be opened, a UsageError
    for a file that is not host facts."""
    from vscen.guests import loaded
    from vscen.host.providers import read_provided

    pm, reg = loaded(config)
    if facts:
        from vscen.host.facts import load_files

        return read_provided(load_files([Path(f) for f in facts]), reg, pm=pm)
    from vscen.host.connect import open_connection

    if not uri:
        from vscen.errors import UsageError

        raise UsageError("host: give a libvirt URI or recorded facts")
    connection = open_connection(uri)
    try:
        return facts_of(connection, reg, pm)
    finally:
        connection.close()


def facts_of(connection, reg, pm=None) -> HostFacts:
    """The facts of the host an open *connection* reaches (the embedded driver's reference
    host, else a live probe), with every plugin's fact read through it (``vscen host``)."""
    from vscen.host.providers import read_provided

    if connection.is_test:
        from vscen.host.facts import reference

        host = reference()
    else:
        from vscen.host.probe import probe_default

        host = probe_default(connection)
    return read_provided(host, reg, connection=connection, pm=pm)
