"""The built-in scenarios (secure-vm, desktop, computation) rendered on recorded hosts."""

from __future__ import annotations

import pytest
from conftest import render_for

from vscen.errors import HostError, InvalidDomainError, RulesError
from vscen.pipeline import Request, load
from vscen.settings import build_settings
from vscen.validate import Support

#: what libvirt 9.0 knows; explicit so that a newer installed libvirt does not change the choice
LIBVIRT_9 = Support({"launchSecurity/@type": frozenset({"sev", "s390-pv"})}, schema=True)

#: (scenarios, host) pairs that render: the set that must define on test:///default too
RENDERS = [
    ("secure-vm", "amd-sev"),
    ("desktop", "amd-sev"), ("desktop", "intel-tdx"), ("desktop", "kvm"), ("desktop", "tcg"),
    ("computation", "amd-sev"), ("computation", "intel-tdx"), ("computation", "kvm"),
    ("computation", "tcg"), ("secure-vm+computation", "amd-sev"),
]


def render(scenarios: str, host: str, **kw):
    kw.setdefault("support", LIBVIRT_9)
    return render_for(scenarios.split("+"), host=host, **kw)


def parsed(result):
    from lxml import etree

    return etree.fromstring(result.xml.encode())


def status_of(result, validator):
    return {c.status for c in result.checks if c.validator == validator}


@pytest.fixture(scope="module")
def registry():
    _pm, reg = load(Request(scenarios=[]))
    return reg


# -- declarations ---------------------------------------------------------------------------


def test_scenarios_as_the_catalog_says(registry):
    secure, desktop, comp = (registry.scenarios[n] for n in ("secure-vm", "desktop", "computation"))
    assert registry.plugin_of("secure-vm", "scenarios") == "secure-vm"
    assert set(secure.features) == {
        "launch-security", "confidential-host", "cpu-passthrough", "uefi", "iommu-platform", "locked-memory",
        "no-memballoon", "tpm", "destroy-on-events", "acpi", "clock", "storage", "encrypted-disk", "network",
        "serial-console", "rng"}
    assert [c.name for c in secure.conflicts] == ["host-filesystem"]
    assert dict(secure.defaults) == {"machine": "q35", "memory": "4GiB", "vcpu": 2}
    assert set(desktop.features) == {
        "uefi", "graphics", "video-virtio", "audio", "usb-tablet", "usb-xhci", "guest-agent",
        "tpm", "cpu-migratable", "power-management", "acpi", "clock", "storage", "network",
        "memballoon", "rng", "ksm-on"}
    assert desktop.defaults["disk"] == {"format": "qcow2", "cache": "writeback", "io": "threads",
                                        "discard": "unmap"}
    assert desktop.defaults["graphics"] == "spice"
    assert set(comp.features) == {
        "cpu-passthrough", "hugepages", "vcpu-pinning", "iothreads", "storage", "network",
        "network-multiqueue", "serial-console", "headless", "watchdog", "acpi", "clock",
        "no-memballoon", "ksm-off", "thp-madvise"}
    assert comp.defaults["disk"] == {"format": "raw", "cache": "none", "io": "native"}
    assert comp.defaults["graphics"] == "none"
    for s in (secure, desktop, comp):
        assert s.details and s.summary and "kvm" in s.validators


# -- secure-vm ------------------------------------------------------------------------------


def test_secure_vm_on_amd_sev():
    result = render("secure-vm", "amd-sev")
    xml = parsed(result)
    ls = xml.find("launchSecurity")
    # the host offers sev-snp too, but libvirt 9 knows only sev: SEV-ES is sev with policy 0x0007
    assert ls.get("type") == "sev" and ls.findtext("policy") == "0x0007"
    assert ls.findtext("cbitpos") == "51" and ls.findtext("reducedPhysBits") == "1"
    assert xml.find("os/type").get("machine") == "q35" and xml.find("os").get("firmware") == "efi"
    assert xml.findtext("memory") == str(4 * 1024 * 1024) and xml.findtext("vcpu") == "2"
    assert xml.find("memoryBacking/locked") is not None
    assert xml.find("devices/memballoon").get("model") == "none"
    assert [xml.findtext(e) for e in ("on_poweroff", "on_reboot", "on_crash")] == ["destroy"] * 3
    assert xml.find("devices/tpm/backend").get("type") == "emulator"
    assert xml.find("devices/serial") is not None and xml.find("devices/rng").get("model") == "virtio"
    assert xml.find("devices/graphics") is None and xml.find("devices/filesystem") is None
    drivers = xml.xpath("devices/disk[target/@bus='virtio']/driver | devices/interface/driver | devices/rng/driver")
    assert len(drivers) == 3 and {d.get("iommu") for d in drivers} == {"on"}
    assert status_of(result, "confidential-computing") == {"pass"}
    assert status_of(result, "launch-security-platform") == {"pass"}
    assert status_of(result, "launch-security-iommu") == {"pass"}


@pytest.mark.parametrize("host", ["tcg", "local-tcg"])
def test_secure_vm_refused_on_tcg(host):
    with pytest.raises(HostError) as err:
        render("secure-vm", host)
    assert "confidential-computing" in str(err.value)
    assert "no launch security" in str(err.value) and "need KVM" in str(err.value)


