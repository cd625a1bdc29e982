"""The firmware plugin's ``firmware.descriptors`` fact and its ``uefi-firmware-match`` domain
check: would libvirt's auto-selection find a firmware for the finished XML among the host's
descriptors (Debian 12's ovmf, copied into tests/data/firmware/debian12)?"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from conftest import DATA
from lxml import etree
from vscen_firmware import check_firmware_match
from vscen_firmware.descriptors import read_descriptors

from vscen import FactProbe
from vscen.host.facts import reference

DEBIAN = DATA / "firmware" / "debian12"
GOLDEN = DATA / "golden"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    from vscen.host import local as hl

    monkeypatch.setattr(hl, "SYSFS_ROOT", tmp_path)
    shutil.copytree(DEBIAN, tmp_path / "usr/share/qemu/firmware")
    return tmp_path


def debian(tree):
    return read_descriptors(FactProbe(host=reference(), local=True))


def check(xml: str, descriptors):
    host = SimpleNamespace(fact=lambda name, default=None: descriptors, arch="x86_64", machine="q35")
    return [(c.status, c.message) for c in check_firmware_match(SimpleNamespace(xml=etree.fromstring(xml.encode()), host=host))]


def test_the_fact_holds_the_descriptors_as_libvirt_reads_them(tree):
    found = debian(tree)
    assert [d["file"] for d in found] == ["40-edk2-x86_64-secure-enrolled.json", "50-edk2-x86_64-secure.json",
                                          "60-edk2-x86_64.json"]
    assert found[0]["features"] == ["acpi-s3", "amd-sev", "enrolled-keys", "requires-smm", "secure-boot",
                                    "verbose-dynamic"]
    assert found[2]["targets"] == [{"architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"]}]
    # /etc/qemu/firmware replaces a file of the same name; what is no descriptor is left out
    etc = tree / "etc/qemu/firmware"
    etc.mkdir(parents=True)
    doc = json.loads((DEBIAN / "60-edk2-x86_64.json").read_text())
    doc["features"] += ["amd-sev-es"]
    (etc / "60-edk2-x86_64.json").write_text(json.dumps(doc))
    (etc / "10-broken.json").write_text("{not json")
    (etc / "20-not-a-descriptor.json").write_text("[]")
    found = debian(tree)
    assert [d["file"] for d in found] == ["40-edk2-x86_64-secure-enrolled.json", "50-edk2-x86_64-secure.json",
                                          "60-edk2-x86_64.json"]
    assert "amd-sev-es" in found[2]["features"]


def test_not_read_off_the_host():
    assert read_descriptors(FactProbe(host=reference(), local=False)) is None


def test_debian_12_has_firmware_for_sev_but_not_for_sev_es_snp_or_tdx(tree):
    found = debian(tree)
    sev_es = (GOLDEN / "secure-vm@amd-sev.xml").read_text()
    [(status, message)] = check(sev_es, found)
    assert status == "fail"
    assert message.startswith("no installed firmware descriptor offers UEFI for x86_64 q35 with amd-sev, amd-sev-es, "
                              "without requires-smm, so libvirt finds no firmware to start the guest with; installed: "
                              "40-edk2-x86_64-secure-enrolled.json (acpi-s3, amd-sev, enrolled-keys, requires-smm")
    for golden, wanted in (("secure-vm@amd-sev+newer-libvirt.xml", "amd-sev-snp"), ("secure-vm@intel-tdx+newer-libvirt.xml", "intel-tdx")):
        [(status, message)] = check((GOLDEN / golden).read_text(), found)
        assert status == "fail" and f"with {wanted}, without requires-smm" in message
    # plain SEV (no ES bit) finds the plain build, and with Secure Boot (SMM on) the enrolled one
    sev = sev_es.replace("<policy>0x0007</policy>", "<policy>0x0003</policy>").replace('<smm state="off"/>', "")
    assert check(sev, found) == [("pass", "libvirt can pick 40-edk2-x86_64-secure-enrolled.json (UEFI for x86_64 "
                                          "q35; features: amd-sev)")]
    secure = sev.replace("<os firmware=\"efi\">", "<os firmware=\"efi\"><firmware><feature enabled=\"yes\" "
                         "name=\"secure-boot\"/><feature enabled=\"yes\" name=\"enrolled-keys\"/></firmware>")
    assert check(secure, found)[0][0] == "pass"
    # an OVMF whose descriptor lists amd-sev-es (and needs no SMM) is found
    es_build = dict(found[2], file="70-ovmf-sev-es.json", features=["amd-sev", "amd-sev-es"])
    assert check(sev_es, [*found, es_build]) == [
        ("pass", "libvirt can pick 70-ovmf-sev-es.json (UEFI for x86_64 q35; features: amd-sev, amd-sev-es)")]


def test_nothing_said_where_the_descriptors_are_unknown_or_not_used(tree):
    sev_es = (GOLDEN / "secure-vm@amd-sev.xml").read_text()
    assert check(sev_es, None) == []
    bios = (GOLDEN / "computation@kvm.xml").read_text()
    assert check(bios, debian(tree)) == []
    desktop = (GOLDEN / "desktop@kvm.xml").read_text()
    assert check(desktop, debian(tree))[0][0] == "pass"
