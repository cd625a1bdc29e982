"""vscen's test kit for plugin authors: pytest fixtures.

vscen's distribution declares this module as a pytest plugin (entry point group ``pytest11``),
so in any environment where vscen is installed the fixtures are there without a conftest::

    def test_build_box(vscen_render, vscen_golden):
        result = vscen_render("build-box", host="amd-sev", memory="8GiB")
        assert result.resolution.features  # the resolved features, in order
        vscen_golden(result.xml, "build-box@amd-sev")

Fixtures (each returns a function; see docs/plugin-guide.md):

- ``vscen_plugins(*plugins, entry_points=True, disabled=())``: a fresh plugin manager and
  registry (``.pm``, ``.registry``, ``.info(name)``, ``.warnings``);
- ``vscen_render(scenarios, *, features=(), remove=(), plugins=(), host="amd-sev", sets=(),
  disks=None, entry_points=True, disabled=(), support=None, keep_connection=False, **settings)``:
  the whole pipeline (resolve, build, schema, validators) against a recorded host; changes
  nothing anywhere;
- ``vscen_host_facts(host)``: the parsed facts of a recorded host;
- ``vscen_validate(xml, define=True)``: libvirt's RelaxNG schema, then a define with
  validation on libvirt's embedded ``test:///default`` driver;
- ``vscen_golden(text, name)``: compare with ``golden/<name>.xml`` beside the test file;
  ``pytest --vscen-regen`` writes the files instead.

The fixtures ignore the user's and the system's vscen config files and the ``VSCEN_*``
environment variables, so results do not depend on the machine. Recorded hosts: see
:data:`HOSTS`, or give the path of a ``vscen host snapshot`` file.

This module is imported by every pytest session where vscen is installed, and by scripts that
use its plain helpers: it imports only the standard library at import time (not even pytest,
which scripts may not have). The fixtures and the ``--vscen-regen`` option are in
``vscen.pytest_plugin``, which pytest loads through ``pytest_plugins`` below; it defines no
autouse fixture.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the fixtures: pytest imports vscen.pytest_plugin when it loads this module through the pytest11
#: entry point; a script that imports this module for its helpers does not
pytest_plugins = ["vscen.pytest_plugin"]

DATA = Path(__file__).resolve().parent / "data"
#: recorded hosts shipped with vscen (``data/host-<name>.xml``); "reference" is the host of
#: the embedded test:///default driver
HOSTS = {
    "amd-sev": "AMD Zen 5, KVM, SEV/SEV-ES/SEV-SNP, 1 NUMA cell, QEMU 10.0",
    "intel-tdx": "Intel, KVM, TDX (no SEV, no spice), 4 NUMA cells with huge pages, QEMU 10.1",
    "kvm": "plain KVM, 2 NUMA cells (one memory-only), QEMU 11.1",
    "local-tcg": "no KVM (TCG only), 2 CPUs, libvirt 9.0, QEMU 7.2",
    "aarch64": "aarch64 KVM, machine virt, UEFI only (domain capabilities only)",
    "reference": "vscen's reference host: AMD EPYC with SEV-ES, 2 NUMA cells, free 2 MiB pages",
}


def host_files(host) -> list[Path]:
    """The recorded files of *host*: a name of :data:`HOSTS`, a path, or a list of paths."""
    from vscen.errors import UsageError

    if isinstance(host, (list, tuple)):
        return [p for h in host for p in host_files(h)]
    if isinstance(host, str) and host in HOSTS:
        return [DATA / ("reference-host.xml" if host == "reference" else f"host-{host}.xml")]
    path = Path(host)
    if not path.is_file():
        raise UsageError(f"host: '{host}' is neither a recorded host ({', '.join(HOSTS)}) nor an existing file")
    return [path]


@dataclass
class Loaded:
    """A fresh plugin manager and what its plugins registered."""

    pm: Any
    registry: Any

    def info(self, name: str):
        """The ``PluginInfo`` of plugin *name* (status, reason, hooks, registers...)."""
        if name not in self.pm.infos:
            raise LookupError(f"no plugin '{name}' (there are {', '.join(sorted(self.pm.infos)) or 'none'}); "
                              "is its distribution installed (pip install -e .)?")
        return self.pm.infos[name]

    @property
    def warnings(self) -> list[str]:
        """One line per broken plugin (empty when every plugin loaded)."""
        return self.pm.warnings()


def load_plugins(plugins=(), *, entry_points: bool = True, disabled=()) -> Loaded:
    """A fresh plugin manager: the installed plugins (entry points) unless ``entry_points`` is
    false, plus *plugins* (modules, objects or ``(name, object)`` pairs), minus *disabled*.

    A module given here that an installed entry point names too is used once, under the entry
    point's name, so a test passes the same whether the plugin is installed or not.
    """
    from vscen.manager import get_plugin_manager
    from vscen.registry import build_registry

    named, blocked = _named(plugins, entry_points)
    blocked.update({name: "disabled in the test" for name in disabled})
    pm = get_plugin_manager(entry_points=entry_points, plugins=tuple(named), disabled=blocked)
    return Loaded(pm, build_registry(pm))


def _named(plugins, entry_points: bool) -> tuple[list, dict[str, str]]:
    """(name, object) pairs for *plugins*, and the entry points they stand in for."""
    by_module: dict[str, str] = {}
    if entry_points:
        import importlib_metadata

        for ep in importlib_metadata.entry_points(group="vscen"):
            by_module.setdefault(ep.value.partition(":")[0].strip(), ep.name)
    named, blocked = [], {}
    for plugin in plugins:
        if isinstance(plugin, tuple):
            named.append(plugin)
            continue
        module = getattr(plugin, "__name__", None)
        name = by_module.get(module) if isinstance(module, str) else None
        if name:
            blocked[name] = "given in-process to the test instead"
        named.append((name or module or type(plugin).__name__.lower(), plugin))
    return named, blocked


def render(scenarios=(), *, features=(), remove=(), plugins=(), host="amd-sev", sets=(), disks=None,
           entry_points: bool = True, disabled=(), support=None, schema: bool = True,
           keep_connection: bool = False, **settings):
    """Run vscen's pipeline for *scenarios* (a name or a list) on a recorded *host*; returns
    ``vscen.pipeline.Result`` (``.xml``, ``.ctx``, ``.checks``, ``.resolution``, ``.settings``).

    *settings* are those of ``vscen run`` and the config file (``memory="8GiB"``, ``vcpu=4``,
    ``disk={"size": "40GiB"}``); *sets* are ``--set XPATH=VALUE`` customisations. vscen's
    errors (``RulesError``, ``HostError``, ``InvalidDomainError``...) are raised as they are,
    with a note naming any broken plugin. With *keep_connection*, ``result.ctx.connection``
    stays open on libvirt's embedded ``test:///default`` driver, for host actions' ``plan``
    (the fixture closes it after the test).
    """
    from vscen.config import flatten
    from vscen.errors import VscenError
    from vscen.pipeline import Request
    from vscen.pipeline import render as run

    scenarios = [scenarios] if isinstance(scenarios, str) else list(scenarios)
    named, blocked = _named(plugins, entry_points)
    request = Request(scenarios=scenarios, add=_names(features), remove=_names(remove),
                      options=flatten(settings), disks=list(disks) if disks else None, sets=list(sets),
                      host_facts=host_files(host), plugins=tuple(named), entry_points=entry_points,
                      disabled=tuple(disabled) + tuple(blocked), support=support, schema=schema)
    try:
        return run(request, keep_connection=keep_connection)
    except VscenError as exc:
        broken = load_plugins(plugins, entry_points=entry_points, disabled=disabled).warnings
        for line in broken:
            exc.add_note(f"vscen: {line}")
        raise


def _names(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def validate(xml: str, define: bool = True) -> None:
    """Fail the test unless *xml* is valid for the installed libvirt: its RelaxNG schema, then
    (``define=True``) a define with validation on the embedded ``test:///default`` driver."""
    from vscen.validate import schema_errors

    errors = schema_errors(xml)
    if errors:
        _fail("not valid for libvirt's schema:\n  " + "\n  ".join(errors))
    if define:
        import libvirt

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
        conn = libvirt.open("test:///default")
        try:
            conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE).undefine()
        except libvirt.libvirtError as exc:
            _fail(f"libvirt's test:///default driver refuses the domain: {exc}")
        finally:
            conn.close()


def compare_golden(text: str, path: Path, regen: bool) -> None:
    """Fail the test unless *text* equals the file at *path*; with *regen*, write it instead."""
    if regen:
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return
    if not path.is_file():
        _fail(f"no golden file {path}: run pytest --vscen-regen to write it, then review it")
    expected = path.read_text()
    if text != expected:
        import difflib

        diff = list(difflib.unified_diff(expected.splitlines(), text.splitlines(), f"{path.name} (golden)",
                                         f"{path.name} (now)", lineterm=""))
        shown = diff[:80] + ([f"... {len(diff) - 80} more lines"] if len(diff) > 80 else [])
        _fail(f"{path} differs (review, then pytest --vscen-regen):\n" + "\n".join(shown))


def _fail(message: str) -> None:
    """Fail the test: ``pytest.fail`` (no traceback into vscen) in a pytest session, else an
    AssertionError, for scripts and other test runners."""
    pytest = sys.modules.get("pytest")
    if pytest is None:
        raise AssertionError(message)
    pytest.fail(message, pytrace=False)
