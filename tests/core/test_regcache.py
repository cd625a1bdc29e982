"""The registrations cache (``vscen.regcache``): what static plugins register, kept as data, and
each plugin imported only when one of its functions is called."""

from __future__ import annotations

import copy
import inspect
import json
import marshal
import os
import subprocess
import sys
from dataclasses import fields

import pytest
from coresupport import STATIC_PLUGIN, builtin_plugin_names, cli_env, vscen, write_dist

from vscen import cache, regcache
from vscen.registry import KINDS, load


def _registrations(root) -> dict:
    files = list((root / "cache" / "vscen").glob("registrations-*.marshal"))
    assert len(files) == 1, files
    return marshal.loads(files[0].read_bytes())["plugins"]


def _same_callables(original, copied) -> None:
    for f in fields(original):
        a, b = getattr(original, f.name), getattr(copied, f.name)
        if isinstance(b, regcache.Lazy):
            b = b.resolve()
        if callable(a) and not isinstance(a, type):
            assert b is a, f"{original.name}.{f.name}"


def test_every_builtin_plugin_is_kept_and_comes_back_equal(monkeypatch):
    monkeypatch.setattr(cache, "RECENT", 0)  # a plugin edited just now is kept here too
    pm, reg = load()
    for name in builtin_plugin_names():
        info = pm.infos[name]
        entry = regcache.entry_for(info, pm.get_plugin(name), reg, info.files, KINDS)  # Uncacheable: a failure
        assert entry["objects"], f"plugin {name} registers nothing?"
        for kind, encoded in entry["objects"].items():
            table = reg.table(kind)
            for original, data in zip([table[n] for n in info.registers[kind]], encoded, strict=True):
                copied = regcache.decode(marshal.loads(marshal.dumps(data)))
                assert copied == original
                assert type(copied) is type(original)
                _same_callables(original, copied)


def test_a_second_load_comes_from_the_cache_and_equals_the_first(monkeypatch):
    monkeypatch.setattr(cache, "RECENT", 0)
    pm1, reg1 = load()
    assert all(i.cached is None for i in pm1.infos.values())
    pm2, reg2 = load()
    cached = {n for n, i in pm2.infos.items() if i.cached is not None}
    assert cached == set(builtin_plugin_names())
    for kind in ("features", "scenarios", "validators", "host-actions", "settings", "facts", "commands"):
        assert list(reg2.table(kind)) == list(reg1.table(kind)), kind  # the same order too
        for name, obj in reg1.table(kind).items():
            assert reg2.table(kind)[name] == obj
            _same_callables(obj, reg2.table(kind)[name])
    assert reg2.owner == reg1.owner
    assert {n: (i.status, i.hooks, i.registers) for n, i in pm2.infos.items()} == \
           {n: (i.status, i.hooks, i.registers) for n, i in pm1.infos.items()}


def test_nothing_is_cached_with_vscen_no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.OFF_ENV, "1")
    load()
    pm, _ = load()
    assert all(i.cached is None for i in pm.infos.values())
    assert not list((tmp_path / "cache").glob("**/registrations-*"))


MODULES = """
import sys
sys.argv = ["vscen", "run", "secure-vm", "--dry-run"]
from vscen.cli import main
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted(m for m in sys.modules if m.startswith("vscen_"))), file=sys.stderr)
""".replace("import sys", "import json, sys", 1)


def _imported(env: dict, cwd) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", MODULES], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stderr.splitlines()[-1])


