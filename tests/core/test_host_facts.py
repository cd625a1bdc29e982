"""Host facts parsed from every recorded host, the reference host, and bad --host-facts files."""

from __future__ import annotations

from pathlib import Path

import pytest
from coresupport import load_tests_conftest

from vscen.errors import UsageError
from vscen.host.facts import HostFacts, NumaCell, load_files, parse, reference

conftest = load_tests_conftest()
HOSTS = conftest.HOSTS
host_files = conftest.host_files

X86_CAPS_PAGES = (4, 2048, 1048576)

#: the key facts of each recorded host (see the fixtures' README)
EXPECTED = {
    "amd-sev": dict(
        arch="x86_64", domain_type="kvm", machine="pc-q35-10.0", cpu_vendor="AMD",
        cpu_model="Opteron_G3-v1", host_model="EPYC-Genoa", max_vcpu=4096,
        sockets=1, dies=1, cores=16, threads=2, page_sizes=X86_CAPS_PAGES,
        cpu_modes={"host-passthrough", "maximum", "host-model", "custom"},
        firmware={"bios", "efi"}, secure_boot={"yes", "no"},
        iommu=True,
        has_caps=True, has_domcaps=True,
    ),
    "intel-tdx": dict(
        arch="x86_64", domain_type="kvm", machine="pc-q35-10.1", cpu_vendor="Intel",
        host_model="GraniteRapids", max_vcpu=4096, page_sizes=X86_CAPS_PAGES,
        cpu_modes={"host-passthrough", "maximum", "host-model", "custom"},
        firmware={"bios", "efi"}, iommu=False,
        has_caps=True, has_domcaps=True,
    ),
    "kvm": dict(
        arch="x86_64", domain_type="kvm", machine="pc-q35-11.1", cpu_vendor="AMD",
        host_model="EPYC-Turin", max_vcpu=4096, page_sizes=X86_CAPS_PAGES,
        firmware={"bios", "efi"}, has_caps=True, has_domcaps=True,
    ),
    "tcg": dict(
        arch="x86_64", domain_type="qemu", machine="pc-i440fx-11.1", host_model="EPYC",
        max_vcpu=255, page_sizes=(), cells=(), cpu_modes={"maximum", "host-model", "custom"},
        firmware={"bios", "efi"}, secure_boot={"no"}, has_caps=False, has_domcaps=True,
    ),
    "local-tcg": dict(
        arch="x86_64", domain_type="qemu", machine="pc-q35-7.2", cpu_vendor="AMD",
        cpu_model="kvm64", host_model="EPYC", max_vcpu=288, sockets=1, cores=2, threads=1,
        page_sizes=X86_CAPS_PAGES, cpu_modes={"maximum", "host-model", "custom"},
        firmware={"efi"}, iommu=False,
        has_caps=True, has_domcaps=True,
    ),
    "local-kvm": dict(
        arch="x86_64", domain_type="kvm", machine="pc-q35-7.2", cpu_vendor="AMD",
        cpu_model="kvm64", host_model="kvm64", max_vcpu=288, cores=2, threads=1,
        cpu_modes={"host-passthrough", "maximum", "host-model", "custom"},
        firmware={"efi"}, has_caps=True, has_domcaps=True,
    ),
    "aarch64": dict(
        arch="aarch64", domain_type="kvm", machine="virt-11.1", max_vcpu=512, host_model="",
        emulator="/usr/bin/qemu-system-aarch64",
        cpu_modes={"host-passthrough", "maximum", "custom"}, firmware={"efi"},
        has_caps=False, has_domcaps=True,
    ),
    "numa4-hugepages": dict(
        arch="x86_64", domain_type="kvm", machine="pc-q35-11.1", host_model="EPYC-Turin",
        page_sizes=X86_CAPS_PAGES,
    ),
}

#: (id, memory KiB, number of CPUs, {page size: pages}) per cell
CELLS = {
    "amd-sev": [(0, 63393224, 32, {4: 15848306, 2048: 0, 1048576: 0})],
    "intel-tdx": [(0, 1048576, 4, {4: 2048, 2048: 4096, 1048576: 6144}),
                  (1, 2097152, 4, {4: 4096, 2048: 6144, 1048576: 8192}),
                  (2, 3145728, 4, {4: 6144, 2048: 8192, 1048576: 10240}),
                  (3, 4194304, 4, {4: 8192, 2048: 10240, 1048576: 12288})],
    "kvm": [(0, 1048576, 24, {4: 2048, 2048: 4096, 1048576: 6144}),
            (1, 2097152, 0, {4: 4096, 2048: 6144, 1048576: 8192})],  # memory-only cell
    "tcg": [],
    "local-tcg": [(0, 4548820, 2, {4: 1137205, 2048: 0, 1048576: 0})],
    "local-kvm": [(0, 4548820, 2, {4: 1137205, 2048: 0, 1048576: 0})],
    "aarch64": [],
}
CELLS["numa4-hugepages"] = CELLS["intel-tdx"]


def test_every_recorded_host_is_covered():
    assert set(EXPECTED) == set(HOSTS) == set(CELLS)


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_recorded_host_facts(host):
    facts = load_files(host_files(host))
    for key, want in EXPECTED[host].items():
        got = getattr(facts, key)
        if isinstance(want, set):
            got = set(got)
        assert got == want, f"{host}.{key}"
    cells = [(c.id, c.memory_kib, len(c.cpus), c.pages) for c in facts.cells]
    assert cells == CELLS[host]
    assert facts.source == ", ".join(str(p) for p in host_files(host))
    assert facts.kvm is (facts.domain_type == "kvm")
    if facts.cells:
        assert facts.cpus == sum(len(c.cpus) for c in facts.cells)


