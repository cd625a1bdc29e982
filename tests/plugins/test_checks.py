"""The host checks (vscen_host_checks) on recorded hosts, and the domain checks
(vscen_domain_checks) on small hand-written domains."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import host_facts
from vscen_launch_security.types import FACT, host_offers

from vscen.context import Context
from vscen.host.facts import NumaCell
from vscen.pipeline import Request, load, run_host_validators
from vscen.resolve import Resolution
from vscen.settings import build_settings
from vscen.validate import Support

#: what libvirt 9.0 (the installed one) knows; explicit so the tests do not depend on it
LIBVIRT_9 = Support({"launchSecurity/@type": frozenset({"sev", "s390-pv"})}, schema=True)


@pytest.fixture(scope="module")
def registry():
    _pm, reg = load(Request(scenarios=[]))
    return reg


def make_ctx(host, memory="4GiB", uri="test:///default", support=LIBVIRT_9, has=(), xml=None):
    settings, _ = build_settings([], [("default", {"name": "t", "memory": memory})])
    facts = host_facts(host) if isinstance(host, str) else host
    return Context(settings=settings, host=facts, resolution=Resolution(why={n: "chosen" for n in has}),
                   support=support, uri=uri, xml=xml)


def run(registry, name, ctx):
    return list(registry.validators[name].check(ctx) or ())


def only(checks):
    assert len(checks) == 1, checks
    return checks[0]


# -- registration ---------------------------------------------------------------------------


def test_validators_are_registered_by_their_plugins(registry):
    host = {"kvm", "confidential-computing", "uefi-firmware", "tpm-emulator", "hugepages", "virtiofsd"}
    domain = {"launch-security-platform", "launch-security-iommu", "virtiofs-shared-memory",
              "io-native-cache", "host-offers"}
    # the launch-security checks are the plugin's that owns the types
    owner = {"confidential-computing": "launch-security", "launch-security-platform": "launch-security"}
    for name in host:
        assert registry.validators[name].kind == "host"
        assert registry.plugin_of(name, "validators") == owner.get(name, "host-checks")
    for name in domain:
        assert registry.validators[name].kind == "domain"
        assert registry.plugin_of(name, "validators") == owner.get(name, "domain-checks")
    # virtiofsd is read from the facts (their local part), not from this machine: no local_only
    assert not registry.validators["virtiofsd"].local_only


def offering(facts, *types):
    """*facts* whose launch-security plugin's fact says the host offers *types* (and the SEV
    family's parameters where one of them is SEV)."""
    value = {**host_offers(facts), "offered": list(types)}
    if not any(t.startswith("sev") for t in types):
        value["sev"] = None
    return dataclasses.replace(facts, extra={**facts.extra, FACT: value})


# -- kvm ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host, status", [
    ("amd-sev", "pass"), ("intel-tdx", "pass"), ("kvm", "pass"), ("local-kvm", "pass"),
    ("aarch64", "pass"), ("tcg", "warn"), ("local-tcg", "warn"),
])
def test_kvm(registry, host, status):
    check = only(run(registry, "kvm", make_ctx(host)))
    assert check.status == status
    if status == "warn":
        assert "TCG" in check.message and "/dev/kvm" in check.fix


# -- confidential-computing -----------------------------------------------------------------


def test_confidential_computing_amd_sev_uses_the_strongest_known_type(registry):
    check = only(run(registry, "confidential-computing", make_ctx("amd-sev")))
    assert check.status == "pass"
    assert "sev-snp, sev-es, sev" in check.message  # what the host offers
    assert check.message.endswith("using sev-es")  # libvirt 9 knows no sev-snp
    newer = Support({"launchSecurity/@type": frozenset({"sev", "sev-snp"})}, schema=True)
    check = only(run(registry, "confidential-computing", make_ctx("amd-sev", support=newer)))
    assert check.status == "pass" and check.message.endswith("using sev-snp")


@pytest.mark.parametrize("host", ["intel-tdx", "kvm"])
def test_confidential_computing_tdx_needs_a_newer_libvirt(registry, host):
    check = only(run(registry, "confidential-computing", make_ctx(host)))
    assert check.status == "fail"
    assert "offers tdx" in check.message and "knows sev-es, sev" in check.message
    assert "libvirt >= 11.6" in check.fix and "'tdx'" in check.fix
    newer = Support({"launchSecurity/@type": frozenset({"sev", "tdx"})}, schema=True)
    check = only(run(registry, "confidential-computing", make_ctx(host, support=newer)))
    assert check.status == "pass" and check.message.endswith("using tdx")


