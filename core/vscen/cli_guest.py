"""Commands on one guest vscen made, beyond run/status/destroy (to be written)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Snapshots of a guest vscen made: revert to the state before its first boot.")