def test_sev_host_details():
    facts = load_files(host_files("amd-sev"))
    # domcaps' <features> as plain data: what they mean is the launch-security plugin's to say
    sev = facts.domcaps_features["sev"]
    assert {k: sev[k] for k in ("supported", "cbitpos", "reducedPhysBits", "maxGuests", "maxESGuests")} == {
        "supported": "yes", "cbitpos": "51", "reducedPhysBits": "1", "maxGuests": "59", "maxESGuests": "450"}
    assert facts.domcaps_features["launchSecurity"]["enums"]["sectype"] == ["sev", "sev-snp"]
    assert {"sev", "launchSecurity", "tpm", "iothreads"} <= facts.supported
    assert facts.cpus == 32 and facts.cells[0].cpus == tuple(range(32))


def test_tdx_host_details():
    facts = load_files(host_files("intel-tdx"))
    assert facts.domcaps_features["tdx"]["supported"] == "yes"
    assert facts.domcaps_features["sev"]["supported"] == "no"
    assert "sgx" in facts.supported and "tdx" in facts.supported
    assert not facts.offers("graphics.type", "spice")  # this host's QEMU has no spice
    assert facts.offers("graphics.type", "vnc")
    assert facts.offers("nosuch.enum", "anything")  # unknown enums are not refused
    assert [c.cpus for c in facts.cells] == [tuple(range(i, i + 4)) for i in (0, 4, 8, 12)]


def test_free_pages_fall_back_to_totals_when_unknown():
    facts = load_files(host_files("numa4-hugepages"))
    cell = facts.cells[2]
    assert cell.free_pages is None and cell.free(2048) == 8192 and cell.free(16) == 0
    live = NumaCell(id=0, memory_kib=1, cpus=(0,), pages={2048: 100}, free_pages={2048: 7})
    assert live.free(2048) == 7


def test_old_libvirt_without_a_firmware_enum_offers_efi_through_its_loader():
    caps = Path(host_files("local-kvm")[1]).read_text()
    head, _, rest = caps.partition("<enum name='firmware'>")
    _, _, tail = rest.partition("</enum>")
    facts = parse(None, head + tail, "no-firmware-enum")
    assert facts.firmware == frozenset({"efi"})


def test_the_reference_host():
    facts = reference()
    assert facts.source.startswith("reference host")
    assert (facts.arch, facts.domain_type, facts.machine) == ("x86_64", "kvm", "pc-q35-8.2")
    assert (facts.cpu_vendor, facts.cpu_model, facts.host_model) == ("AMD", "EPYC-Milan", "EPYC-Milan")
    assert (facts.sockets, facts.dies, facts.cores, facts.threads) == (1, 1, 16, 2)
    assert facts.max_vcpu == 288
    assert facts.domcaps_features["sev"]["maxESGuests"] == "494"
    assert facts.firmware == frozenset({"efi"}) and facts.iommu
    assert [(c.id, len(c.cpus), c.pages[2048]) for c in facts.cells] == [(0, 16, 2048), (1, 16, 2048)]
    assert facts.page_sizes == X86_CAPS_PAGES
    assert facts.cpus == 32


def test_a_host_facts_document_holds_both_parts(tmp_path):
    caps, domcaps = (Path(p).read_text() for p in host_files("amd-sev"))
    combined = tmp_path / "snapshot.xml"
    combined.write_text(f"<hostFacts>{caps}{domcaps}</hostFacts>")
    together = load_files([combined])
    apart = load_files(host_files("amd-sev"))
    assert together.source == str(combined)
    assert together == HostFacts(**{**apart.__dict__, "source": str(combined)})
    assert together.enums == apart.enums


# -- bad files --------------------------------------------------------------------------------


@pytest.mark.parametrize("content,what", [
    ("", "not well-formed XML"),
    ("<capabilities><host>", "not well-formed XML"),
    ("not xml at all", "not well-formed XML"),
    ("<domain type='kvm'/>", "<domain> is not libvirt capabilities"),
    ("<hostFacts><capabilities/><nonsense/></hostFacts>", "<nonsense> is not libvirt capabilities"),
    ("<capabilities><guest/></capabilities>", "malformed libvirt document"),
])
def test_a_bad_host_facts_file_is_a_usage_error_naming_it(tmp_path, content, what):
    path = tmp_path / "facts.xml"
    path.write_text(content)
    with pytest.raises(UsageError) as exc:
        load_files([path])
    assert str(path) in str(exc.value)
    assert what in str(exc.value)
    assert str(exc.value).startswith("--host-facts ")


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.mkdir()], ids=["missing", "directory"])
def test_an_unreadable_host_facts_file_is_a_usage_error_naming_it(tmp_path, make):
    path = tmp_path / "facts.xml"
    make(path)
    with pytest.raises(UsageError) as exc:
        load_files([Path(host_files("tcg")[0]), path])
    assert str(exc.value).startswith(f"--host-facts {path}: cannot read it")


def test_parse_refuses_a_wrong_domcaps_root():
    with pytest.raises(UsageError, match="expected <domainCapabilities>, got <capabilities>"):
        parse(None, "<capabilities/>", "somewhere")


def test_cells_group_their_cpus_by_physical_core():
    sev = load_files(host_files("amd-sev")).cells[0]
    assert sev.cores == tuple((i, i + 16) for i in range(16))  # SMT siblings together
    numa = load_files(host_files("numa4-hugepages")).cells
    assert [c.cores for c in numa] == [tuple((i,) for i in range(n, n + 4)) for n in (0, 4, 8, 12)]
    assert load_files(host_files("kvm")).cells[1].cores == ()  # the memory-only cell
    ref = reference().cells
    assert ref[0].cores == tuple((i, i + 16) for i in range(8))
    assert ref[1].cores == tuple((i, i + 16) for i in range(8, 16))