def test_confidential_computing_sev_snp_only_host_names_libvirt_10_5(registry):
    facts = offering(host_facts("amd-sev"), "sev-snp")
    check = only(run(registry, "confidential-computing", make_ctx(facts)))
    assert check.status == "fail" and "libvirt >= 10.5" in check.fix


def test_confidential_computing_without_libvirt_schema(registry):
    check = only(run(registry, "confidential-computing", make_ctx("amd-sev", support=Support())))
    assert check.status == "fail"
    assert "knows none" in check.message and "schema was not found" in check.message


def test_confidential_computing_amd_without_sev_says_how_to_enable_it(registry):
    check = only(run(registry, "confidential-computing", make_ctx("local-kvm")))
    assert check.status == "fail"
    assert "no launch security" in check.message and "AMD" in check.message
    assert "knows sev-es, sev" in check.message
    for step in ("BIOS", "mem_encrypt=on kvm_amd.sev=1 kvm_amd.sev_es=1",
                 "/sys/module/kvm_amd/parameters/sev", "/dev/sev"):
        assert step in check.fix
    assert "kvm_intel" not in check.fix and "TCG" not in check.fix


@pytest.mark.parametrize("host", ["tcg", "local-tcg"])
def test_confidential_computing_tcg_host_needs_kvm(registry, host):
    check = only(run(registry, "confidential-computing", make_ctx(host)))
    assert check.status == "fail"
    assert "need KVM" in check.fix and "only TCG" in check.fix


def test_confidential_computing_intel_without_tdx_says_how_to_enable_it(registry):
    facts = offering(host_facts("intel-tdx"))
    check = only(run(registry, "confidential-computing", make_ctx(facts)))
    assert check.status == "fail" and "Intel" in check.message
    assert "kvm_intel.tdx=1" in check.fix and "BIOS" in check.fix and "kvm_amd" not in check.fix


def test_confidential_computing_unknown_vendor_gets_both_recipes(registry):
    check = only(run(registry, "confidential-computing", make_ctx("aarch64")))
    assert check.status == "fail" and "vendor unknown" in check.message
    assert "kvm_amd.sev=1" in check.fix and "kvm_intel.tdx=1" in check.fix


# -- confidential-computing: the kernel's side (local facts) ----------------------------------


def amd_kernel(sev="Y", sev_es="Y", sev_snp="N", dev_sev=True, loaded=True, cmdline="quiet"):
    """(local facts, the launch-security fact's kernel side) of an AMD host."""
    from vscen.host.local import LocalFacts

    params = {"kvm_amd.sev": sev, "kvm_amd.sev_es": sev_es, "kvm_amd.sev_snp": sev_snp}
    return (LocalFacts(kvm_device=True, kvm_usable=True, cmdline=cmdline,
                       modules=("kvm", "kvm_amd") if loaded else ("kvm",)),
            {"kernel": params if loaded else {}, "sev_device": dev_sev})


def intel_kernel(tdx="Y"):
    from vscen.host.local import LocalFacts

    return (LocalFacts(kvm_device=True, kvm_usable=True, modules=("kvm", "kvm_intel")),
            {"kernel": {"kvm_intel.tdx": tdx}, "sev_device": False})


def with_local(host, kernel_side):
    """*host* (a name or facts) read on the host itself: its local facts, and the kernel's side
    in the launch-security fact."""
    facts = host_facts(host) if isinstance(host, str) else host
    local, kernel = kernel_side if isinstance(kernel_side, tuple) else (kernel_side, {"kernel": {}, "sev_device": False})
    facts = dataclasses.replace(facts, local=local)
    return dataclasses.replace(facts, extra={**facts.extra, FACT: {**host_offers(facts), **kernel}})


def statuses(checks):
    return [c.status for c in checks]


