"""Helpers shared by the core tests (not a test module, not a conftest).

The core tests never rely on the built-in plugins: they declare plugins inline (``Plug``), or
as a hand-written distribution on ``sys.path`` (``write_dist``), or as a real distribution
built and installed by pip (test_manager.py).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from vscen import hookimpl

TESTS = Path(__file__).resolve().parents[1]


def load_tests_conftest():
    """tests/conftest.py, loaded by path (``import conftest`` is ambiguous once other test
    directories grow their own conftest.py)."""
    name = "_vscen_tests_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "conftest.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


class Plug:
    """An in-process plugin registering the objects it is given."""

    def __init__(self, features=(), scenarios=(), validators=(), actions=()):
        self.features, self.scenarios = list(features), list(scenarios)
        self.validators, self.actions = list(validators), list(actions)

    @hookimpl
    def vscen_register_features(self, register):
        for f in self.features:
            register(f)

    @hookimpl
    def vscen_register_scenarios(self, register):
        for s in self.scenarios:
            register(s)

    @hookimpl
    def vscen_register_validators(self, register):
        for v in self.validators:
            register(v)

    @hookimpl
    def vscen_register_host_actions(self, register):
        for a in self.actions:
            register(a)


def load(*plugins):
    """(plugin manager, registry) for in-process *plugins* given as (name, object) pairs."""
    from vscen.manager import get_plugin_manager
    from vscen.registry import build_registry

    pm = get_plugin_manager(entry_points=False, plugins=tuple(plugins))
    return pm, build_registry(pm)


def builtin_plugin_names() -> list[str]:
    """Entry-point names vscen's own distribution declares (the built-in plugins), so tests
    can disable them and not depend on their state."""
    import importlib_metadata

    dist = importlib_metadata.distribution("vscen")
    return sorted(ep.name for ep in dist.entry_points.select(group="vscen"))


def write_dist(root: Path, dist: str, version: str, entry: str, module: str, code: str) -> Path:
    """A distribution as an installer leaves it: *module* plus ``<dist>-<version>.dist-info``
    with METADATA and an entry point ``entry = module`` in the group ``vscen``."""
    root.mkdir(parents=True, exist_ok=True)
    pkg = root / module
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[vscen]\n{entry} = {module}\n")
    return root


#: a plugin that says it is static (vscen.regcache), as a third party writes one: a feature
#: that writes {text} as the description, and the scenario {name}-box of it alone
STATIC_PLUGIN = '''
from vscen import Feature, Scenario, hookimpl

VSCEN_STATIC = True


def apply(domain, ctx):
    domain.ensure("description").text("{text}")


@hookimpl
def vscen_register_features(register):
    register(Feature(name="{name}", summary="a feature from the cache tests", apply=apply))


@hookimpl
def vscen_register_scenarios(register):
    register(Scenario(name="{name}-box", summary="a scenario from the cache tests", features=("{name}",)))
'''


#: a plugin module for the CLI tests: scenarios that work, clash, or fail in apply
DEMO_PLUGIN = '''
from vscen import Conflict, Feature, Scenario, hookimpl


def _describe(domain, ctx):
    domain.ensure("description").text("core demo")


def _boom(domain, ctx):
    raise RuntimeError("kaput")


@hookimpl
def vscen_register_features(register):
    register(Feature(name="demo-describe", summary="sets the description", apply=_describe))
    register(Feature(name="demo-left", summary="left", conflicts=(Conflict("demo-right", "they pull opposite ways"),)))
    register(Feature(name="demo-right", summary="right"))
    register(Feature(name="demo-boom", summary="fails in apply", apply=_boom))


@hookimpl
def vscen_register_scenarios(register):
    register(Scenario(name="core-demo", summary="a demo", features=("demo-describe",)))
    register(Scenario(name="core-clash", summary="a clash", features=("demo-left", "demo-right")))
    register(Scenario(name="core-boom", summary="fails", features=("demo-boom",)))
'''


def cli_env(pythonpath: Path | None = None, disable_builtins: bool = True, **extra) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if disable_builtins:
        env["VSCEN_DISABLED_PLUGINS"] = ",".join(builtin_plugin_names())
    env.pop("LIBVIRT_DEFAULT_URI", None)
    env.update(extra)
    return env


def vscen(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "vscen.cli", *args], capture_output=True, text=True,
        env=env if env is not None else cli_env(), cwd=cwd, timeout=120,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]
