"""The ``vscen attest`` command group.

The commands are defined in ``session_cli.py`` (session, set-session) and ``verify_cli.py``
(launch, inject, verify), and loaded only when a command of the group is looked up: building
vscen's command line (``vscen run secure-vm`` and every other command) imports neither of
them, nor ``cryptography``.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

#: each command and the module that defines it, in the order ``vscen attest --help`` lists them
COMMANDS = {"session": "session_cli", "set-session": "session_cli", "launch": "verify_cli",
            "inject": "verify_cli", "verify": "verify_cli"}

#: ``--connect``, the same for every command of the group
ConnectOpt = Annotated[Optional[str], typer.Option("--connect", "-c", metavar="URI", help=(
    "libvirt URI of the SEV host (default: LIBVIRT_DEFAULT_URI, else qemu:///system), e.g. "
    "qemu+ssh://root@sev-host/system."))]


@cache
def commands() -> dict:
    """The group's click commands, by name (imports the modules that define them)."""
    import importlib

    found = {}
    for module in dict.fromkeys(COMMANDS.values()):
        group = typer.main.get_command(importlib.import_module(f"vscen_attest.{module}").app)
        found.update(group.commands)
    return found


class _LazyGroup(TyperGroup):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        return commands().get(name) if name in COMMANDS else None


app = typer.Typer(cls=_LazyGroup, no_args_is_help=True, help="AMD SEV launch attestation for the guest owner.")
