"""``vscen plugin``: tools for plugin authors (``vscen plugin new``)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Tools for plugin authors: scaffold a new plugin project.")


class Kind(StrEnum):
    scenario = "scenario"
    feature = "feature"


@app.command(no_args_is_help=True)
def new(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The plugin's name: lowercase letters, digits and '-' (build-box). The project is vscen-NAME, the package vscen_NAME.")],
    kind: Annotated[Kind, typer.Option(help="What the plugin registers: a scenario or a feature.")] = Kind.scenario,
    dir_: Annotated[Path, typer.Option("--dir", help="Where to create vscen-NAME/ (default: the current directory).")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Write the files over an existing vscen-NAME/ (other files there are kept).")] = False,
):
    """Write a ready-to-install plugin project vscen-NAME/: pyproject.toml with the entry point,
    the package, tests with vscen's test kit and their golden file, a README."""
    from vscen.scaffold import create

    project, written, note = create(name, kind.value, dir_, force=force)
    typer.echo(f"created {project}/: a {kind.value} plugin '{name}'")
    for path in sorted(written):
        typer.echo(f"  {path.relative_to(project)}")
    if note:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"next:\n  cd {project}\n  pip install -e '.[test]'\n  pytest")