def test_kernel_side_sev_on_passes_with_what_it_saw(registry):
    checks = run(registry, "confidential-computing", make_ctx(with_local("amd-sev", amd_kernel())))
    assert statuses(checks) == ["pass", "pass"]
    assert checks[1].message == "kernel: kvm_amd sev=Y sev_es=Y sev_snp=N, /dev/sev present"
    # a libvirt that knows sev-snp would use it: the kernel holding it back is a warning
    newer = Support({"launchSecurity/@type": frozenset({"sev", "sev-snp"})}, schema=True)
    checks = run(registry, "confidential-computing", make_ctx(with_local("amd-sev", amd_kernel()), support=newer))
    assert statuses(checks) == ["pass", "warn"] and "SEV-SNP is off" in checks[1].message
    assert "options kvm_amd sev=1 sev_es=1 sev_snp=1" in checks[1].fix


def test_kernel_side_sev_es_off_warns(registry):
    checks = run(registry, "confidential-computing",
                 make_ctx(with_local("amd-sev", amd_kernel(sev_es="N"))))
    assert statuses(checks) == ["pass", "warn"] and "SEV-ES is off" in checks[1].message
    assert "options kvm_amd sev=1 sev_es=1" in checks[1].fix and "/etc/modprobe.d/kvm_amd.conf" in checks[1].fix


def test_kernel_side_contradicting_the_domcaps_warns_that_they_are_stale(registry):
    checks = run(registry, "confidential-computing",
                 make_ctx(with_local("amd-sev", amd_kernel(sev="N", sev_es="N", dev_sev=False))))
    assert statuses(checks) == ["pass", "warn"]  # domcaps decide: libvirt will try SEV
    assert "SEV is off in the kernel although libvirt's domain capabilities list SEV" in checks[1].message
    assert "restart libvirt" in checks[1].message


@pytest.mark.parametrize("cmdline, boot", [("quiet", True), ("quiet mem_encrypt=on", False)])
def test_kernel_side_sev_off_fails_with_the_module_option(registry, cmdline, boot):
    checks = run(registry, "confidential-computing",
                 make_ctx(with_local("local-kvm", amd_kernel(sev="N", sev_es="N", dev_sev=False, cmdline=cmdline))))
    assert statuses(checks) == ["fail", "fail"]
    kernel = checks[1]
    assert kernel.message == ("kernel: kvm_amd sev=N sev_es=N sev_snp=N, /dev/sev absent: SEV is off "
                              "in the kernel")
    assert "'options kvm_amd sev=1 sev_es=1' in /etc/modprobe.d/kvm_amd.conf" in kernel.fix
    assert ("'mem_encrypt=on'" in kernel.fix) is boot


def test_kernel_side_sev_device_missing(registry):
    checks = run(registry, "confidential-computing",
                 make_ctx(with_local("local-kvm", amd_kernel(dev_sev=False))))
    assert statuses(checks) == ["fail", "fail"] and "/dev/sev is missing" in checks[1].message


def test_kernel_side_sev_on_but_not_in_the_domcaps(registry):
    checks = run(registry, "confidential-computing", make_ctx(with_local("local-kvm", amd_kernel())))
    assert statuses(checks) == ["fail", "fail"]
    assert "the kernel offers SEV but libvirt's domain capabilities do not list it" in checks[1].message
    assert "restart libvirt" in checks[1].fix


def test_kernel_side_kvm_amd_not_loaded(registry):
    checks = run(registry, "confidential-computing", make_ctx(with_local("local-tcg", amd_kernel(loaded=False))))
    assert statuses(checks) == ["fail", "fail"]
    assert checks[1].message == "kernel: kvm_amd is not loaded (loaded KVM modules: kvm): no SEV"
    assert "modprobe kvm_amd" in checks[1].fix


