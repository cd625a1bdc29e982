"""Shared test fixtures: recorded hosts, a fresh plugin manager, rendering helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
#: recorded host facts, copied into the repository with their sources (see its README.md)
RECORDED_HOSTS = DATA / "hosts"

#: recorded hosts: name -> the files (caps and/or domcaps) that describe it
HOSTS = {
    "amd-sev": ["caps-amd-zen5.xml", "domcaps-amd-sev.xml"],
    "intel-tdx": ["caps-numa4-hugepages.xml", "domcaps-intel-tdx.xml"],
    "kvm": ["caps-numa2-hmat.xml", "domcaps-kvm-q35.xml"],
    "tcg": ["domcaps-tcg.xml"],
    "local-tcg": ["caps-local-libvirt9.xml", "domcaps-local-libvirt9-tcg.xml"],
    "local-kvm": ["caps-local-libvirt9.xml", "domcaps-local-libvirt9-q35.xml"],
    "aarch64": ["domcaps-aarch64-virt.xml"],
    "numa4-hugepages": ["caps-numa4-hugepages.xml", "domcaps-kvm-q35.xml"],
}


def host_files(name: str) -> list[Path]:
    """The recorded files of host *name* (see HOSTS)."""
    return [RECORDED_HOSTS / f for f in HOSTS[name]]


def host_facts(name: str):
    """Parsed HostFacts of recorded host *name*."""
    from vscen.host.facts import load_files

    return load_files(host_files(name))


def render_for(scenarios, host: str | None = "amd-sev", **kw):
    """Run the pipeline (no host changes) for *scenarios* on a recorded host.

    Keyword arguments are those of vscen.pipeline.Request; ``options`` holds settings.
    """
    from vscen.pipeline import Request, render

    files = host_files(host) if host else []
    return render(Request(scenarios=list(scenarios), host_facts=files, **kw), keep_connection=False)


def beside_repository(path) -> bool:
    """Whether *path* lies next to the checkout (in its parent folder) but outside it: where a
    test would find ``../shared`` on a developer's machine and nothing on a contributor's."""
    if ROOT.parent == ROOT.parent.parent or isinstance(path, int):
        return False
    try:
        full = Path(os.path.abspath(os.fsdecode(path)))
    except (TypeError, ValueError):
        return False
    return full.is_relative_to(ROOT.parent) and not full.is_relative_to(ROOT)


#: files the tests opened or listed beside the repository (see _reads_stay_in_the_repository)
READ_BESIDE: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event in ("open", "os.listdir", "os.scandir") and args and beside_repository(args[0]):
        READ_BESIDE.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _reads_stay_in_the_repository():
    """A test that reads a file beside the checkout fails: the suite must pass from a plain
    clone, where nothing is beside it."""
    before = len(READ_BESIDE)
    yield
    read = READ_BESIDE[before:]
    if read:
        pytest.fail(f"the test read outside the repository: {sorted(set(read))}")


@pytest.fixture
def recorded_host():
    return host_facts


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    """No test reads the real user's config or writes to the real data dir."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("OSINFO_DB_PATH", "OSINFO_SYSTEM_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    monkeypatch.delenv("VSCEN_DISABLED_PLUGINS", raising=False)
    monkeypatch.delenv("VSCEN_PLUGIN_PATH", raising=False)


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="rewrite the golden XML files under tests/data/golden from the current output")


@pytest.fixture
def results():
    """render(**request) that closes the connections afterwards."""
    from vscen.pipeline import Request, render

    made = []

    def make(**kw):
        result = render(Request(**kw))
        made.append(result)
        return result

    yield make
    for result in made:
        if result.connection is not None:
            result.connection.close()


@pytest.fixture
def regen_golden(request) -> bool:
    return request.config.getoption("--regen-golden")


def qemu_system():
    """An open qemu:///system connection, or None when no libvirt daemon runs here."""
    try:
        import libvirt

        libvirt.registerErrorHandler(lambda _c, _e: None, None)
        return libvirt.open("qemu:///system")
    except Exception:
        return None


def system_or_skip():
    """An open qemu:///system connection; the test is skipped where no daemon runs, except in
    CI, where .ci/run starts one: there its absence is a failure."""
    import os

    conn = qemu_system()
    if conn is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run libvirtd (scripts/setup.sh --daemons), but qemu:///system is unreachable")
        pytest.skip("no libvirt daemon at qemu:///system")
    return conn


OSINFO_DIR = "/usr/share/osinfo"


def osinfo_or_skip() -> str:
    """The osinfo database of the Debian package osinfo-db (what --os reads); the test is
    skipped where it is not installed, except in CI, where scripts/setup.sh installs it."""
    import os

    if not os.path.isdir(os.path.join(OSINFO_DIR, "os")):
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the osinfo database (scripts/setup.sh installs osinfo-db), but {OSINFO_DIR} is absent")
        pytest.skip(f"no osinfo database at {OSINFO_DIR} (apt-get install osinfo-db)")
    return OSINFO_DIR


@pytest.fixture
def system_conn():
    """qemu:///system for one test (see system_or_skip)."""
    conn = system_or_skip()
    yield conn
    conn.close()


def define_on_test_driver(xml: str):
    """Define *xml* on test:///default with VIR_DOMAIN_DEFINE_VALIDATE (libvirt's schema and
    parser), undefine it, and return the XML libvirt made of it, parsed."""
    import libvirt
    from lxml import etree

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        try:
            return etree.fromstring(dom.XMLDesc(0).encode())
        finally:
            dom.undefine()
    finally:
        conn.close()


@pytest.fixture
def define():
    """define_on_test_driver, as a fixture."""
    return define_on_test_driver
