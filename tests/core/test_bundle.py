"""The program's bundle of modules (``vscen.cli.bundle``): the code of the modules a command
imports from vscen and its plugins, kept in one file and served from it while each module's
source is unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from coresupport import STATIC_PLUGIN, cli_env, write_dist

from vscen import cache

#: the program (vscen.cli.entry) as the console script runs it; at its very end (the exit
#: handler registered first runs last) it says which modules came from the bundle
PROGRAM = """
import atexit, json, sys


def served():
    from vscen.cli.bundle import BundledLoader

    names = [n for n, m in sys.modules.items()
             if isinstance(getattr(getattr(m, "__spec__", None), "loader", None), BundledLoader)]
    print(json.dumps(sorted(names)), file=sys.stderr)


atexit.register(served)
sys.argv = ["vscen", *ARGS]
from vscen.cli import entry

entry()
"""



def _past(*paths, ago: int = 60) -> None:
    """As files installed *ago* seconds ago: vscen caches nothing that changed in the last
    seconds."""
    past = time.time() - ago
    for path in paths:
        os.utime(path, (past, past))


def _workdir(tmp_path):
    """A working directory (on sys.path) where nothing changes, as the cache directory would."""
    work = tmp_path / "work"
    work.mkdir()
    _past(work)
    return work


def _program(args: list[str], env: dict, cwd) -> tuple[str, list[str]]:
    """(standard output, the modules served from the bundle) of one run of the program."""
    proc = subprocess.run([sys.executable, "-c", PROGRAM.replace("ARGS", repr(args))], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(proc.stderr.splitlines()[-1])


def test_the_program_serves_the_modules_of_a_command_from_one_file(tmp_path):
    work = _workdir(tmp_path)
    env = cli_env(disable_builtins=False, LIBVIRT_DEFAULT_URI="test:///default")
    args = ["run", "secure-vm", "--dry-run"]
    first, served = _program(args, env, work)
    assert served == [] and not list((tmp_path / "cache" / "vscen").glob("modules-*.marshal"))
    _program(args, env, work)  # the first run imported every plugin to register them: not kept
    [path] = (tmp_path / "cache" / "vscen").glob("modules-*.marshal")
    again, served = _program(args, env, work)
    assert again == first
    assert {"vscen.model", "vscen.pipeline", "vscen_storage", "vscen_launch_security.types"} <= set(served)
    assert not {n for n in served if n.startswith(("vscen_fleet", "vscen_attest"))}  # not what secure-vm uses
    # corrupt, or off: the modules are imported as Python does, and the output is the same
    path.write_bytes(b"\x00garbage")
    assert _program(args, env, work) == (first, [])
    assert _program(args, env | {cache.OFF_ENV: "1"}, work) == (first, [])


def test_an_edited_module_is_imported_from_its_source(tmp_path):
    site = write_dist(tmp_path / "site", "vscen-bundled", "1.0", "bundled", "vscen_bundled",
                      STATIC_PLUGIN.format(name="bundled", text="one"))
    module = site / "vscen_bundled" / "__init__.py"
    _past(module, module.parent, site)
    work = _workdir(tmp_path)
    env = cli_env(site, LIBVIRT_DEFAULT_URI="test:///default")
    args = ["run", "bundled-box", "--dry-run", "--disk", "none"]
    for _ in range(2):
        out, served = _program(args, env, work)
    out, served = _program(args, env, work)
    assert "<description>one</description>" in out and "vscen_bundled" in served
    module.write_text(STATIC_PLUGIN.format(name="bundled", text="two"))  # an editable install, edited
    # 30 s later than the first version: Python's own .pyc check compares whole seconds (and
    # the size, the same here), so an edit within the same second would look unchanged to it
    _past(module, ago=30)
    out, served = _program(args, env, work)  # its registrations are read anew too: nothing kept
    assert "<description>two</description>" in out and "vscen_bundled" not in served
    _program(args, env, work)  # kept anew, with its new code
    out, served = _program(args, env, work)
    assert "<description>two</description>" in out and "vscen_bundled" in served


def test_a_served_package_reads_its_resources_as_python_gives_them(tmp_path):
    # the loader of a served module is Python's source loader: importlib.resources, get_data...
    code = STATIC_PLUGIN.format(name="bundled", text="-").replace(
        'domain.ensure("description").text("-")',
        'from importlib.resources import files\n\n'
        '    domain.ensure("description").text(files(__name__).joinpath("note.txt").read_text().strip())')
    site = write_dist(tmp_path / "site", "vscen-bundled", "1.0", "bundled", "vscen_bundled", code)
    (site / "vscen_bundled" / "note.txt").write_text("from a resource\n")
    _past(*(site / "vscen_bundled").iterdir(), site / "vscen_bundled", site)
    work = _workdir(tmp_path)
    env = cli_env(site, LIBVIRT_DEFAULT_URI="test:///default")
    for _ in range(3):
        out, served = _program(["run", "bundled-box", "--dry-run", "--disk", "none"], env, work)
    assert "vscen_bundled" in served and "<description>from a resource</description>" in out