def test_kernel_side_tdx(registry):
    newer = Support({"launchSecurity/@type": frozenset({"sev", "tdx"})}, schema=True)
    checks = run(registry, "confidential-computing", make_ctx(with_local("intel-tdx", intel_kernel()), support=newer))
    assert statuses(checks) == ["pass", "pass"] and checks[1].message == "kernel: kvm_intel tdx=Y"
    # libvirt 9 cannot use TDX: that fails, the kernel is fine
    checks = run(registry, "confidential-computing", make_ctx(with_local("intel-tdx", intel_kernel())))
    assert statuses(checks) == ["fail", "pass"]
    checks = run(registry, "confidential-computing", make_ctx(with_local("intel-tdx", intel_kernel("N")), support=newer))
    assert statuses(checks) == ["pass", "warn"] and "stale" in checks[1].message
    no_tdx = offering(with_local("intel-tdx", intel_kernel("N")))
    checks = run(registry, "confidential-computing", make_ctx(no_tdx, support=newer))
    assert statuses(checks) == ["fail", "fail"] and "TDX is off in the kernel" in checks[1].message
    assert "'options kvm_intel tdx=1' in /etc/modprobe.d/kvm_intel.conf" in checks[1].fix
    assert "kvm_intel.tdx=1" in checks[1].fix


def test_kernel_side_without_a_kvm_vendor_module(registry):
    from vscen.host.local import LocalFacts

    checks = run(registry, "confidential-computing", make_ctx(with_local("aarch64", LocalFacts())))
    assert statuses(checks) == ["fail", "fail"]
    assert "neither kvm_amd nor kvm_intel is loaded (loaded KVM modules: none)" in checks[1].message
    assert "options kvm_amd sev=1 sev_es=1" in checks[1].fix and "options kvm_intel tdx=1" in checks[1].fix


# -- uefi-firmware --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["amd-sev", "intel-tdx", "kvm", "tcg", "local-tcg", "local-kvm", "aarch64"])
def test_uefi_firmware_on_recorded_hosts(registry, host):
    check = only(run(registry, "uefi-firmware", make_ctx(host)))
    assert check.status == "pass" and "efi" in check.message


def test_uefi_firmware_missing(registry):
    facts = dataclasses.replace(host_facts("kvm"), firmware=frozenset({"bios"}))
    check = only(run(registry, "uefi-firmware", make_ctx(facts)))
    assert check.status == "fail" and "no efi firmware (only bios)" in check.message
    assert "ovmf" in check.fix and "edk2-ovmf" in check.fix and "qemu-ovmf-x86_64" in check.fix
    arm = dataclasses.replace(host_facts("aarch64"), firmware=frozenset())
    check = only(run(registry, "uefi-firmware", make_ctx(arm)))
    assert check.status == "fail" and "qemu-efi-aarch64" in check.fix


def test_uefi_firmware_unknown_without_domain_capabilities(registry):
    facts = dataclasses.replace(host_facts("kvm"), has_domcaps=False, firmware=frozenset())
    check = only(run(registry, "uefi-firmware", make_ctx(facts)))
    assert check.status == "warn" and "unknown" in check.message


# -- tpm-emulator ---------------------------------------------------------------------------


@pytest.fixture
def no_programs(monkeypatch):
    """Neither swtpm nor virtiofsd on this machine, whatever it really has: the checks must not
    look at it (they read the facts)."""
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    import vscen_host_checks

    return vscen_host_checks


@pytest.mark.parametrize("host", ["amd-sev", "intel-tdx", "kvm", "tcg", "local-kvm", "aarch64"])
def test_tpm_emulator_on_a_recorded_host_does_not_look_at_this_machine(registry, no_programs, host):
    first, second = run(registry, "tpm-emulator", make_ctx(host))
    assert first.status == "pass" and "emulator" in first.message
    assert second.status == "skip" and "does not say which programs the host has" in second.message


def test_tpm_emulator_remote_host_skips_swtpm(registry, no_programs):
    checks = run(registry, "tpm-emulator", make_ctx("kvm", uri="qemu+ssh://root@far.example/system"))
    assert [c.status for c in checks] == ["pass", "skip"]
    assert "far.example" in checks[1].message


def test_tpm_emulator_without_emulator_backend(registry, no_programs):
    facts = host_facts("kvm")
    facts = dataclasses.replace(facts, enums={**facts.enums, "tpm.backendModel": frozenset({"passthrough"})})
    check = only(run(registry, "tpm-emulator", make_ctx(facts)))
    assert check.status == "fail" and "no emulator TPM backend (only passthrough)" in check.message
    assert "swtpm" in check.fix


def test_tpm_emulator_without_tpm_device(registry, no_programs):
    facts = dataclasses.replace(host_facts("kvm"), supported=host_facts("kvm").supported - {"tpm"})
    check = only(run(registry, "tpm-emulator", make_ctx(facts)))
    assert check.status == "fail" and "no TPM device" in check.message


