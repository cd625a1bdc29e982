"""The os plugin: --os SHORTID, the os-profile feature, ``vscen os list|show`` (issue 11, item 1).

Two kinds of database: a small one the tests write (``OSINFO_DB_PATH``), for the inheritance
rules, and the real one of the Debian package osinfo-db, whose facts are checked against its
files read independently here (skipped without it, except in CI: ``osinfo_or_skip``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import osinfo_or_skip, render_for
from lxml import etree
from typer.testing import CliRunner
from vscen_os import osdb

from vscen.errors import UsageError

GIB = 1024**3


@pytest.fixture(autouse=True)
def _fresh_db():
    osdb.clear()
    yield
    osdb.clear()


@pytest.fixture
def real_db():
    return Path(osinfo_or_skip())


def write_os(root: Path, rel: str, body: str) -> None:
    path = root / "os" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<?xml version="1.0"?>\n<libosinfo version="0.0.1">{body}</libosinfo>\n')


@pytest.fixture
def tiny_db(tmp_path, monkeypatch):
    """parent <- child (derives-from), and a .d fragment adding a short-id to the child."""
    root = tmp_path / "db"
    write_os(root, "example.org/parent.xml", """
      <os id="http://example.org/parent"><short-id>parent1</short-id><name>Parent 1</name><family>linux</family>
        <firmware arch="x86_64" type="bios"/>
        <resources arch="all"><minimum><ram>1073741824</ram><n-cpus>1</n-cpus></minimum>
          <recommended><ram>2147483648</ram><storage>21474836480</storage></recommended></resources>
        <devices><device id="http://example.org/dev/blk"/><device id="http://example.org/dev/old"/></devices>
      </os>""")
    write_os(root, "example.org/child.xml", """
      <os id="http://example.org/child"><short-id>child2</short-id><name>Child 2</name><name xml:lang="de">Kind 2</name>
        <family>linux</family>
        <derives-from id="http://example.org/parent"/><upgrades id="http://example.org/parent"/>
        <firmware arch="x86_64" type="efi"/><firmware arch="x86_64" type="bios" supported="false"/>
        <devices><device id="http://example.org/dev/old" supported="false"/></devices>
        <resources arch="all" inherit="true"><minimum><n-cpus>2</n-cpus></minimum></resources>
      </os>""")
    write_os(root, "example.org/child.d/extra.xml", '<os id="http://example.org/child"><short-id>child2.0</short-id></os>')
    dev = root / "device" / "example.org" / "blk.xml"
    dev.parent.mkdir(parents=True)
    dev.write_text('<libosinfo><device id="http://example.org/dev/blk"><name>virtio-block</name></device></libosinfo>')
    monkeypatch.setenv("OSINFO_DB_PATH", str(root))
    osdb.clear()
    return root


# -- reading the database -----------------------------------------------------------------------


def test_inheritance_follows_derives_from_as_libosinfo_does(tiny_db):
    child = osdb.lookup("child2")
    assert (child.id, child.name, child.short_ids) == ("http://example.org/child", "Child 2", ("child2", "child2.0"))
    # resources: the child's entry inherits what it lacks from the parent's of its arch
    assert child.resource("minimum", "x86_64") == osdb.Resources(ram=GIB, n_cpus=2)
    assert child.resource("recommended", "x86_64") == osdb.Resources(ram=2 * GIB, n_cpus=2, storage=20 * GIB)
    # devices: the parent's, less what the child says it does not support; names from device/
    assert child.devices == ("virtio-block",)
    assert osdb.lookup("parent1").devices == ("http://example.org/dev/old", "virtio-block")
    # firmware: the nearer entry wins: bios unsupported, so UEFI required
    assert child.firmware_types("x86_64") == {"bios": False, "efi": True}
    assert child.requires_efi("x86_64") and not osdb.lookup("parent1").requires_efi("x86_64")
    assert osdb.lookup("child2.0").id == child.id
    assert osdb.lookup("nothing") is None


def test_the_index_is_cached_and_renewed_when_a_file_changes(tiny_db, tmp_path):
    osdb.index()
    cache = tmp_path / "cache" / "vscen" / "osinfo-index.json"
    assert json.loads(cache.read_text())["index"]["short"]["parent1"] == "http://example.org/parent"
    osdb.clear()
    assert osdb.index()["short"]["parent1"] == "http://example.org/parent"  # from the cache
    osdb.clear()
    write_os(tiny_db, "example.org/new.xml", '<os id="http://example.org/new"><short-id>new3</short-id></os>')
    assert "new3" in osdb.short_ids()


def test_a_later_directory_adds_to_the_earlier_ones(tiny_db, tmp_path, monkeypatch):
    user = tmp_path / "user"
    write_os(user, "mine.xml", '<os id="http://example.org/mine"><short-id>mine1</short-id>'
                               '<derives-from id="http://example.org/child"/></os>')
    monkeypatch.setenv("OSINFO_DB_PATH", f"{tiny_db}:{user}")
    osdb.clear()
    mine = osdb.lookup("mine1")
    assert mine.requires_efi("x86_64")
    # no resources entry of its own: none, as libosinfo (only inherit="true" entries inherit)
    assert mine.resource("minimum", "x86_64") == osdb.Resources()


def test_the_plugin_and_its_commands_do_not_read_the_database_on_import():
    code = "import sys, vscen_os, vscen_os.cli; print('vscen_os.osdb' in sys.modules, 'lxml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- the real database, checked against its files -----------------------------------------------


def own_file_value(db: Path, rel: str, xpath: str) -> str:
    return etree.parse(str(db / "os" / rel)).xpath(xpath)[0].strip()


def test_win11_facts_are_those_of_its_file(real_db):
    win11 = osdb.lookup("win11")
    ram = int(own_file_value(real_db, "microsoft.com/win-11.xml", "//resources[@arch='x86_64']/minimum/ram/text()"))
    cpus = int(own_file_value(real_db, "microsoft.com/win-11.xml", "//resources[@arch='x86_64']/minimum/n-cpus/text()"))
    assert win11.resource("minimum", "x86_64").ram == ram == 4 * GIB
    assert win11.resource("minimum", "x86_64").n_cpus == cpus
    assert win11.id == own_file_value(real_db, "microsoft.com/win-11.xml", "//os/@id")
    assert win11.requires_efi("x86_64") and win11.is_windows
    # its devices are its ancestors' (win7 declares e1000e); no virtio driver in the installer
    assert "e1000e" in win11.devices and not win11.supports("virtio-block", "virtio1.0-block")


def test_debian11_inherits_virtio_from_older_debian(real_db):
    deb = osdb.lookup("debian11")
    own = etree.parse(str(real_db / "os/debian.org/debian-11.xml"))
    assert not own.xpath("//device[@id='http://pcisig.com/pci/1af4/1001']")  # not its own
    assert deb.supports("virtio-block") and deb.supports("virtio-net") and not deb.is_windows
    ram = int(own_file_value(real_db, "debian.org/debian-11.xml", "//resources/minimum/ram/text()"))
    assert deb.resource("minimum", "x86_64").ram == ram


# -- --os on a guest ----------------------------------------------------------------------------


def render(scenario, host="kvm", **options):
    return render_for((scenario,), host=host, options={"name": "g", **options})


def test_an_unknown_os_is_one_line_with_a_suggestion(real_db):
    with pytest.raises(UsageError) as exc:
        render("desktop", os="win111")
    assert str(exc.value) == "os: 'win111' is not an OS the osinfo database knows (did you mean 'win11'? see 'vscen os list')"


def test_without_a_database_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("OSINFO_DB_PATH", str(tmp_path / "none"))
    with pytest.raises(UsageError, match=r"^os: 'win11' cannot be looked up: no osinfo database found \(install"):
        render("desktop", os="win11")


def test_a_user_setting_below_the_minimum_is_refused_naming_it(real_db):
    with pytest.raises(UsageError) as exc:
        render("desktop", os="win11", memory="2GiB", vcpu=1)
    assert exc.value.problems == [
        "memory: 2GiB is below Microsoft Windows 11's minimum of 4GiB (give --memory 4GiB or more)",
        "vcpu: 1 is below Microsoft Windows 11's minimum of 2 (give --vcpu 2 or more)",
    ]
    with pytest.raises(UsageError, match="firmware: bios is not supported by Microsoft Windows 11"):
        render("desktop", os="win11", firmware="bios")


def test_defaults_are_raised_to_the_recommended_never_above_the_user(real_db):
    result = render("computation", os="fedora36", memory="1GiB")  # fedora36 recommends 2 GiB
    assert result.settings.memory == GIB // 1024 and result.settings.source("memory") == "option"
    result = render("desktop", os="win11")
    assert result.settings.disks[0].size == 64 * GIB
    assert result.settings.source("disk.size") == "os-profile (win11)"
    assert any("disk.size raised from 20GiB to 64GiB" in n for n in result.ctx.notes)
    assert render("desktop", os="win11", memory="8GiB").settings.memory == 8 * 1024**2


def test_windows_gets_sata_e1000e_vga_secure_boot_tpm_and_hyperv(real_db):
    result = render("computation", os="win11")  # computation has no UEFI, TPM or display
    xml = etree.fromstring(result.xml.encode())
    assert xml.xpath("string(devices/disk/target/@bus)") == "sata"
    assert xml.xpath("string(devices/interface/model/@type)") == "e1000e"
    assert xml.xpath("string(os/@firmware)") == "efi"
    assert xml.xpath("os/firmware/feature[@name='secure-boot'][@enabled='yes']")
    assert xml.xpath("string(devices/tpm/backend/@version)") == "2.0"
    assert [e.tag for e in xml.find("features/hyperv")] == ["relaxed", "vapic", "spinlocks", "vpindex", "synic",
                                                             "stimer", "frequencies"]
    assert xml.xpath("clock/timer[@name='hypervclock'][@present='yes']")
    ns = {"l": "http://libosinfo.org/xmlns/libvirt/domain/1.0"}
    assert xml.xpath("string(metadata/l:libosinfo/l:os/@id)", namespaces=ns) == "http://microsoft.com/win/11"
    assert any("virtio-win ISO" in n for n in result.ctx.notes)
    assert any("--set ./clock/@offset=localtime" in n for n in result.ctx.notes)


def test_the_users_virtio_disk_stays_with_a_note(real_db):
    result = render("desktop", os="win10", **{"disk.bus": "virtio"})
    assert 'bus="virtio"' in result.xml
    assert any("needs one loaded during installation" in n for n in result.ctx.notes)


def test_no_hyperv_without_kvm(real_db):
    result = render("desktop", host="local-tcg", os="win11")
    assert "<hyperv" not in result.xml
    assert "os-profile: no Hyper-V enlightenments for Windows: they need KVM" in result.ctx.notes


def test_linux_keeps_virtio(real_db):
    xml = render("computation", os="debian11").xml
    assert 'bus="virtio"' in xml and '<model type="virtio"/>' in xml and "<hyperv" not in xml


# -- vscen os list / show -----------------------------------------------------------------------


def cli(*args):
    from vscen.cli import app

    return CliRunner().invoke(app, list(args))


def test_os_list_and_show(real_db):
    res = cli("os", "list", "--json", "--family", "windows")
    assert res.exit_code == 0, res.output
    listed = {o["short_id"]: o for o in json.loads(res.output)}
    assert "win11" in listed and "debian11" not in listed
    res = cli("os", "show", "win11", "--json")
    shown = json.loads(res.output)
    assert shown == listed["win11"]
    assert shown["minimum"] == {"ram": 4 * GIB, "n_cpus": 2, "storage": 64 * GIB} and shown["requires_efi"]
    text = cli("os", "show", "debian11").output
    assert "name:                  Debian 11" in text
    bad = cli("os", "show", "debian99")
    assert isinstance(bad.exception, UsageError) and "is not an OS the osinfo database knows" in str(bad.exception)


def test_os_profile_without_os_says_what_is_missing():
    with pytest.raises(UsageError, match=r"^os-profile: name the OS with --os SHORTID"):
        render_for(("computation",), host="kvm", add=["os-profile"], options={"name": "g"})


def test_disk_size_below_the_minimum(real_db):
    with pytest.raises(UsageError, match=r"^disk.size: 10GiB is below Microsoft Windows 11's minimum of 64GiB "
                                         r"\(give --disk-size 64GiB or more\)$"):
        render("desktop", os="win11", **{"disk.size": "10G"})
    # --disk's keys are not told apart: its size is kept, with a note
    result = render_for(("desktop",), host="kvm", disks=["size=10G"], options={"name": "g", "os": "win11"})
    assert result.settings.disks[0].size == 10 * GIB
    assert any("disk 1 is 10GiB, below Microsoft Windows 11's minimum of 64GiB" in n for n in result.ctx.notes)


def test_every_os_minimum_ram_and_firmware_match_its_own_file(real_db):
    """Across the whole database, read here with plain XPath: each OS's own minimum RAM per
    arch, and its own firmware entries, are what the plugin reports."""
    checked = 0
    for path in sorted((real_db / "os").glob("*/*.xml")):
        for os_el in etree.parse(str(path)).getroot().iterfind("os"):
            short = os_el.findtext("short-id")
            info = osdb.lookup(short)
            assert info is not None and info.id == os_el.get("id"), short
            for res in os_el.iterfind("resources"):
                ram = res.findtext("minimum/ram")
                if ram and res.get("inherit") != "true":
                    assert info.resources["minimum"][res.get("arch")].ram == int(ram), (short, res.get("arch"))
                    checked += 1
            for fw in os_el.iterfind("firmware"):
                supported = fw.get("supported", "true") != "false"
                assert info.firmware[(fw.get("arch"), fw.get("type"))][0] == supported, short
    assert checked > 300
