"""The ``vscen attest`` command group. Each part adds its commands from its own module."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="AMD SEV launch attestation for the guest owner.")

# the sub-commands register themselves on ``app`` (imported last: they import ``app`` from here)
from vscen_attest import session_cli, verify_cli  # noqa: E402,F401