# -- hugepages ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["numa4-hugepages", "intel-tdx", "kvm"])
def test_hugepages_pass_names_the_largest_size(registry, host):
    check = only(run(registry, "hugepages", make_ctx(host, memory="4GiB")))
    assert check.status == "pass"
    assert check.message.startswith("huge pages of 1048576 KiB") and "needs 4 for 4096 MiB" in check.message


@pytest.mark.parametrize("host", ["amd-sev", "local-kvm", "tcg"])
def test_hugepages_warn_says_how_many_to_reserve(registry, host):
    check = only(run(registry, "hugepages", make_ctx(host, memory="4GiB")))
    assert check.status == "warn" and "normal pages" in check.message
    assert check.fix == ("reserve 2048 pages of 2048 KiB: echo 2048 > "
                         "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages (as root); "
                         "or let vscen reserve them: vscen run --hugepages reserve "
                         "(--hugepages persistent keeps them across reboots)")


@pytest.mark.parametrize("mode", ["reserve", "persistent"])
def test_hugepages_pass_when_vscen_reserves_them(registry, mode):
    ctx = make_ctx("amd-sev", memory="4GiB")
    ctx.settings = dataclasses.replace(ctx.settings, extras={**ctx.settings.extras, "hugepages": mode})
    check = only(run(registry, "hugepages", ctx))
    assert check.status == "pass" and f"vscen reserves them (--hugepages {mode})" in check.message


def test_hugepages_counts_free_pages_not_reserved_ones(registry):
    cell = NumaCell(id=0, memory_kib=16 << 20, cpus=(0, 1, 2, 3),
                    pages={4: 1000, 2048: 3000, 1048576: 2}, free_pages={4: 1000, 2048: 1000, 1048576: 2})
    facts = dataclasses.replace(host_facts("kvm"), cells=(cell,), page_sizes=(4, 2048, 1048576))
    check = only(run(registry, "hugepages", make_ctx(facts, memory="4GiB")))
    assert check.status == "warn"
    assert "2048 KiB: 1000 free" in check.message and "1048576 KiB: 2 free" in check.message
    # 2000 pages are in use: the new total must keep them and add the guest's 2048
    assert check.fix.startswith("reserve 4048 pages of 2048 KiB: echo 4048 >")
    check = only(run(registry, "hugepages", make_ctx(facts, memory="2GiB")))
    assert check.status == "pass" and check.message.startswith("huge pages of 1048576 KiB")
    check = only(run(registry, "hugepages", make_ctx(facts, memory="1500MiB")))
    assert check.status == "pass" and "needs 2 for 1500 MiB" in check.message  # rounded up


def test_hugepages_of_1_gib_only_are_reserved_at_boot(registry):
    cell = NumaCell(id=0, memory_kib=16 << 20, cpus=(0, 1), pages={4: 1000, 1048576: 0},
                    free_pages={4: 1000, 1048576: 0})
    facts = dataclasses.replace(host_facts("kvm"), cells=(cell,), page_sizes=(4, 1048576))
    check = only(run(registry, "hugepages", make_ctx(facts, memory="4GiB")))
    assert check.status == "warn"
    assert check.fix.startswith("reserve 4 pages of 1048576 KiB: echo 4 > "
                                "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages")
    assert "'hugepagesz=1G hugepages=4' on the kernel command line" in check.fix
    assert "vscen run --hugepages reserve" in check.fix


# -- virtiofsd ------------------------------------------------------------------------------


def test_virtiofsd_on_a_recorded_host_is_not_looked_for(registry, no_programs):
    check = only(run(registry, "virtiofsd", make_ctx("kvm")))
    assert check.status == "skip" and "does not say which programs the host has" in check.message


