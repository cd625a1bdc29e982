"""The launch-security plugin's table and fact: what each recorded host offers, ranked once,
read from the generic domcaps features the core parses (moved here from the core's tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import host_files
from vscen_launch_security import read_host
from vscen_launch_security.types import TYPES, from_domcaps, known_by, param, ranked

from vscen import FactProbe
from vscen.host.facts import load_files, parse, reference
from vscen.validate import Support

SEV_PARAMS = {"cbitpos": 51, "reduced_phys_bits": 1, "max_guests": 59, "max_es_guests": 450}

#: what each recorded host offers, strongest first
OFFERED = {
    "amd-sev": (["sev-snp", "sev-es", "sev"], SEV_PARAMS),
    "intel-tdx": (["tdx"], None),
    "kvm": (["tdx"], None),
    "numa4-hugepages": (["tdx"], None),
    "tcg": ([], None),
    "local-tcg": ([], None),
    "local-kvm": ([], None),
    "aarch64": ([], None),
}


def test_one_ranking():
    assert [t.name for t in TYPES] == ["sev-snp", "tdx", "sev-es", "sev"]
    assert ranked(["sev", "s390-pv", "tdx", "sev-es"]) == ["tdx", "sev-es", "sev", "s390-pv"]


@pytest.mark.parametrize("host", sorted(OFFERED))
def test_what_each_recorded_host_offers(host):
    facts = load_files(host_files(host))
    offered, sev = OFFERED[host]
    assert from_domcaps(facts.domcaps_features) == {"offered": offered, "sev": sev}
    # the provider reads the same, with no connection (a recorded host: no kernel side)
    assert read_host(FactProbe(host=facts)) == {"offered": offered, "sev": sev, "kernel": None,
                                                "sev_device": None}


def test_the_reference_host():
    assert from_domcaps(reference().domcaps_features) == {
        "offered": ["sev-es", "sev"],
        "sev": {"cbitpos": 51, "reduced_phys_bits": 1, "max_guests": 15, "max_es_guests": 494}}


def test_sev_es_needs_es_guest_slots_and_sev_snp_needs_libvirt_to_list_it():
    domcaps = Path(host_files("amd-sev")[1]).read_text()
    no_es = domcaps.replace("<maxESGuests>450</maxESGuests>", "<maxESGuests>0</maxESGuests>")
    assert from_domcaps(parse(None, no_es, "no-es").domcaps_features)["offered"] == ["sev-snp", "sev"]
    no_snp = domcaps.replace("<value>sev-snp</value>", "")
    assert from_domcaps(parse(None, no_snp, "no-snp").domcaps_features)["offered"] == ["sev-es", "sev"]
    no_sev = domcaps.replace("<sev supported='yes'>", "<sev supported='no'>")
    assert from_domcaps(parse(None, no_sev, "no-sev").domcaps_features) == {"offered": [], "sev": None}


def test_no_domain_capabilities_no_fact():
    facts = load_files([Path(host_files("amd-sev")[0])])
    assert read_host(FactProbe(host=facts)) is None


def test_what_libvirt_knows_comes_from_its_schema():
    # libvirt spells SEV-ES as sev: known wherever sev is
    assert known_by(Support({"launchSecurity/@type": frozenset({"sev", "s390-pv"})})) == ["sev-es", "sev"]
    assert known_by(Support({"launchSecurity/@type": frozenset({"sev", "sev-snp", "tdx"})})) == [
        "sev-snp", "tdx", "sev-es", "sev"]
    assert known_by(Support()) == []


# -- the kernel's side, read on the host itself (a fake tree) ---------------------------------


@pytest.fixture
def tree(tmp_path, monkeypatch):
    from vscen.host import local as hl

    monkeypatch.setattr(hl, "SYSFS_ROOT", tmp_path)
    return tmp_path


def write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def local_fact(host="amd-sev"):
    return read_host(FactProbe(host=load_files(host_files(host)), local=True))


def test_sev_enabled(tree):
    for name, value in (("sev", "Y"), ("sev_es", "Y"), ("sev_snp", "N")):
        write(tree, f"sys/module/kvm_amd/parameters/{name}", value + "\n")
    write(tree, "dev/sev")
    fact = local_fact()
    assert fact["kernel"] == {"kvm_amd.sev": "Y", "kvm_amd.sev_es": "Y", "kvm_amd.sev_snp": "N"}
    assert fact["sev_device"] and fact["offered"] == ["sev-snp", "sev-es", "sev"]
    assert param(fact, "kvm_amd.sev") is True and param(fact, "kvm_amd.sev_snp") is False
    assert param(fact, "kvm_intel.tdx") is None


@pytest.mark.parametrize("value", ["N", "0"])
def test_sev_disabled(tree, value):
    for name in ("sev", "sev_es"):
        write(tree, f"sys/module/kvm_amd/parameters/{name}", value + "\n")
    fact = local_fact()
    assert param(fact, "kvm_amd.sev") is False and param(fact, "kvm_amd.sev_es") is False
    assert not fact["sev_device"]


def test_tdx(tree):
    write(tree, "sys/module/kvm_intel/parameters/tdx", "Y\n")
    write(tree, "sys/module/kvm_intel/parameters/nested", "Y\n")  # not one this plugin reads
    fact = local_fact("intel-tdx")
    assert fact["kernel"] == {"kvm_intel.tdx": "Y"} and param(fact, "kvm_intel.tdx") is True


def test_recorded_hosts_have_no_kernel_side():
    fact = read_host(FactProbe(host=load_files(host_files("amd-sev"))))
    assert fact["kernel"] is None and fact["sev_device"] is None
