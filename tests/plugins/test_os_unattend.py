"""--unattend admin-password-file=FILE: Windows installed unattended (issue 11, item 5).

The answer file is made by the osinfo database's own install scripts (the XSLT templates
virt-install runs through libosinfo); it is checked here as Windows Setup reads it (the
components and settings quickemu's and virt-install's files hold), the ISO is read back with
isoinfo (an independent reader, Joliet names), and the password is looked for everywhere it
must not be: the XML, the notes, the plan, the journal record.
"""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest
from conftest import osinfo_or_skip, render_for
from lxml import etree
from vscen_os import osdb, unattend

from vscen.errors import UsageError, VscenError

NS = "{urn:schemas-microsoft-com:unattend}"
PASSWORD = "S3cret&<pw>\"x"


@pytest.fixture(autouse=True)
def _fresh_db():
    osinfo_or_skip()
    osdb.clear()
    yield
    osdb.clear()


@pytest.fixture
def pwfile(tmp_path):
    path = tmp_path / "admin.txt"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def render(pwfile, os_="win11", **options):
    return render_for(("desktop",), host="kvm", options={"name": "osd-win", "os": os_, "cdrom": "/isos/Win11.iso",
                                                          "unattend": f"admin-password-file={pwfile}", **options})


def test_the_setting_says_what_it_takes(tmp_path, pwfile):
    assert unattend.parse(f"admin-password-file={pwfile},language=de-DE") == {
        "admin-password-file": str(pwfile), "language": "de-DE"}
    for text, message in (("product-key=X", "needs admin-password-file=FILE"),
                          (f"admin-password-file={pwfile},colour=red", "is not KEY=VALUE with KEY one of"),
                          (f"admin-password-file={tmp_path}/none", "which is not a readable file")):
        with pytest.raises(ValueError, match=message):
            unattend.parse(text)
    with pytest.raises(UsageError, match=r"^unattend: 'product-key=X' needs admin-password-file=FILE"):
        render(pwfile, unattend="product-key=X")


def answer(pwfile, **opts):
    from types import SimpleNamespace

    s = SimpleNamespace(name="osd-win-with-a-long-name", arch=None,
                        unattend={"admin-password-file": str(pwfile), **opts})
    return unattend.generate(osdb.lookup("win11"), s, PASSWORD)


def test_the_answer_file_is_what_windows_setup_reads(pwfile):
    files = answer(pwfile)
    root = etree.fromstring(files["autounattend.xml"])  # well-formed
    assert root.tag == f"{NS}unattend"
    passes = {s.get("pass"): {c.get("name") for c in s.iterfind(f"{NS}component")} for s in root.iterfind(f"{NS}settings")}
    # the components quickemu's and virt-install's answer files configure, in their passes
    assert {"Microsoft-Windows-Setup", "Microsoft-Windows-International-Core-WinPE"} <= passes["windowsPE"]
    assert "Microsoft-Windows-Shell-Setup" in passes["oobeSystem"]
    assert all(c.get("processorArchitecture") == "amd64" for c in root.iter(f"{NS}component"))
    values = [v.text for v in root.iterfind(f".//{NS}AdministratorPassword/{NS}Value")]
    assert values == [PASSWORD]  # escaped in the XML, the very text once parsed
    assert root.findtext(f".//{NS}ComputerName") == "osd-win-with-a-" and len(root.findtext(f".//{NS}ComputerName")) == 15
    assert root.findtext(f".//{NS}UserData/{NS}AcceptEula") == "true"
    assert root.find(f".//{NS}DiskConfiguration/{NS}Disk/{NS}WillWipeDisk").text == "true"
    assert root.findtext(f".//{NS}SetupUILanguage/{NS}UILanguage") == "en-US"
    assert not list(root.iter(f"{NS}ProductKey"))  # none given: Setup asks, no empty key
    keyed = etree.fromstring(answer(pwfile, **{"product-key": "VK7JG-NPHTM-C97JM-9MPGT-3V66T", "language": "de-DE"})
                             ["autounattend.xml"])
    assert keyed.findtext(f".//{NS}UserData/{NS}ProductKey/{NS}Key") == "VK7JG-NPHTM-C97JM-9MPGT-3V66T"
    assert keyed.findtext(f".//{NS}SetupUILanguage/{NS}UILanguage") == "de-DE"
    assert b"E:\\windows.cmd" in files["autounattend.xml"] and files["windows.cmd"].strip().endswith(b"EXIT")


def test_the_guest_gets_the_iso_as_second_cdrom_and_the_password_is_nowhere(pwfile):
    r = render(pwfile)
    root = etree.fromstring(r.xml.encode())
    cdroms = root.findall("devices/disk[@device='cdrom']")
    assert [c.find("source").get("file") for c in cdroms] == ["/isos/Win11.iso", "/var/lib/libvirt/images/osd-win-unattend.iso"]
    assert [c.find("target").get("dev") for c in cdroms] == ["sdb", "sdc"] and cdroms[1].find("readonly") is not None
    assert r.resolution.why["windows-unattend"] == "implied by --unattend"
    assert PASSWORD not in r.xml and not [n for n in r.ctx.notes if PASSWORD in n or "S3cret" in n]