def test_programs_come_from_the_local_facts_where_known(registry, no_programs):
    from vscen.host.local import LocalFacts

    found = with_local("kvm", LocalFacts(swtpm="/usr/bin/swtpm", virtiofsd="/usr/libexec/virtiofsd"))
    # a snapshot of a host that has them, checked on a machine that has not (no_programs)
    assert run(registry, "tpm-emulator", make_ctx(found))[1].message == "swtpm is installed (/usr/bin/swtpm)"
    check = only(run(registry, "virtiofsd", make_ctx(found)))
    assert check.status == "pass" and "/usr/libexec/virtiofsd" in check.message
    missing = with_local("kvm", LocalFacts())
    assert run(registry, "tpm-emulator", make_ctx(missing))[1].status == "warn"
    assert only(run(registry, "virtiofsd", make_ctx(missing))).status == "warn"


def test_program_checks_are_skipped_without_local_facts(registry, no_programs):
    remote = make_ctx("kvm", uri="qemu+ssh://far.example/system")
    check = only(run_host_validators(remote, registry, ["virtiofsd"]))
    assert check.status == "skip" and check.validator == "virtiofsd" and "far.example" in check.message
    local = make_ctx("kvm", uri="qemu:///system")  # recorded facts, without their local part
    assert only(run_host_validators(local, registry, ["virtiofsd"])).status == "skip"


# -- domain checks --------------------------------------------------------------------------


def domain(body: str, machine="q35", firmware=" firmware='efi'"):
    from lxml import etree

    return etree.fromstring(
        f"<domain type='kvm'><name>t</name><memory>4194304</memory>"
        f"<os{firmware}><type arch='x86_64' machine='{machine}'>hvm</type></os>{body}</domain>")


def checks_on(registry, name, xml, host="kvm"):
    return run(registry, name, make_ctx(host, xml=xml))


def failures(checks):
    return [(c.element, c.message) for c in checks if c.status == "fail"]


SEV = "<launchSecurity type='sev'><policy>0x0007</policy></launchSecurity>"


def test_launch_security_platform(registry):
    assert checks_on(registry, "launch-security-platform", domain("")) == []  # does not apply
    for machine in ("q35", "pc-q35-7.2", "pc-q35-10.0"):
        check = only(checks_on(registry, "launch-security-platform", domain(SEV, machine=machine)))
        assert check.status == "pass" and machine in check.message
    bad = checks_on(registry, "launch-security-platform", domain(SEV, machine="pc-i440fx-7.2", firmware=""))
    assert [e for e, _ in failures(bad)] == ["/domain/os/type", "/domain/os"]
    assert "q35" in bad[0].message and "pc-i440fx-7.2" in bad[0].message
    assert "UEFI" in bad[1].message
    # a firmware given as a loader counts as UEFI
    loader = domain(SEV, firmware="").find("os")
    from lxml import etree

    etree.SubElement(loader, "loader", readonly="yes", type="pflash").text = "/usr/share/OVMF/OVMF_CODE.fd"
    assert only(checks_on(registry, "launch-security-platform", loader.getparent())).status == "pass"


def test_launch_security_platform_without_machine(registry):
    xml = domain(SEV)
    del xml.find("os/type").attrib["machine"]
    check = only(checks_on(registry, "launch-security-platform", xml))
    assert check.status == "fail" and check.element == "/domain/os/type" and "i440fx" in check.message


VIRTIO_DEVICES = """<devices>
  <disk type='file' device='disk'><driver name='qemu' type='raw' iommu='on'/><source file='/a'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/b'/><target dev='vdb' bus='virtio'/></disk>
  <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/c'/><target dev='sda' bus='sata'/></disk>
  <controller type='virtio-serial'><driver iommu='on'/></controller>
  <interface type='network'><source network='default'/><model type='virtio'/></interface>
  <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  <memballoon model='none'/>
  <rng model='virtio'><backend model='random'>/dev/urandom</backend><driver iommu='off'/></rng>
</devices>"""


def test_launch_security_iommu(registry):
    assert checks_on(registry, "launch-security-iommu", domain(VIRTIO_DEVICES)) == []  # no launchSecurity
    bad = failures(checks_on(registry, "launch-security-iommu", domain(VIRTIO_DEVICES + SEV)))
    # the second disk's driver, the interface (no driver at all) and the rng's driver
    assert [e for e, _ in bad] == ["/domain/devices/disk[2]/driver", "/domain/devices/interface",
                                   "/domain/devices/rng/driver"]
    assert "virtio disk vdb" in bad[0][1] and "iommu='on'" in bad[0][1]


