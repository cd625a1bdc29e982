"""Plugin discovery: misspelled hooks, disabling, what ``vscen plugins`` reports, and real
distributions found through their entry points."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from coresupport import Plug, builtin_plugin_names, cli_env, vscen, write_dist

from vscen import Feature, hookimpl
from vscen.manager import DISABLE_ENV, get_plugin_manager
from vscen.registry import build_registry

PKGS = Path(__file__).resolve().parents[1] / "plugin_pkgs"


class Misspelled:
    @hookimpl
    def vscen_register_feature(self, register):  # missing the final "s"
        register(Feature(name="never", summary="never"))


class AlsoMisspelled:
    @hookimpl
    def vscen_register_scenario(self, register):
        pass


class WrongArgument:
    @hookimpl
    def vscen_register_features(self, add):  # the hook's argument is "register"
        pass


def test_a_misspelled_hook_breaks_its_plugin_only():
    good = Plug(features=[Feature(name="fine", summary="fine")])
    pm = get_plugin_manager(entry_points=False, plugins=(
        ("typo", Misspelled()), ("good", good), ("typo2", AlsoMisspelled())))
    for name, hook in (("typo", "vscen_register_feature"), ("typo2", "vscen_register_scenario")):
        info = pm.infos[name]
        assert info.status == "broken"
        assert hook in info.reason
        assert pm.get_plugin(name) is None
        assert info.hooks == []
    assert pm.infos["good"].status == "loaded"
    reg = build_registry(pm)
    assert set(reg.features) == {"fine"}
    warnings = pm.warnings()
    assert len(warnings) == 2
    assert any(w.startswith("plugin 'typo' from (in-process)") and f"{DISABLE_ENV}=typo" in w for w in warnings)


def test_a_hook_with_the_wrong_arguments_breaks_its_plugin():
    pm = get_plugin_manager(entry_points=False, plugins=(("wrong", WrongArgument()), ("good", Plug())))
    assert pm.infos["wrong"].status == "broken"
    assert "add" in pm.infos["wrong"].reason
    assert pm.infos["good"].status == "loaded"


def test_plugin_info_lists_the_hooks_implemented():
    class FeaturesOnly:
        @hookimpl
        def vscen_register_features(self, register):
            register(Feature(name="f1", summary="f"))

    pm = get_plugin_manager(entry_points=False, plugins=(("all", Plug()), ("some", FeaturesOnly())))
    assert pm.infos["all"].hooks == ["vscen_register_features", "vscen_register_host_actions",
                                     "vscen_register_scenarios", "vscen_register_validators"]
    assert pm.infos["some"].hooks == ["vscen_register_features"]
    assert pm.infos["some"].registers == {}  # filled in by the registry
    build_registry(pm)
    assert pm.infos["some"].registers == {"features": ["f1"]}
    assert (pm.infos["some"].distribution, pm.infos["some"].status) == ("(in-process)", "loaded")


# -- entry points, in this process ------------------------------------------------------------

FAKE = '''
from vscen import Feature, hookimpl


@hookimpl
def vscen_register_features(register):
    register(Feature(name="{feature}", summary="from {dist}"))
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path where tests put distributions; their modules are forgotten
    afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for path in root.iterdir():
        if path.is_dir() and not path.name.endswith(".dist-info"):
            sys.modules.pop(path.name, None)


def test_entry_points_are_loaded_with_their_distribution(site):
    write_dist(site, "vscen-fake-one", "1.4.2", "fake-one", "vscen_fake_one",
               FAKE.format(feature="one", dist="one"))
    write_dist(site, "vscen-fake-bad", "0.1", "fake-bad", "vscen_fake_bad", "raise ImportError('no libfoo')\n")
    builtins = tuple(builtin_plugin_names())
    pm = get_plugin_manager(disabled=builtins)
    info = pm.infos["fake-one"]
    assert (info.distribution, info.version, info.module, info.status) == (
        "vscen-fake-one", "1.4.2", "vscen_fake_one", "loaded")
    assert info.hooks == ["vscen_register_features"]
    bad = pm.infos["fake-bad"]
    assert bad.status == "broken" and bad.reason == "ImportError: no libfoo"
    assert pm.warnings() == [
        "plugin 'fake-bad' from vscen-fake-bad 0.1 is broken: ImportError: no libfoo "
        f"(disable it with {DISABLE_ENV}=fake-bad)"]
    assert all(pm.infos[name].status == "disabled" for name in builtins)
    reg = build_registry(pm)
    assert set(reg.features) == {"one"} and reg.plugin_of("one") == "fake-one"


def test_the_environment_disables_plugins_by_name(site, monkeypatch):
    for n in ("a", "b", "c"):
        write_dist(site, f"vscen-fake-{n}", "1.0", f"fake-{n}", f"vscen_fake_{n}", FAKE.format(feature=n, dist=n))
    monkeypatch.setenv(DISABLE_ENV, " fake-a ,fake-c,, nosuch")
    pm = get_plugin_manager(disabled=tuple(builtin_plugin_names()))
    for name in ("fake-a", "fake-c"):
        assert pm.infos[name].status == "disabled"
        assert DISABLE_ENV in pm.infos[name].reason
        assert pm.get_plugin(name) is None
    assert "vscen_fake_a" not in sys.modules  # a disabled plugin is not even imported
    assert pm.infos["fake-b"].status == "loaded"
    assert set(build_registry(pm).features) == {"b"}
    assert pm.warnings() == []


# -- real distributions, installed by pip -----------------------------------------------------

_NO_BUILD_TOOLS = ("No module named 'setuptools'", "invalid command 'bdist_wheel'", "BackendUnavailable",
                   "Cannot import 'setuptools.build_meta'")
_NO_SETUPTOOLS = ("Could not find a version that satisfies the requirement setuptools",
                  "No matching distribution found for setuptools")


def _pip(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *args],
                          capture_output=True, text=True, timeout=600,
                          env=cli_env(disable_builtins=False, PIP_DISABLE_PIP_VERSION_CHECK="1"))


def _last_line(proc) -> str:
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {proc.returncode}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """tests/plugin_pkgs/* built and installed by pip into a directory of their own.

    As the brief has it, first with ``--no-build-isolation`` (the environment's setuptools);
    a setuptools that needs the separate ``wheel`` package to build (older than 70.1) is
    retried with pip's isolated build, which fetches setuptools. Skipped only when pip cannot
    build at all for want of setuptools.
    """
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        pytest.skip("pip cannot build the test plugins: pip is not installed")
    src = tmp_path_factory.mktemp("src")  # build from copies: pip builds in the source tree
    dirs = [str(shutil.copytree(PKGS / name, src / name)) for name in ("vscen-hello", "vscen-broken")]
    target = tmp_path_factory.mktemp("site")
    proc = _pip(["--no-build-isolation", "--target", str(target), *dirs])
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if not any(s in output for s in _NO_BUILD_TOOLS):
            pytest.fail(f"pip could not build the test plugins:\n{output}")
        shutil.rmtree(target)
        target.mkdir()
        proc = _pip(["--target", str(target), *dirs])
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            if any(s in output for s in _NO_SETUPTOOLS + ("Network is unreachable", "Temporary failure")):
                pytest.skip("pip cannot build the test plugins: no setuptools here (with wheel) and none "
                            f"to fetch for an isolated build ({_last_line(proc)})")
            pytest.fail(f"pip could not build the test plugins:\n{output}")
    assert (target / "vscen_hello" / "__init__.py").exists()
    return target


def plugins_json(env) -> dict:
    proc = vscen("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return {p["name"]: p for p in json.loads(proc.stdout)}


def test_a_pip_installed_plugin_is_discovered_and_used(installed, tmp_path):
    env = cli_env(installed)
    infos = plugins_json(env)
    hello = infos["hello"]
    assert hello["distribution"] == "vscen-hello"
    assert hello["version"] == "0.2.0"
    assert hello["module"] == "vscen_hello"
    assert hello["status"] == "loaded" and hello["reason"] == ""
    assert hello["registers"] == {"features": ["hello"], "scenarios": ["hello-world"]}
    assert hello["hooks"] == ["vscen_register_features", "vscen_register_scenarios"]

    proc = vscen("run", "hello-world", "--dry-run", "--connect", "test:///default", "--name", "h1",
                 "--output", str(tmp_path / "out"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "<description>hello from vscen-hello</description>" in proc.stdout
    assert "<name>h1</name>" in proc.stdout
    assert "features:  hello (implied by hello-world)" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_broken_distribution_is_reported_and_the_others_load(installed):
    env = cli_env(installed)
    infos = plugins_json(env)
    broken = infos["broken"]
    assert broken["distribution"] == "vscen-broken" and broken["version"] == "0.0.1"
    assert broken["status"] == "broken"
    assert broken["reason"] == "ImportError: vscen-broken needs libfrobnicate, which is not installed"
    assert infos["hello"]["status"] == "loaded"

    proc = vscen("list", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "hello-world" in proc.stdout
    assert "Traceback" not in proc.stderr
    [warning] = [line for line in proc.stderr.splitlines() if "broken" in line]
    assert warning.startswith("warning: plugin 'broken' from vscen-broken 0.0.1 is broken: ImportError: ")
    assert warning.endswith(f"(disable it with {DISABLE_ENV}=broken)")


def test_disabling_the_broken_distribution_silences_it(installed):
    env = cli_env(installed)
    env[DISABLE_ENV] += ",broken"
    proc = vscen("list", env=env)
    assert proc.returncode == 0
    assert "warning" not in proc.stderr and "hello-world" in proc.stdout
    infos = plugins_json(env)
    assert infos["broken"]["status"] == "disabled"
    assert infos["hello"]["status"] == "loaded"


def test_the_built_in_plugins_are_declared_as_entry_points():
    # the core tests disable them by these names (coresupport.cli_env)
    names = builtin_plugin_names()
    assert names and all(name == name.strip() and "," not in name for name in names)