@pytest.mark.parametrize("host", ["intel-tdx", "kvm"])
def test_secure_vm_on_tdx_host_needs_a_newer_libvirt(host):
    with pytest.raises(HostError) as err:
        render("secure-vm", host)
    assert "confidential-computing: the host offers tdx" in str(err.value)
    assert "libvirt >= 11.6" in str(err.value)


def test_secure_vm_refuses_host_filesystem():
    with pytest.raises(RulesError) as err:
        render("secure-vm", "amd-sev", add=["host-filesystem"])
    assert reported_conflict(err.value.problems, "host-filesystem", "secure-vm")


def test_secure_vm_domain_checks_point_at_the_offending_element():
    with pytest.raises(InvalidDomainError) as err:
        render("secure-vm", "amd-sev", sets=["/domain/devices/rng/driver/@iommu=off"])
    assert str(err.value).startswith("/domain/devices/rng/driver (set by user (--set)):")
    assert "[launch-security-iommu]" in str(err.value)
    with pytest.raises(InvalidDomainError) as err:
        render("secure-vm", "amd-sev", options={"machine": "pc"})
    assert str(err.value).startswith("/domain/os/type") and "[launch-security-platform]" in str(err.value)
    # the versioned q35 names are q35 too
    result = render("secure-vm", "amd-sev", options={"machine": "pc-q35-7.2"})
    assert status_of(result, "launch-security-platform") == {"pass"}


# -- desktop --------------------------------------------------------------------------------


def test_desktop_on_amd_sev():
    result = render("desktop", "amd-sev")
    xml = parsed(result)
    assert xml.find("os/type").get("machine") == "q35" and xml.find("os").get("firmware") == "efi"
    assert xml.find("devices/graphics").get("type") == "spice"
    assert xml.find("devices/channel[@type='spicevmc']/target").get("name") == "com.redhat.spice.0"
    assert xml.find("devices/channel[@type='unix']/target").get("name") == "org.qemu.guest_agent.0"
    assert xml.find("devices/audio").get("type") == "spice"
    assert xml.find("devices/video/model").get("type") == "virtio"
    assert xml.find("devices/input").attrib == {"type": "tablet", "bus": "usb"}
    assert xml.find("devices/controller[@type='usb']").get("model") == "qemu-xhci"
    assert xml.find("devices/tpm") is not None
    assert xml.find("cpu").get("mode") == "host-passthrough" and xml.find("cpu").get("migratable") == "on"
    assert xml.find("pm/suspend-to-mem").get("enabled") == "yes"
    assert xml.find("devices/memballoon").get("model") == "virtio"
    driver = xml.find("devices/disk/driver")
    assert (driver.get("type"), driver.get("cache"), driver.get("io"), driver.get("discard")) == (
        "qcow2", "writeback", "threads", "unmap")
    assert xml.find("launchSecurity") is None
    assert status_of(result, "host-offers") == {"pass"}


def test_desktop_on_intel_tdx_falls_back_to_vnc():
    result = render("desktop", "intel-tdx")
    xml = parsed(result)
    assert xml.find("devices/graphics").get("type") == "vnc"
    assert xml.find("devices/channel[@type='spicevmc']") is None
    assert xml.find("devices/audio") is None and xml.find("devices/sound") is None
    assert any("vnc" in n for n in result.ctx.notes)
    assert status_of(result, "host-offers") == {"pass"}


@pytest.mark.parametrize("host, kvm", [("kvm", "pass"), ("tcg", "warn")])
def test_desktop_on_kvm_and_tcg(host, kvm):
    result = render("desktop", host)
    xml = parsed(result)
    assert xml.find("devices/graphics").get("type") == "spice"
    assert xml.get("type") == ("kvm" if kvm == "pass" else "qemu")
    assert status_of(result, "kvm") == {kvm}
    if host == "tcg":  # no host-passthrough under TCG
        assert xml.find("cpu").get("mode") != "host-passthrough"


# -- computation ----------------------------------------------------------------------------


def test_computation_on_intel_tdx_host():
    result = render("computation", "intel-tdx")
    xml = parsed(result)
    cpu = xml.find("cpu")
    assert (cpu.get("mode"), cpu.get("migratable")) == ("host-passthrough", "off")
    assert xml.find("memoryBacking/hugepages/page").get("size") == "1048576"
    assert len(xml.findall("cputune/vcpupin")) == 2 and xml.find("numatune/memory").get("mode") == "strict"
    assert xml.findtext("iothreads") == "1"
    driver = xml.find("devices/disk/driver")
    assert (driver.get("type"), driver.get("cache"), driver.get("io"), driver.get("iothread")) == (
        "raw", "none", "native", "1")
    assert xml.find("devices/interface/driver").get("queues") == "2"
    assert xml.find("devices/graphics") is None and xml.find("devices/video/model").get("type") == "none"
    assert xml.find("devices/watchdog").get("model") == "i6300esb"
    assert xml.find("devices/memballoon").get("model") == "none"
    assert xml.find("devices/serial") is not None
    assert status_of(result, "hugepages") == {"pass"} and status_of(result, "io-native-cache") == {"pass"}