def test_launch_security_iommu_virtio_serial_controller(registry):
    body = VIRTIO_DEVICES.replace("<controller type='virtio-serial'><driver iommu='on'/></controller>", "")
    body = body.replace("<driver name='qemu' type='raw'/><source file='/b'/>",
                        "<driver name='qemu' type='raw' iommu='on'/><source file='/b'/>")
    body = body.replace("<model type='virtio'/>", "<model type='virtio'/><driver iommu='on'/>")
    body = body.replace("<driver iommu='off'/>", "<driver iommu='on'/>")
    bad = failures(checks_on(registry, "launch-security-iommu", domain(body + SEV)))
    assert [e for e, _ in bad] == ["/domain/devices/channel"]
    assert "virtio-serial" in bad[0][1]
    fixed = body.replace("<memballoon", "<controller type='virtio-serial'><driver iommu='on'/></controller><memballoon")
    check = only(checks_on(registry, "launch-security-iommu", domain(fixed + SEV)))
    assert check.status == "pass" and "all 5 virtio devices" in check.message


FS = """<devices><filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>
<source dir='/srv'/><target dir='srv'/></filesystem></devices>"""


def test_virtiofs_shared_memory(registry):
    assert checks_on(registry, "virtiofs-shared-memory", domain("<devices/>")) == []
    bad = checks_on(registry, "virtiofs-shared-memory", domain(FS))
    assert failures(bad) == [("/domain/devices/filesystem", bad[0].message)]
    assert "access mode='shared'" in bad[0].message
    shared = "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"
    assert only(checks_on(registry, "virtiofs-shared-memory", domain(shared + FS))).status == "pass"
    numa = "<cpu><numa><cell id='0' cpus='0' memory='4194304' memAccess='shared'/></numa></cpu>"
    assert only(checks_on(registry, "virtiofs-shared-memory", domain(numa + FS))).status == "pass"
    private = "<memoryBacking><access mode='private'/></memoryBacking>"
    assert only(checks_on(registry, "virtiofs-shared-memory", domain(private + FS))).status == "fail"


def disks(*drivers):
    return "<devices>" + "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='raw' {d}/><source file='/d{i}'/>"
        f"<target dev='vd{chr(97 + i)}' bus='virtio'/></disk>" for i, d in enumerate(drivers)) + "</devices>"


def test_io_native_cache(registry):
    assert checks_on(registry, "io-native-cache", domain(disks("cache='writeback' io='threads'"))) == []
    check = only(checks_on(registry, "io-native-cache",
                           domain(disks("cache='none' io='native'", "cache='directsync' io='native'"))))
    assert check.status == "pass"
    bad = failures(checks_on(registry, "io-native-cache",
                             domain(disks("cache='none' io='native'", "cache='writeback' io='native'", "io='native'"))))
    assert [e for e, _ in bad] == ["/domain/devices/disk[2]/driver", "/domain/devices/disk[3]/driver"]
    assert "'writeback'" in bad[0][1] and "default cache" in bad[1][1]


DESKTOP_DEVICES = """<devices>
  <disk type='file' device='disk'><source file='/a'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><source file='/b'/><target dev='hda' bus='ide'/></disk>
  <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
  <graphics type='spice' autoport='yes'/>
  <video><model type='qxl'/></video>
</devices>"""


def test_host_offers(registry):
    assert checks_on(registry, "host-offers", domain("<devices/>")) == []
    check = only(checks_on(registry, "host-offers", domain(DESKTOP_DEVICES), host="tcg"))  # i440fx: ide
    assert check.status == "pass" and "graphics type spice" in check.message
    # intel-tdx: no spice, no qxl, no ide
    bad = failures(checks_on(registry, "host-offers", domain(DESKTOP_DEVICES), host="intel-tdx"))
    assert [e for e, _ in bad] == ["/domain/devices/video/model", "/domain/devices/graphics",
                                   "/domain/devices/disk[2]/target"]
    assert "graphics type 'spice'" in bad[1][1] and "vnc" in bad[1][1]
    # aarch64 has no tpm-crb
    bad = failures(checks_on(registry, "host-offers", domain(DESKTOP_DEVICES), host="aarch64"))
    assert ("/domain/devices/tpm", "the host does not offer TPM model 'tpm-crb' (it offers tpm-tis)") in bad
