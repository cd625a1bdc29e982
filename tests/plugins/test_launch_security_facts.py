"""The launch-security plugin's table and fact: what each recorded host offers, ranked once,
read from the generic domcaps features the core parses (moved here from the core's tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import host_files
from vscen_launch_security import read_host
from vscen_launch_security.types import TYPES, from_domcaps, known_by, ranked

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
    # the provider reads the same, with no connection (a recorded host)
    assert read_host(FactProbe(host=facts)) == {"offered": offered, "sev": sev}


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