def test_computation_on_amd_sev_without_free_hugepages():
    result = render("computation", "amd-sev")
    xml = parsed(result)
    assert xml.find("memoryBacking/hugepages") is None
    warn = [c for c in result.checks if c.validator == "hugepages"]
    assert [c.status for c in warn] == ["warn"] and "reserve 2048 pages of 2048 KiB" in warn[0].fix


@pytest.mark.parametrize("host", ["kvm", "tcg"])
def test_computation_on_kvm_and_tcg(host):
    result = render("computation", host)
    xml = parsed(result)
    assert xml.find("devices/graphics") is None
    assert xml.find("devices/disk/driver").get("io") == "native"
    assert status_of(result, "kvm") == ({"pass"} if host == "kvm" else {"warn"})


def test_computation_user_cache_decides_io_and_both_given_contradicting_is_refused():
    result = render("computation", "kvm", disks=["cache=writeback"])
    assert parsed(result).find("devices/disk/driver").get("io") == "threads"
    assert any(n.startswith("disk 1: io=threads, since io=native needs cache=none") for n in result.ctx.notes)
    with pytest.raises(InvalidDomainError) as err:
        render("computation", "kvm", disks=["cache=writeback,io=native"])
    assert "/domain/devices/disk/driver" in str(err.value) and "[io-native-cache]" in str(err.value)


# -- combinations ---------------------------------------------------------------------------


def test_secure_vm_and_computation_compose():
    result = render("secure-vm+computation", "amd-sev")
    xml = parsed(result)
    assert xml.findtext("name") == "secure-vm-computation"
    assert xml.find("launchSecurity").get("type") == "sev"
    assert xml.find("cpu").get("migratable") == "off" and xml.findtext("iothreads") == "1"
    driver = xml.find("devices/disk/driver")
    assert (driver.get("type"), driver.get("io"), driver.get("iommu")) == ("raw", "native", "on")
    assert xml.find("devices/interface/driver").attrib == {"iommu": "on", "name": "vhost", "queues": "2"}
    assert xml.find("memoryBacking/locked") is not None
    assert xml.find("devices/memballoon").get("model") == "none"


def test_desktop_and_computation_refused_with_every_reason():
    with pytest.raises(RulesError) as err:
        render("desktop+computation", "amd-sev")
    for pair in (("cpu-migratable", "cpu-passthrough"), ("graphics", "headless"),
                 ("headless", "video-virtio"), ("memballoon", "no-memballoon")):
        assert reported_conflict(err.value.problems, *pair), pair


def test_desktop_and_computation_defaults_clash(registry):
    defaults = [(n, dict(registry.scenarios[n].defaults)) for n in ("desktop", "computation")]
    _settings, clashes = build_settings(defaults, [("default", {"name": "x"})])
    keys = sorted(c.split(":")[0] for c in clashes)
    assert keys == ["disk.cache", "disk.format", "disk.io", "graphics"]


def test_desktop_and_computation_refusal_lists_the_disk_defaults_too():
    with pytest.raises(RulesError) as err:
        render("desktop+computation", "amd-sev")
    for key in ("disk.format", "disk.cache", "disk.io", "graphics"):
        assert any(p.startswith(f"{key}: scenario 'desktop' wants") for p in err.value.problems), key


def test_desktop_and_secure_vm_refused_with_every_reason():
    with pytest.raises(RulesError) as err:
        render("desktop+secure-vm", "amd-sev")
    for pair in (("cpu-migratable", "launch-security"), ("launch-security", "memballoon"),
                 ("memballoon", "no-memballoon")):
        assert reported_conflict(err.value.problems, *pair), pair


def reported_conflict(problems, a, b) -> bool:
    """One problem names the pair (in name order, each with its kind)."""
    import re

    pattern = rf"^(feature|scenario) '{a}' conflicts with (feature|scenario) '{b}': "
    return sum(bool(re.match(pattern, p)) for p in problems) == 1


# -- libvirt accepts them -------------------------------------------------------------------


@pytest.mark.parametrize("scenarios, host", RENDERS)
def test_defines_on_the_test_driver(scenarios, host):
    import libvirt

    result = render(scenarios, host)
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXMLFlags(result.xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        try:
            assert dom.name() == scenarios.replace("+", "-")
        finally:
            dom.undefine()
    finally:
        conn.close()


def test_secure_vm_passes_the_host_cpu_and_bounds_its_locked_memory():
    """No QEMU default CPU for a confidential guest, and locked memory with a hard limit, as
    libvirt's documentation asks (issue 10)."""
    xml = parsed(render("secure-vm", "amd-sev"))
    assert xml.find("cpu").attrib == {"mode": "host-passthrough", "check": "none", "migratable": "off"}
    memory = int(xml.findtext("memory"))
    assert xml.find("memoryBacking/locked") is not None
    assert int(xml.findtext("memtune/hard_limit")) == memory + 1024 * 1024
