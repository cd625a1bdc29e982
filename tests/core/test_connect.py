"""The connection: an explicit URI must work; with none, an unreachable daemon means the
embedded test:///default driver with the reference host, said on stderr (the README's main
job on a fresh machine)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import vscen.host.connect as connect
from vscen.errors import LibvirtError

NOWHERE = "qemu+unix:///system?socket=/nonexistent/vscen-test.sock"


@pytest.fixture
def no_daemon(monkeypatch):
    monkeypatch.setattr(connect, "DEFAULT_URI", NOWHERE)


def test_no_uri_and_no_daemon_falls_back_to_the_embedded_driver(no_daemon):
    conn = connect.open_connection(None)
    try:
        assert conn.uri == "test:///default" and conn.embedded
        assert NOWHERE in conn.note and "embedded" in conn.note
    finally:
        conn.close()


def test_an_explicit_uri_that_cannot_be_reached_is_an_error(no_daemon):
    with pytest.raises(LibvirtError) as exc:
        connect.open_connection(NOWHERE)
    assert str(exc.value).startswith(f"connect: cannot open '{NOWHERE}'")


def test_libvirt_default_uri_counts_as_explicit(no_daemon, monkeypatch):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", NOWHERE)
    with pytest.raises(LibvirtError):
        connect.open_connection(None)


def test_the_main_job_runs_on_the_embedded_default(no_daemon, tmp_path):
    """`vscen run secure-vm` with no daemon: a SEV-ES guest for the reference host, defined on
    the embedded driver, the XML written under the data dir, the fallback said on stderr."""
    from vscen.cli import app

    result = CliRunner().invoke(app, ["run", "secure-vm", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "no libvirt daemon at" in result.stderr and "test:///default" in result.stderr
    assert "no libvirt daemon at" not in result.stdout  # the summary on stdout is the guest's
    xml = (tmp_path / "secure-vm" / "domain.xml").read_text()
    assert '<launchSecurity type="sev">' in xml and "<policy>0x0007</policy>" in xml


def test_libvirt_is_bound_lazily_and_python_keeps_its_own_flags():
    """The first open imports libvirt-python with RTLD_LAZY and puts Python's dlopen flags
    back: an extension imported afterwards is loaded as Python loads it; libvirt works."""
    import subprocess
    import sys

    script = """
import os, sys
before = sys.getdlopenflags()
import vscen.host.connect as c
conn = c.open_connection("test:///default")
assert sys.getdlopenflags() == before == os.RTLD_NOW, (sys.getdlopenflags(), before)
assert conn.conn.lookupByName("test").name() == "test" and conn.conn.getHostname()
conn.close()
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
