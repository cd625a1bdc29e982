"""``vscen plugin``: tools for plugin authors (to be written)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Tools for plugin authors: scaffold a new plugin project.")
