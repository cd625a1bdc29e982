"""Third-party plugins as their users meet them: examples/vscen-example installed by pip into a
fresh virtual environment beside vscen, listed, used, tested and uninstalled; plugins disabled
by the environment and the config files; plugins loaded from local directories
(``VSCEN_PLUGIN_PATH``).

The fresh environments are built offline from a wheelhouse made once per test session
(:func:`wheelhouse`): vscen's wheel built from a copy of this checkout, and the wheels of its
dependencies, pytest and setuptools. libvirt-python has no wheel on PyPI: pip builds it from
source against the installed libvirt once (about 15 s; pip's wheel cache keeps it for later
sessions), and every environment installs that wheel. A venv created with
``--system-site-packages`` would not help: the running interpreter is itself a venv, and its
base interpreter's site-packages hold neither libvirt-python nor vscen's other dependencies.
tests/core/test_scaffold.py loads these helpers by path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vscen-example"
_OFFLINE = ("Network is unreachable", "Temporary failure in name resolution", "No matching distribution",
            "Could not find a version that satisfies", "Name or service not known")


# -- fresh virtual environments ---------------------------------------------------------------


def clean_env(tmp: Path, **extra) -> dict:
    """os.environ without what would leak this checkout or this user into a subprocess."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VSCEN_") and k not in ("PYTHONPATH", "LIBVIRT_DEFAULT_URI", "VIRTUAL_ENV")}
    env.update(XDG_CONFIG_HOME=str(tmp / "config"), XDG_DATA_HOME=str(tmp / "data"),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def run(cmd: list, env: dict, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def copy_source(src: Path, dest: Path) -> Path:
    """A copy to build from: pip builds in the source tree (build/, *.egg-info)."""
    return Path(shutil.copytree(src, dest, ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info", "build", ".venv", ".tox", ".git", ".pytest_cache", ".ruff_cache")))


def wheelhouse(tmp_path_factory) -> Path:
    """vscen's wheel (from a copy of this checkout) and the wheels it needs, plus pytest and
    setuptools, built once per session. Skips when pip cannot reach an index."""
    base = tmp_path_factory.getbasetemp() / "vscen-wheelhouse"
    wheels, done = base / "wheels", base / "done"
    if done.exists():
        return wheels
    shutil.rmtree(base, ignore_errors=True)
    src = base / "vscen"
    src.mkdir(parents=True)
    for name in ("core", "plugins"):
        copy_source(ROOT / name, src / name)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", wheels, src, "pytest", "setuptools"],
               env=clean_env(base), timeout=1200)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if any(s in output for s in _OFFLINE):
            pytest.skip(f"pip cannot fetch vscen's dependencies here: {output.strip().splitlines()[-1]}")
        pytest.fail(f"pip could not build the wheelhouse:\n{output}")
    done.touch()
    return wheels


class Venv:
    """A fresh virtual environment with vscen and pytest installed from the wheelhouse."""

    def __init__(self, path: Path, wheels: Path):
        self.path, self.wheels = path, wheels
        self.env = clean_env(path.parent)
        proc = run([sys.executable, "-m", "venv", path], env=self.env)
        assert proc.returncode == 0, proc.stderr
        [vscen_wheel] = wheels.glob("vscen-*.whl")
        self.pip("install", vscen_wheel, "pytest")

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    def pip(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        offline = ("--no-index", "--find-links", self.wheels) if args[0] == "install" else ()
        proc = run([self.bin("python"), "-m", "pip", *args[:1], *offline, *args[1:]], env=self.env)
        if check:
            assert proc.returncode == 0, f"pip {' '.join(map(str, args))}:\n{proc.stdout}{proc.stderr}"
        return proc

    def vscen(self, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return run([self.bin("vscen"), *args], env=self.env, cwd=cwd, timeout=120)

    def pytest(self, *args, cwd: Path) -> subprocess.CompletedProcess:
        return run([self.bin("python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                   env=self.env, cwd=cwd, timeout=300)

    def plugins(self) -> dict:
        proc = self.vscen("plugins", "--json")
        assert proc.returncode == 0, proc.stderr
        return {p["name"]: p for p in json.loads(proc.stdout)}


# -- the example, installed by pip beside vscen ------------------------------------------------


def test_the_example_plugin_installed_listed_used_tested_and_uninstalled(tmp_path_factory, tmp_path):
    venv = Venv(tmp_path / "venv", wheelhouse(tmp_path_factory))
    assert "example" not in venv.plugins()
    example = copy_source(EXAMPLE, tmp_path / "vscen-example")
    venv.pip("install", example)

    # listed, with its distribution, version and what it registers
    plugins = venv.plugins()
    info = plugins["example"]
    assert {k: info[k] for k in ("name", "distribution", "version", "module", "status", "reason")} == {
        "name": "example", "distribution": "vscen-example", "version": "1.0.0", "module": "vscen_example",
        "status": "loaded", "reason": ""}
    assert info["registers"] == {"features": ["low-priority"], "scenarios": ["build-box"], "settings": ["cpu_shares"],
                                 "facts": ["example.load"], "commands": ["example"]}
    assert info["hooks"] == ["vscen_register_commands", "vscen_register_facts", "vscen_register_features",
                             "vscen_register_scenarios", "vscen_register_settings"]
    assert plugins["storage"]["distribution"] == "vscen" and plugins["storage"]["status"] == "loaded"
    text = venv.vscen("plugins").stdout
    assert ("example (vscen-example 1.0.0) loaded: commands: example; facts: example.load; features: low-priority; "
            "scenarios: build-box; settings: cpu_shares") in text
    # its option, its command and its fact, which 'vscen host snapshot' records
    assert "--cpu-shares SHARES" in venv.vscen("run", "--help").stdout
    assert "example" in venv.vscen("--help").stdout

    # used
    out = tmp_path / "out"
    proc = venv.vscen("run", "build-box", "--dry-run", "--connect", "test:///default", "--name", "bb1",
                      "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "<name>bb1</name>" in proc.stdout
    assert "<description>build box: 8 vCPUs, 16384 MiB, made by vscen-example</description>" in proc.stdout
    assert "<shares>256</shares>" in proc.stdout and "<graphics" not in proc.stdout
    assert "scenarios: build-box" in proc.stderr and "low-priority (implied by build-box)" in proc.stderr
    assert not out.exists()
    proc = venv.vscen("run", "build-box", "--feature", "+graphics", "--dry-run", "--connect", "test:///default")
    assert proc.returncode == 3
    assert "a build box is headless: use 'virsh console' (rule of plugin 'example')" in proc.stderr

    # its own tests pass against the installed vscen and the installed plugin
    proc = venv.pytest(cwd=example)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "14 passed" in proc.stdout

    # uninstalled: gone
    venv.pip("uninstall", "-y", "vscen-example")
    plugins = venv.plugins()
    assert "example" not in plugins and plugins["storage"]["status"] == "loaded"
    assert not any("vscen-example" == p["distribution"] for p in plugins.values())
    proc = venv.vscen("run", "build-box", "--dry-run", "--connect", "test:///default")
    assert proc.returncode == 2 and "unknown scenario 'build-box'" in proc.stderr
    assert "--cpu-shares" not in venv.vscen("run", "--help").stdout


# -- disabling by name: the environment and the config files -----------------------------------

PLUGIN = '''
from vscen import Feature, Scenario, hookimpl

{marker}

def _describe(domain, ctx):
    domain.ensure("description").text("{text}")


@hookimpl
def vscen_register_features(register):
    register(Feature(name="{feature}", summary="{text}", apply=_describe))


@hookimpl
def vscen_register_scenarios(register):
    register(Scenario(name="{feature}-box", summary="{text}", features=("{feature}",)))
'''


def plugin_code(feature: str, text: str = "", marker: str = "") -> str:
    return PLUGIN.format(feature=feature, text=text or f"from {feature}", marker=marker)


def write_dist(site: Path, dist: str, entry: str, module: str, code: str, version: str = "1.0") -> None:
    """A distribution as pip leaves it on sys.path: the module and its dist-info."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[vscen]\n{entry} = {module}\n")


def builtins() -> list[str]:
    import importlib_metadata

    return sorted(ep.name for ep in importlib_metadata.distribution("vscen").entry_points.select(group="vscen"))


def vscen_cli(*args, env: dict) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "vscen.cli", *args], env=env, timeout=120)


@pytest.fixture
def site(tmp_path):
    """Two installed third-party distributions (fake-a, fake-b) on PYTHONPATH; the built-in
    plugins disabled by the environment."""
    root = tmp_path / "site"
    write_dist(root, "vscen-fake-a", "fake-a", "vscen_fake_a", plugin_code("fa"))
    write_dist(root, "vscen-fake-b", "fake-b", "vscen_fake_b", plugin_code("fb"))
    return root


def plugins_json(env) -> dict:
    proc = vscen_cli("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return {p["name"]: p for p in json.loads(proc.stdout)}


def test_the_user_config_disables_plugins_by_name(site, tmp_path):
    env = clean_env(tmp_path, PYTHONPATH=str(site), VSCEN_DISABLED_PLUGINS=",".join(builtins()))
    config = tmp_path / "config" / "vscen" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('memory = "1GiB"\ndisabled_plugins = ["fake-a", "no-such-plugin"]\n')
    infos = plugins_json(env)
    assert infos["fake-a"]["status"] == "disabled"
    assert infos["fake-a"]["reason"] == f"listed in disabled_plugins of config {config}"
    assert infos["fake-a"]["registers"] == {} and infos["fake-a"]["distribution"] == "vscen-fake-a"
    assert infos["fake-b"]["status"] == "loaded"
    assert infos["storage"]["reason"] == "listed in VSCEN_DISABLED_PLUGINS"
    proc = vscen_cli("list", env=env)
    assert proc.returncode == 0 and "fb-box" in proc.stdout and "fa-box" not in proc.stdout
    # the key is no guest setting: a run with that config works
    proc = vscen_cli("run", "fb-box", "--dry-run", "--connect", "test:///default", env=env)
    assert proc.returncode == 0, proc.stderr
    assert '<memory unit="KiB">1048576</memory>' in proc.stdout
    proc = vscen_cli("run", "fa-box", "--dry-run", "--connect", "test:///default", env=env)
    assert proc.returncode == 2 and "unknown scenario 'fa-box'" in proc.stderr


def test_a_config_given_with_config_disables_plugins_too(site, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("VSCEN_DISABLED_PLUGINS", ",".join(builtins()))
    import vscen.config
    from vscen.pipeline import Request, load

    system = tmp_path / "etc" / "config.toml"
    system.parent.mkdir()
    system.write_text('disabled_plugins = ["fake-b"]\n')
    monkeypatch.setattr(vscen.config, "SYSTEM_CONFIG", system)
    mine = tmp_path / "mine.toml"
    mine.write_text('disabled_plugins = ["fake-a"]\n')
    try:
        pm, reg = load(Request(scenarios=[], config=mine))
        assert pm.infos["fake-a"].reason == f"listed in disabled_plugins of config {mine}"
        assert pm.infos["fake-b"].reason == f"listed in disabled_plugins of config {system}"
        assert {pm.infos[n].status for n in ("fake-a", "fake-b")} == {"disabled"}
        pm, reg = load(Request(scenarios=[]))  # without --config: only the system's
        assert pm.infos["fake-a"].status == "loaded" and set(reg.scenarios) == {"fa-box"}
    finally:
        for module in ("vscen_fake_a", "vscen_fake_b"):
            sys.modules.pop(module, None)


def test_a_malformed_disabled_plugins_is_a_one_line_error(site, tmp_path):
    env = clean_env(tmp_path, PYTHONPATH=str(site))
    config = tmp_path / "config" / "vscen" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('disabled_plugins = "fake-a"\n')
    proc = vscen_cli("plugins", env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: disabled_plugins: 'fake-a' in config {config} is not a list of plugin names; "
        "write disabled_plugins = [\"name\", ...] (see 'vscen plugins')"]


# -- VSCEN_PLUGIN_PATH: local modules and packages ----------------------------------------------


@pytest.fixture
def local(tmp_path, monkeypatch):
    """A plugin directory: a module, a package with a relative import, and files that are no
    plugins (each would leave a trace if imported). Its modules are forgotten afterwards."""
    root = tmp_path / "plugins"
    (root / "localpkg").mkdir(parents=True)
    trace = tmp_path / "imported"
    touch = f"open({str(trace)!r}, 'a').write(__name__ + '\\n')"
    (root / "localmod.py").write_text(plugin_code("lm", "from localmod") + "\n__version__ = '0.3'\n")
    (root / "localpkg" / "__init__.py").write_text("from .rules import vscen_register_features  # noqa\n")
    (root / "localpkg" / "rules.py").write_text(plugin_code("lp", "from localpkg").replace(
        "@hookimpl\ndef vscen_register_scenarios", "def _unused"))
    for name in ("setup.py", "conftest.py", "_private.py", "test_localmod.py"):
        (root / name).write_text(touch + "\n")
    (root / "notes.txt").write_text("not python\n")
    (root / "data").mkdir()  # a directory without __init__.py
    (root / "data" / "x.py").write_text(touch + "\n")
    monkeypatch.setenv("VSCEN_DISABLED_PLUGINS", ",".join(builtins()))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if name.startswith(("localmod", "localpkg", "vscen_fake", "vscen_shadow", "shadowmod", "brokenmod")):
            del sys.modules[name]


def test_local_modules_and_packages_are_plugins_named_after_them(local, tmp_path, monkeypatch):
    from vscen.manager import get_plugin_manager
    from vscen.registry import build_registry

    monkeypatch.setenv("VSCEN_PLUGIN_PATH", str(local))
    pm = get_plugin_manager()
    reg = build_registry(pm)
    mod, pkg = pm.infos["localmod"], pm.infos["localpkg"]
    assert (mod.status, mod.distribution, mod.version, mod.module) == ("loaded", f"(local: {local})", "0.3", "localmod")
    assert (pkg.status, pkg.distribution, pkg.version) == ("loaded", f"(local: {local})", "-")
    assert mod.registers == {"features": ["lm"], "scenarios": ["lm-box"]}
    assert pkg.registers == {"features": ["lp"]} and pkg.hooks == ["vscen_register_features"]
    assert reg.plugin_of("lp") == "localpkg"
    assert not (tmp_path / "imported").exists()  # setup.py, conftest.py, _private, test_*, data/ untouched
    assert not {"setup", "conftest", "_private", "test_localmod", "data", "notes"} & set(pm.infos)
    assert pm.warnings() == []
    # a second plugin manager in the same process reuses the modules
    assert get_plugin_manager().get_plugin("localmod") is pm.get_plugin("localmod")


def test_local_plugins_through_the_command_line(local, tmp_path):
    env = clean_env(tmp_path, VSCEN_PLUGIN_PATH=f"{local}{os.pathsep}{tmp_path / 'nope'}",
                    VSCEN_DISABLED_PLUGINS=",".join(builtins()))
    proc = vscen_cli("plugins", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"localmod ((local: {local}) 0.3) loaded: features: lm; scenarios: lm-box" in proc.stdout
    assert f"warning: VSCEN_PLUGIN_PATH: '{tmp_path / 'nope'}' is not a directory, a package or a .py file (ignored)" in proc.stderr
    proc = vscen_cli("run", "lm-box", "--dry-run", "--connect", "test:///default", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "<description>from localmod</description>" in proc.stdout


def test_a_local_plugin_replaces_the_installed_one_of_its_module(local, tmp_path, monkeypatch):
    from vscen.manager import get_plugin_manager
    from vscen.registry import build_registry

    site = tmp_path / "site"
    write_dist(site, "vscen-shadow", "shadow", "vscen_shadow", plugin_code("sh", "installed"))
    work = tmp_path / "work"
    (work / "vscen_shadow").mkdir(parents=True)
    (work / "vscen_shadow" / "__init__.py").write_text(plugin_code("sh", "working copy"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("VSCEN_PLUGIN_PATH", str(work / "vscen_shadow"))  # the package itself
    pm = get_plugin_manager()
    reg = build_registry(pm)
    installed, mine = pm.infos["shadow"], pm.infos["vscen_shadow"]
    assert (installed.status, installed.distribution) == ("disabled", "vscen-shadow")
    assert installed.reason == f"replaced by the local plugin 'vscen_shadow' from {work / 'vscen_shadow'} (VSCEN_PLUGIN_PATH)"
    assert (mine.status, mine.distribution) == ("loaded", f"(local: {work / 'vscen_shadow'})")
    assert reg.features["sh"].summary == "working copy" and reg.plugin_of("sh") == "vscen_shadow"
    assert pm.warnings() == []


def test_local_plugins_broken_disabled_or_clashing(local, tmp_path, monkeypatch):
    from vscen.manager import get_plugin_manager

    other = tmp_path / "other"
    other.mkdir()
    (other / "brokenmod.py").write_text("raise ImportError('needs libfoo')\n")
    (other / "json.py").write_text("x = 1\n")  # the standard library's name
    (other / "localmod.py").write_text("raise SystemExit('never imported: the first directory has localmod')\n")
    monkeypatch.setenv("VSCEN_PLUGIN_PATH", os.pathsep.join([str(local), str(other)]))
    monkeypatch.setenv("VSCEN_DISABLED_PLUGINS", ",".join(builtins() + ["localpkg"]))
    pm = get_plugin_manager()
    assert pm.infos["localpkg"].status == "disabled" and "localpkg" not in sys.modules
    assert pm.infos["localmod"].status == "loaded"
    broken = pm.infos["brokenmod"]
    assert (broken.status, broken.reason) == ("broken", "ImportError: needs libfoo")
    assert "brokenmod" not in sys.modules
    assert pm.infos["json"].status == "broken"
    assert pm.infos["json"].reason == "ImportError: 'json' is the name of a standard library module; rename the local one"
    assert pm.warnings() == [
        f"plugin 'brokenmod' from (local: {other}) - is broken: ImportError: needs libfoo "
        "(disable it with VSCEN_DISABLED_PLUGINS=brokenmod)",
        f"plugin 'json' from (local: {other}) - is broken: ImportError: 'json' is the name of a standard "
        "library module; rename the local one (disable it with VSCEN_DISABLED_PLUGINS=json)",
        f"VSCEN_PLUGIN_PATH: 'localmod' in {other} ignored: {local} has one of that name",
    ]


def test_no_local_plugins_without_entry_points(local, monkeypatch):
    """entry_points=False means only the plugins given: tests stay isolated."""
    from vscen.manager import get_plugin_manager

    monkeypatch.setenv("VSCEN_PLUGIN_PATH", str(local))
    pm = get_plugin_manager(entry_points=False)
    assert pm.infos == {} and "localmod" not in sys.modules
