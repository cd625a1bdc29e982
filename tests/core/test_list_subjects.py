"""``vscen list NAME`` for what a plugin lists (``vscen.Command.listing``): the plugin's own
command, with its options, beside the core's subjects, gone with its plugin."""

from __future__ import annotations

import json

import pytest
from coresupport import cli_env, vscen

SHELF = '''
import json
from typing import Annotated

import typer

from vscen import Command, hookimpl

app = typer.Typer(no_args_is_help=True, help="Shelf tools.")


@app.command("ls")
def ls(colour: Annotated[str, typer.Option(help="Only this colour.")] = "",
       as_json: Annotated[bool, typer.Option("--json", help="JSON: a list of names.")] = False):
    """The books on the shelf."""
    books = [b for b in ("red-book", "blue-book") if colour in b]
    typer.echo(json.dumps(books) if as_json else "\\n".join(books))


@hookimpl
def vscen_register_commands(register):
    register(Command(name="shelf", summary="Shelf tools.", app=app, listing="ls"))
    register(Command(name="crate", summary="Crate tools.", app=app, listing="nothing-such"))
'''


@pytest.fixture
def shelf(tmp_path):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "vscen_shelf.py").write_text(SHELF)
    return cli_env(VSCEN_PLUGIN_PATH=str(plugin_dir))


def test_a_plugins_listing_is_a_subject_of_vscen_list_with_its_options(shelf):
    assert vscen("list", "shelf", env=shelf).stdout == "red-book\nblue-book\n"
    assert json.loads(vscen("list", "shelf", "--colour", "blue", "--json", env=shelf).stdout) == ["blue-book"]
    assert vscen("list", "shelf", "--json", env=shelf).stdout == vscen("shelf", "ls", "--json", env=shelf).stdout
    help_ = vscen("list", "--help", env={**shelf, "COLUMNS": "200"}).stdout
    assert "shelf" in help_ and "The books on the shelf." in help_
    assert "--colour" in vscen("list", "shelf", "--help", env=shelf).stdout


def test_the_cores_subjects_stay_as_they_were(shelf):
    assert vscen("list", env=shelf).stdout == vscen("list", "scenarios", env=shelf).stdout
    assert vscen("list", "--json", env=shelf).stdout == vscen("list", "scenarios", "--json", env=shelf).stdout
    assert json.loads(vscen("list", "features", "--json", env=shelf).stdout) is not None
    proc = vscen("list", "bogus", env=shelf)
    assert proc.returncode == 2 and "No such command 'bogus'" in proc.stderr


def test_a_listing_naming_no_command_is_left_out_with_a_warning(shelf):
    assert "crate" not in vscen("list", "--help", env=shelf).stdout.split("Commands:")[1]
    proc = vscen("list", env=shelf)
    assert proc.returncode == 0
    assert ("warning: plugin 'vscen_shelf' (local: " in proc.stderr
            and "'vscen list crate' is left out: its group has no command 'nothing-such'" in proc.stderr)


def test_gone_with_its_plugin(shelf):
    off = {**shelf, "VSCEN_DISABLED_PLUGINS": shelf["VSCEN_DISABLED_PLUGINS"] + ",vscen_shelf"}
    proc = vscen("list", "shelf", env=off)
    assert proc.returncode == 2 and "No such command 'shelf'" in proc.stderr
