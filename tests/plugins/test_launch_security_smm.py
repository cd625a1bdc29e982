"""Secure Boot / SMM against the launch-security types: which combinations vscen writes and
which it refuses, with the reason, before anything is built (the ``launch-security-smm`` host
check) and on the finished XML (the ``launch-security-firmware`` domain check)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import host_files, render_for
from lxml import etree
from vscen_launch_security.types import BY_NAME, TYPES, of_xml

from vscen import HostError, InvalidDomainError
from vscen.validate import Support

LIBVIRT_9 = Support({"launchSecurity/@type": frozenset({"sev"})}, schema=True)
NEWER = Support({"launchSecurity/@type": frozenset({"sev", "sev-snp", "tdx"})}, schema=False)


def sev_only_host(tmp_path) -> list[Path]:
    """The recorded AMD host with SEV-ES and SEV-SNP taken away: it offers plain SEV only."""
    caps, domcaps = host_files("amd-sev")
    text = Path(domcaps).read_text()
    text = text.replace("<maxESGuests>450</maxESGuests>", "<maxESGuests>0</maxESGuests>")
    text = text.replace("<value>sev-snp</value>", "")
    out = tmp_path / "domcaps-sev-only.xml"
    out.write_text(text)
    return [caps, out]


def render(scenarios, host, support, **kw):
    from vscen.pipeline import Request
    from vscen.pipeline import render as run

    files = host if isinstance(host, list) else host_files(host)
    options = kw.pop("options", {"name": "t1"})
    return run(Request(scenarios=list(scenarios), host_facts=files, support=support,
                       schema=support is LIBVIRT_9, options=options, **kw), keep_connection=False)


def test_the_table_says_which_types_may_have_smm():
    assert {t.name: bool(t.no_smm) for t in TYPES} == {"sev-snp": True, "tdx": True, "sev-es": True, "sev": False}
    assert {t.name: t.firmware for t in TYPES} == {"sev-snp": "amd-sev-snp", "tdx": "intel-tdx",
                                                    "sev-es": "amd-sev-es", "sev": "amd-sev"}


@pytest.mark.parametrize(("host", "support", "sectype"), [
    ("amd-sev", LIBVIRT_9, "sev-es"), ("amd-sev", NEWER, "sev-snp"), ("intel-tdx", NEWER, "tdx")])
def test_secure_boot_is_refused_where_the_type_cannot_have_smm(host, support, sectype):
    with pytest.raises(HostError) as exc:
        render(["secure-vm"], host, support, add=["secure-boot"])
    kind = BY_NAME[sectype]
    problems = [p for p in exc.value.problems if p.startswith("launch-security-smm:")]
    assert len(problems) == 1
    assert f"feature 'secure-boot' cannot be combined with {kind.label}" in problems[0]
    assert kind.no_smm in problems[0] and "SMM" in problems[0]
    assert "--feature -secure-boot" in problems[0]


@pytest.mark.parametrize(("host", "support", "sectype"), [
    ("amd-sev", LIBVIRT_9, "sev-es"), ("amd-sev", NEWER, "sev-snp"), ("intel-tdx", NEWER, "tdx")])
def test_those_types_state_smm_off(host, support, sectype):
    root = etree.fromstring(render(["secure-vm"], host, support).xml.encode())
    assert of_xml(root) == sectype
    assert root.find("features/smm").get("state") == "off"
    assert root.find("os/firmware") is None


def test_plain_sev_keeps_secure_boot_with_smm(tmp_path):
    result = render(["secure-vm"], sev_only_host(tmp_path), LIBVIRT_9, add=["secure-boot"])
    root = etree.fromstring(result.xml.encode())
    assert of_xml(root) == "sev"
    assert root.find("features/smm").get("state") == "on"
    assert [(f.get("name"), f.get("enabled")) for f in root.iterfind("os/firmware/feature")] == [
        ("secure-boot", "yes"), ("enrolled-keys", "yes")]
    smm = [c for c in result.checks if c.validator == "launch-security-smm"]
    assert [(c.status, c.message) for c in smm] == [("pass", "secure-boot with SEV: OVMF's SMM build supports it")]
    # and without Secure Boot, SMM is left to QEMU's default
    plain = etree.fromstring(render(["secure-vm"], sev_only_host(tmp_path), LIBVIRT_9).xml.encode())
    assert plain.find("features/smm") is None


def test_secure_boot_without_launch_security_is_unchanged():
    root = etree.fromstring(render_for(["desktop"], host="kvm", add=["secure-boot"], support=LIBVIRT_9,
                                       options={"name": "t1"}).xml.encode())
    assert root.find("features/smm").get("state") == "on" and root.find("launchSecurity") is None


def test_smm_turned_on_afterwards_is_refused_on_the_finished_xml():
    with pytest.raises(InvalidDomainError) as exc:
        render(["secure-vm"], "amd-sev", LIBVIRT_9, sets=["./features/smm/@state=on"])
    [problem] = [p for p in exc.value.problems if "[launch-security-firmware]" in p]
    assert problem.startswith("/domain/features/smm")
    assert "launch security SEV-ES with SMM on: KVM gives an SEV-ES guest no SMM" in problem


def test_the_domain_check_reads_the_type_from_the_xml():
    """SEV-ES is libvirt's sev with the policy's ES bit; Secure Boot asked for by a firmware
    feature or the old loader attribute is refused as SMM is."""
    from types import SimpleNamespace

    from vscen_launch_security.checks import check_launch_security_firmware

    def checks(launch, os_="<os firmware='efi'><type>hvm</type></os>", features=""):
        xml = f"<domain type='kvm'>{os_}<features>{features}</features>{launch}</domain>"
        return [(c.status, c.element) for c in check_launch_security_firmware(SimpleNamespace(xml=etree.fromstring(xml)))]

    sev = "<launchSecurity type='sev'><policy>0x0003</policy></launchSecurity>"
    es = "<launchSecurity type='sev'><policy>0x0007</policy></launchSecurity>"
    secure = "<os firmware='efi'><type>hvm</type><firmware><feature enabled='yes' name='secure-boot'/></firmware></os>"
    assert checks(sev, features="<smm state='on'/>") == []
    assert checks(es) == [("pass", "")]
    assert checks(es, features="<smm state='on'/>") == [("fail", "/domain/features/smm")]
    assert checks(es, os_=secure) == [("fail", "/domain/os/firmware/feature")]
    assert checks(es, os_="<os><type>hvm</type><loader secure='yes'/></os>") == [("fail", "/domain/os/loader")]
    assert checks("<launchSecurity type='tdx'><policy>0x10000000</policy></launchSecurity>",
                  features="<smm/>") == [("fail", "/domain/features/smm")]
    assert checks("<launchSecurity type='sev-snp'><policy>0x00030000</policy></launchSecurity>",
                  features="<smm state='off'/>") == [("pass", "")]
    assert checks("") == []


def test_an_os_that_asks_for_secure_boot_is_refused_with_the_reason():
    """Windows 11's profile turns Secure Boot and SMM on itself (no secure-boot feature for the
    host check to see): the finished XML is refused, naming the plugin and the reason."""
    from conftest import osinfo_or_skip

    osinfo_or_skip()
    with pytest.raises(InvalidDomainError) as exc:
        render(["secure-vm"], "amd-sev", LIBVIRT_9, options={"name": "t1", "os": "win11"})
    assert [p.split(": launch security")[0] for p in exc.value.problems] == [
        "/domain/features/smm (set by os-profile (feature))",
        "/domain/os/firmware/feature[1] (set by os-profile (feature))"]
    assert all(p.endswith("[launch-security-firmware]") and "KVM gives an SEV-ES guest no SMM" in p
               for p in exc.value.problems)
