"""``vscen list os [--json] [--family F]``: the os plugin's listing as a subject of ``vscen list``
(``Command.listing``), the same as ``vscen os list``, with a documented, stable JSON shape."""

from __future__ import annotations

import json

import pytest
from conftest import osinfo_or_skip
from typer.testing import CliRunner
from vscen_os import cli as os_cli
from vscen_os import osdb


@pytest.fixture(autouse=True)
def _fresh_db():
    osdb.clear()
    yield
    osdb.clear()


def cli(*args):
    from vscen.cli import app

    return CliRunner().invoke(app, list(args))


def test_vscen_list_os_is_vscen_os_list():
    osinfo_or_skip()
    listed = cli("list", "os", "--json", "--family", "windows")
    assert listed.exit_code == 0, listed.output
    assert listed.output == cli("os", "list", "--family", "windows", "--json").output
    rows = json.loads(listed.output)
    assert {"win11", "win10", "win2k22"} <= {r["short_id"] for r in rows}
    assert all(r["family"] in ("winnt", "win9x", "win16") for r in rows)
    linux = json.loads(cli("list", "os", "--family", "linux", "--json").output)
    assert "debian11" in {r["short_id"] for r in linux} and all(r["family"] == "linux" for r in linux)
    text = cli("list", "os", "--family", "windows").output.splitlines()
    assert any(line.split()[:2] == ["win11", "winnt"] and line.endswith("Microsoft Windows 11") for line in text)


def test_the_json_shape_is_the_documented_one():
    osinfo_or_skip()
    rows = json.loads(cli("list", "os", "--json").output)
    assert rows == sorted(rows, key=lambda r: r["short_id"]) and len(rows) > 400
    for row in rows:
        assert tuple(row) == os_cli.JSON_KEYS, row["short_id"]
        assert set(row["minimum"]) == set(row["recommended"]) == {"ram", "n_cpus", "storage"}
        assert all(isinstance(v, bool) for v in row["firmware"].values())
    shown = json.loads(cli("os", "show", "win11", "--json").output)
    assert tuple(shown) == os_cli.JSON_KEYS
    doc = " ".join(os_cli.list_.__doc__.split())
    for key in os_cli.JSON_KEYS:  # each key is described in the command's help (and the guide)
        assert key in doc, key
    guide = (osdb.Path(__file__).resolve().parents[2] / "docs" / "user-guide.md").read_text()
    assert "`vscen os list [OPTIONS]` (also `vscen list os`)" in guide


def test_an_unknown_family_is_one_line_with_the_known_ones():
    osinfo_or_skip()
    from vscen.errors import UsageError

    res = cli("list", "os", "--family", "window")
    assert isinstance(res.exception, UsageError) and res.exception.exit_code == 2  # main() prints it as one line
    message = str(res.exception)
    assert message.startswith("family: 'window' is not one of ") and "linux" in message and "windows" in message
