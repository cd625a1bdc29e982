"""vscen's caches (``vscen.cache``, ``vscen.plugincache``): used while what they were read from
is unchanged, picked up anew when it changes (a plugin installed, an entry point added, a
plugin's code edited, the schema changed), ignored when unreadable or corrupt, never needed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from coresupport import builtin_plugin_names, write_dist

from vscen import cache, plugincache
from vscen.manager import get_plugin_manager
from vscen.registry import build_registry

PLUGIN = '''
from vscen import Feature, hookimpl


@hookimpl
def vscen_register_features(register):
    register(Feature(name="{feature}", summary="from the cache tests"))
'''


def backdate(*roots: Path) -> None:
    """Everything under *roots* as installed a minute ago (vscen caches nothing younger)."""
    past = time.time() - 60
    for root in roots:
        for path in [*root.rglob("*"), root]:
            os.utime(path, (past, past))


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path for distributions; the other sys.path entries may have changed
    just now (other tests): the cache does not wait for them."""
    monkeypatch.setattr(cache, "RECENT", 0)
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for path in root.iterdir():
        if path.is_dir() and not path.name.endswith(".dist-info"):
            sys.modules.pop(path.name, None)


def features(**kw) -> set[str]:
    pm = get_plugin_manager(disabled=tuple(builtin_plugin_names()), **kw)
    return set(build_registry(pm).features)


def forget(*modules: str) -> None:
    for name in modules:
        sys.modules.pop(name, None)


def test_the_entry_points_come_from_the_cache_until_a_distribution_is_installed(site, monkeypatch):
    write_dist(site, "vscen-cache-a", "1.0", "cache-a", "vscen_cache_a", PLUGIN.format(feature="a"))
    backdate(site)
    assert plugincache.read("vscen") is None
    assert features() == {"a"}
    cached = plugincache.read("vscen")
    assert {e["name"]: (e["distribution"], e["version"]) for e in cached}["cache-a"] == ("vscen-cache-a", "1.0")

    def no_metadata(group):
        raise AssertionError("importlib_metadata read although the cache is current")

    monkeypatch.setattr(plugincache, "discover", no_metadata)
    forget("vscen_cache_a")
    pm = get_plugin_manager(disabled=tuple(builtin_plugin_names()))
    assert (pm.infos["cache-a"].distribution, pm.infos["cache-a"].version) == ("vscen-cache-a", "1.0")
    monkeypatch.undo()
    monkeypatch.setattr(cache, "RECENT", 0)
    monkeypatch.syspath_prepend(str(site))

    write_dist(site, "vscen-cache-b", "2.0", "cache-b", "vscen_cache_b", PLUGIN.format(feature="b"))
    assert plugincache.read("vscen") is None  # the directory changed: stale
    forget("vscen_cache_a")
    assert features() == {"a", "b"}


def test_an_entry_point_added_in_place_is_seen(site, tmp_path):
    """setuptools rewrites an .egg-info's entry_points.txt in place (a development install)."""
    write_dist(site, "vscen-cache-a", "1.0", "cache-a", "vscen_cache_a", PLUGIN.format(feature="a"))
    (site / "vscen_cache_c").mkdir()
    (site / "vscen_cache_c" / "__init__.py").write_text(PLUGIN.format(feature="c"))
    egg = site / "vscen_cache_c.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: vscen-cache-c\nVersion: 0.1\n")
    (egg / "entry_points.txt").write_text("[console_scripts]\nc = vscen_cache_c:main\n")
    backdate(site)
    assert features() == {"a"}
    assert plugincache.read("vscen") is not None
    (egg / "entry_points.txt").write_text("[vscen]\ncache-c = vscen_cache_c\n")
    backdate(site)  # even with the directory's times as they were
    os.utime(egg / "entry_points.txt")
    assert plugincache.read("vscen") is None
    forget("vscen_cache_a")
    assert features() == {"a", "c"}


def test_a_changed_plugin_is_never_served_stale(site):
    """Only the discovery is cached: an edited plugin (an editable install) registers anew."""
    write_dist(site, "vscen-cache-a", "1.0", "cache-a", "vscen_cache_a", PLUGIN.format(feature="a"))
    backdate(site)
    assert features() == {"a"}
    (site / "vscen_cache_a" / "__init__.py").write_text(PLUGIN.format(feature="renamed"))
    forget("vscen_cache_a")
    assert plugincache.read("vscen") is not None
    assert features() == {"renamed"}


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"format": 1, "key": 3}', b"\xff\xfe", b"[]",
                                     b'{"format": 1, "key": {}, "files": {}, "entry_points": [1]}'])