def test_only_for_windows(pwfile):
    with pytest.raises(UsageError, match=r"^unattend: --unattend installs Windows; debian11 is Debian 11"):
        render(pwfile, os_="debian11")
    with pytest.raises(UsageError, match=r"^unattend: name the Windows version with --os \(win10, win11"):
        render_for(("desktop",), host="kvm", options={"name": "g", "unattend": f"admin-password-file={pwfile}"})


@pytest.mark.skipif(not shutil.which("isoinfo"), reason="no isoinfo here (apt-get install genisoimage)")
def test_the_host_action_writes_a_private_iso_and_takes_it_back(pwfile, tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    monkeypatch.setattr(unattend, "IMAGES", images)
    r = render(pwfile)
    steps = unattend.plan(r.ctx)
    assert len(steps) == 1 and "S3cret" not in steps[0].description
    record = steps[0].do()
    iso = images / "osd-win-unattend.iso"
    assert record["path"] == str(iso) and "S3cret" not in repr(record)
    assert stat.S_IMODE(iso.stat().st_mode) == 0o600
    listing = subprocess.run(["isoinfo", "-J", "-f", "-i", str(iso)], capture_output=True, text=True, check=True).stdout
    assert sorted(listing.split()) == ["/autounattend.xml", "/windows.cmd"]
    read = subprocess.run(["isoinfo", "-J", "-x", "/autounattend.xml", "-i", str(iso)], capture_output=True, check=True).stdout
    root = etree.fromstring(read)
    assert [v.text for v in root.iterfind(f".//{NS}AdministratorPassword/{NS}Value")] == [PASSWORD]
    assert unattend.plan(r.ctx) == []  # run again: unchanged, and says so
    assert any("osd-win-unattend.iso exists: unchanged (give --force" in n for n in r.ctx.notes)
    from dataclasses import replace

    record = unattend.plan(replace(r.ctx, force=True))[0].do()  # --force: written anew
    assert stat.S_IMODE(iso.stat().st_mode) == 0o600 and record["path"] == str(iso)
    unattend.undo(None, record)
    assert not iso.exists()
    unattend.undo(None, record)  # gone already: fine
    # a journal is input: nothing outside the images, nothing that changed
    with pytest.raises(VscenError):
        unattend.undo(None, {**record, "path": str(tmp_path / "elsewhere-unattend.iso")})
    record = unattend.plan(r.ctx)[0].do()
    iso.chmod(0o600)
    with open(iso, "ab") as f:
        f.write(b"changed")
    with pytest.raises(VscenError, match="changed since vscen made it; left in place"):
        unattend.undo(None, record)
    assert iso.exists()


# -- on qemu:///system: made, attached, readable by QEMU, taken back by vscen destroy --------------


def test_on_qemu_system_the_iso_is_the_second_cdrom_and_destroy_removes_it(system_conn, pwfile, tmp_path):
    import os
    import sys

    import libvirt

    name = f"vscen-test-osd-{os.getpid()}"
    iso = unattend.IMAGES / f"{name}-unattend.iso"
    install = tmp_path / "install.iso"
    subprocess.run(["genisoimage", "-quiet", "-V", "CCCOMA_X64FRE_EN-US_DV9", "-publisher", "MICROSOFT CORPORATION",
                    "-o", str(install), str(pwfile.parent / "admin.txt")], check=True)
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}

    def vscen(*args):
        return subprocess.run([sys.executable, "-m", "vscen.cli", *args], capture_output=True, text=True, env=env,
                              timeout=600)

    try:
        # no --os: the install ISO says win11 (and win10: the note says so)
        proc = vscen("run", "desktop", "--name", name, "--cdrom", str(install), "--unattend",
                     f"admin-password-file={pwfile}", "--virt-type", "qemu", "--network", "none",
                     "--output", str(tmp_path / "out"), "--connect", "qemu:///system", "--start")
        assert proc.returncode == 0, proc.stderr
        said = proc.stdout + proc.stderr
        assert "os: win11 detected from the --cdrom ISO" in said and "it matches win10 too" in said
        assert "S3cret" not in said
        assert stat.S_IMODE(iso.stat().st_mode) == 0o600
        dom = system_conn.lookupByName(name)
        assert dom.isActive()
        xml = etree.fromstring(dom.XMLDesc(0))
        assert [d.find("source").get("file") for d in xml.findall("devices/disk[@device='cdrom']")] == [str(install), str(iso)]
        again = vscen("run", "desktop", "--name", name, "--cdrom", str(install), "--unattend",
                      f"admin-password-file={pwfile}", "--virt-type", "qemu", "--network", "none",
                      "--output", str(tmp_path / "out"), "--connect", "qemu:///system", "--start")
        assert again.returncode == 0, again.stderr  # the same command again: unchanged, and said
        assert f"{iso} exists: unchanged" in again.stdout + again.stderr
        journal = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
        assert str(iso) in journal and "S3cret" not in journal
        proc = vscen("destroy", name, "--output", str(tmp_path / "out"))
        assert proc.returncode == 0, proc.stderr
        assert not iso.exists()
    finally:
        vscen("destroy", name, "--output", str(tmp_path / "out"))  # what the journal holds, if a step failed
        try:
            dom = system_conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM)
        except libvirt.libvirtError:
            pass
        iso.unlink(missing_ok=True)
        (unattend.IMAGES / f"{name}.qcow2").unlink(missing_ok=True)