def test_a_run_from_the_cache_imports_only_the_plugins_it_uses(tmp_path):
    past = os.stat(tmp_path).st_mtime - 60  # the working directory is on sys.path: not "just changed"
    os.utime(tmp_path, (past, past))
    env = cli_env(disable_builtins=False, LIBVIRT_DEFAULT_URI="test:///default")
    eager = _imported(env, tmp_path)  # no cache yet: every plugin is imported, and kept
    assert "vscen_fleet" in eager and "vscen_attest" in eager
    lazy = _imported(env, tmp_path)
    assert "vscen_fleet" not in lazy and "vscen_attest" not in lazy and "vscen_soft_rt" not in lazy
    # checks that do not apply to secure-vm: a domain check another scenario names, a setting
    # nobody gave, the module of host devices nobody asked for
    assert "vscen_easy_migration" not in lazy and "vscen_cloud_init" not in lazy
    assert "vscen_host_hardware" in lazy and "vscen_host_hardware.devices" not in lazy
    assert "vscen_launch_security" in lazy and "vscen_tpm" in lazy  # what secure-vm runs
    assert _imported(env | {cache.OFF_ENV: "1"}, tmp_path) == eager


def test_the_output_is_the_same_from_the_cache():
    env = cli_env(disable_builtins=False, LIBVIRT_DEFAULT_URI="test:///default")
    first = vscen("run", "secure-vm", "--dry-run", env=env)
    second = vscen("run", "secure-vm", "--dry-run", env=env)
    assert first.returncode == second.returncode == 0, second.stderr
    assert (first.stdout, first.stderr) == (second.stdout, second.stderr)
    plugins = vscen("plugins", "--json", env=env)
    assert json.loads(plugins.stdout) == json.loads(vscen("plugins", "--json", env=env | {cache.OFF_ENV: "1"}).stdout)


def _listed(env) -> set[str]:
    proc = vscen("list", "features", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return {f["name"] for f in json.loads(proc.stdout)}


def test_a_changed_plugin_is_registered_anew(tmp_path):
    root = write_dist(tmp_path / "site", "vscen-cached", "1.0", "cached", "vscen_cached",
                      STATIC_PLUGIN.format(name="cached-one", text="one"))
    module = root / "vscen_cached" / "__init__.py"
    past = module.stat().st_mtime - 60
    for path in (module, module.parent, root):
        os.utime(path, (past, past))
    env = cli_env(root)
    assert "cached-one" in _listed(env)
    assert "cached-one" in _listed(env)
    assert _registrations(tmp_path)["cached"]["value"] == "vscen_cached"
    module.write_text(STATIC_PLUGIN.format(name="cached-two", text="two"))  # an editable install, edited
    assert "cached-two" in _listed(env) and "cached-one" not in _listed(env)


def test_a_plugin_that_does_not_say_static_is_imported_every_time(tmp_path):
    code = STATIC_PLUGIN.format(name="dynamic", text="x").replace("VSCEN_STATIC = True", "")
    env = cli_env(write_dist(tmp_path / "site", "vscen-dyn", "1.0", "dyn", "vscen_dyn", code))
    assert "dynamic" in _listed(env) and "dynamic" in _listed(env)
    files = list((tmp_path / "cache" / "vscen").glob("registrations-*.marshal"))
    assert all("dyn" not in marshal.loads(f.read_bytes())["plugins"] for f in files)


def test_a_static_plugin_registering_a_lambda_is_not_kept():
    from vscen import Feature

    with pytest.raises(regcache.Uncacheable, match="not a module-level function"):
        regcache.encode(Feature(name="x", summary="x", apply=lambda d, c: None))

    class Own:
        pass

    with pytest.raises(regcache.Uncacheable):
        regcache.encode(Feature(name="x", summary="x", details=Own()))  # type: ignore[arg-type]


def test_lazy_is_the_function_it_names():
    lazy = regcache.Lazy("json", "dumps")
    assert lazy({"a": 1}) == '{"a": 1}'
    assert lazy.__doc__ == json.dumps.__doc__ and lazy.__name__ == "dumps"
    assert inspect.signature(lazy) == inspect.signature(json.dumps)
    assert repr(lazy) == "<lazy json:dumps>"
    absent = regcache.Lazy("vscen_no_such_module_here", "f")
    assert copy.deepcopy(absent).qualname == "f"  # looking is not importing
    with pytest.raises(ModuleNotFoundError):
        absent()