def test_a_corrupt_cache_is_ignored_and_rewritten(site, content):
    write_dist(site, "vscen-cache-a", "1.0", "cache-a", "vscen_cache_a", PLUGIN.format(feature="a"))
    backdate(site)
    assert features() == {"a"}
    path = plugincache._file("vscen")
    path.write_bytes(content)
    forget("vscen_cache_a")
    assert plugincache.read("vscen") is None
    assert features() == {"a"}
    assert plugincache.read("vscen") is not None


def test_a_stale_cache_changes_nothing(site):
    """A cache whose recorded identities differ names a plugin that is gone: not used."""
    write_dist(site, "vscen-cache-a", "1.0", "cache-a", "vscen_cache_a", PLUGIN.format(feature="a"))
    write_dist(site, "vscen-cache-b", "1.0", "cache-b", "vscen_cache_b", PLUGIN.format(feature="b"))
    backdate(site)
    assert features() == {"a", "b"}
    import shutil

    shutil.rmtree(site / "vscen_cache_b-1.0.dist-info")
    forget("vscen_cache_a", "vscen_cache_b")
    assert features() == {"a"}


def test_no_cache_where_it_cannot_be_written_or_is_turned_off(site, monkeypatch, tmp_path):
    write_dist(site, "vscen-cache-a", "1.0", "cache-a", "vscen_cache_a", PLUGIN.format(feature="a"))
    backdate(site)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # cache_dir() cannot be made
    assert features() == {"a"}
    assert plugincache.read("vscen") is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    monkeypatch.setenv(cache.OFF_ENV, "1")
    forget("vscen_cache_a")
    assert features() == {"a"}
    assert not (tmp_path / "cache2").exists()


def test_nothing_is_cached_while_it_changes(site, monkeypatch):
    """A directory changed within the last seconds could change again within the same clock
    tick, unseen: nothing is cached until it has settled."""
    monkeypatch.setattr(cache, "RECENT", 3.0)
    write_dist(site, "vscen-cache-a", "1.0", "cache-a", "vscen_cache_a", PLUGIN.format(feature="a"))
    assert features() == {"a"}
    assert not plugincache._file("vscen").exists()


def test_the_schema_verdicts_follow_the_schema_files(tmp_path, monkeypatch):
    from vscen import validate

    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for rng in validate.SCHEMA_DIR.glob("*.rng"):
        (schemas / rng.name).write_bytes(rng.read_bytes())
    backdate(schemas)
    xml = "<domain type='kvm'><name>c</name><memory>1024</memory><os><type>hvm</type></os></domain>"
    assert not cache.known_valid(schemas, xml)
    cache.remember_valid(schemas, xml)
    assert cache.known_valid(schemas, xml)
    assert not cache.known_valid(schemas, xml + " ")  # compared whole
    cache._SCHEMA.update(key=None, data=None)  # as a new process
    assert cache.known_valid(schemas, xml)
    os.utime(schemas / "domain.rng", (time.time() - 30, time.time() - 30))
    assert not cache.known_valid(schemas, xml)  # a schema file changed: validated again


def test_an_invalid_domain_is_refused_every_time():
    from vscen.errors import InvalidDomainError
    from vscen.validate import SCHEMA_DIR, check_schema

    bad = "<domain type='kvm'><name>c</name><nosuch/></domain>"
    for _ in range(2):
        with pytest.raises(InvalidDomainError):
            check_schema(bad)
    assert not cache.known_valid(SCHEMA_DIR, bad)


DATACLASS_SCRIPT = '''
import dataclasses, sys
from vscen.cli import codecache

installed = codecache.install()


@dataclasses.dataclass(frozen=True, order=True)
class Point:
    x: int
    label: str = "p"
    tags: tuple = dataclasses.field(default_factory=tuple)


p = Point(1)
assert p == Point(1, "p", ()) and p < Point(2) and hash(p) == hash(Point(1))
assert repr(p) == "Point(x=1, label='p', tags=())"
try:
    p.x = 2
    raise SystemExit("frozen instance changed")
except dataclasses.FrozenInstanceError:
    pass
print(installed, sorted(k for k in codecache._NEW if "Point" in k or "x" in k) != [])
'''


@pytest.mark.skipif(sys.version_info[:2] not in ((3, 10), (3, 11)), reason="only where dataclasses is known")
def test_the_dataclass_code_cache_changes_nothing_but_the_time(tmp_path):
    import subprocess

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop(cache.OFF_ENV, None)

    def run(**extra):
        proc = subprocess.run([sys.executable, "-c", DATACLASS_SCRIPT], env=env | extra, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert run() == ["True", "True"]  # compiled and kept
    [path] = (tmp_path / "cache" / "vscen").glob("dataclass-code-*.marshal")
    assert run() == ["True", "False"]  # served from the cache: nothing compiled
    path.write_bytes(b"\x00garbage")
    assert run() == ["True", "True"]  # a corrupt cache is compiled anew
    assert run(**{cache.OFF_ENV: "1"}) == ["False", "False"]
