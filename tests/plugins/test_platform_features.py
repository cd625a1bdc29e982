"""The platform features: cpu, memory, firmware, clock, lifecycle, tpm, host_filesystem and
launch_security, on the recorded hosts.

Renders use a fresh plugin manager holding only these plugins plus stand-ins for the host
checks they name (which always pass), so each test sees exactly what these features write,
whatever the host checks or other plugins would say. ``render_for`` also validates every
result against the installed libvirt's RelaxNG schema.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import vscen_clock
import vscen_cpu
import vscen_firmware
import vscen_host_filesystem
import vscen_hugepages
import vscen_launch_security
import vscen_lifecycle
import vscen_memory
import vscen_tpm
from conftest import host_facts, render_for
from lxml import etree
from vscen_host_filesystem import Filesystem
from vscen_launch_security.types import FACT, host_offers

from vscen import Check, Feature, Validator, hookimpl
from vscen.context import Context
from vscen.domain.model import Domain
from vscen.errors import RulesError
from vscen.host.facts import NumaCell
from vscen.resolve import Resolution
from vscen.settings import Settings
from vscen.validate import Support

MODULES = (vscen_cpu, vscen_memory, vscen_firmware, vscen_clock, vscen_lifecycle, vscen_tpm,
           vscen_host_filesystem, vscen_launch_security)
FEATURES = {f.name: f for m in MODULES for f in m.FEATURES}
#: confidential-computing is vscen_launch_security's own (the plugin that owns the types)
HOST_CHECKS = ("hugepages", "uefi-firmware", "tpm-emulator", "virtiofsd")
GiB = 1024 * 1024  # in KiB


class StubHostChecks:
    """Same-named stand-ins for the host checks of plugins/vscen_host_checks."""

    @hookimpl
    def vscen_register_validators(register):
        for name in HOST_CHECKS:
            register(Validator(name=name, summary=f"stub {name}", check=lambda ctx: [Check("pass", "stub")]))


def add_devices(domain, ctx):
    """A guest's worth of devices, virtio and not, for iommu-platform to find."""
    devices = domain.ensure("devices")
    disk = devices.add("disk", type="file", device="disk")
    disk.ensure("driver").set(name="qemu", type="qcow2")
    disk.ensure("source").set(file="/var/lib/libvirt/images/t1.qcow2")
    disk.ensure("target").set(dev="vda", bus="virtio")
    cdrom = devices.add("disk", type="file", device="cdrom")
    cdrom.ensure("driver").set(name="qemu", type="raw")
    cdrom.ensure("target").set(dev="sda", bus="sata")
    cdrom.ensure("readonly")
    devices.add("controller", type="scsi", index=0, model="virtio-scsi")
    devices.add("controller", type="usb", index=0, model="qemu-xhci")
    iface = devices.add("interface", type="network")
    iface.ensure("source").set(network="default")
    iface.ensure("model").set(type="virtio")
    chan = devices.add("channel", type="unix")
    chan.ensure("target").set(type="virtio", name="org.qemu.guest_agent.0")
    rng = devices.add("rng", model="virtio")
    rng.ensure("backend").set(model="random").text("/dev/urandom")
    devices.add("video").ensure("model").set(type="virtio", heads=1, primary="yes")
    devices.add("input", type="tablet", bus="usb")


class StubDevices:
    @hookimpl
    def vscen_register_features(register):
        register(Feature(name="test-devices", summary="devices for the tests", apply=add_devices))


# vscen_hugepages: the host action the hugepages feature names (a rule naming an unknown one
# would mark vscen_memory broken)
PLUGINS = tuple((m.__name__, m) for m in (*MODULES, vscen_hugepages)) + (
    ("stub-host-checks", StubHostChecks), ("stub-devices", StubDevices))


def render(add, host="amd-sev", **options):
    kw = {"support": options.pop("support")} if "support" in options else {}
    return render_for([], host=host, add=add, options={"name": "t1", **options},
                      plugins=PLUGINS, entry_points=False, **kw)


def tree(result):
    return etree.fromstring(result.xml.encode())


def apply(names, facts, support=None, chosen=(), **settings):
    """Apply features *names* (in order) to a fresh Domain: (root, ctx)."""
    core = {"name": "t1", "memory": 4 * GiB, "vcpu": 2}
    core.update({k: v for k, v in settings.items() if k in Settings.__dataclass_fields__})
    extras = {k: v for k, v in settings.items() if k not in Settings.__dataclass_fields__}
    ctx = Context(settings=Settings(**core, extras=extras), host=facts,
                  resolution=Resolution(why={n: "chosen" for n in (*names, *chosen)}),
                  support=support or Support.installed())
    domain = Domain()
    for phase in ("apply", "finish"):
        for name in names:
            fn = getattr(FEATURES[name], phase)
            if fn is not None:
                with domain.writer(name, "feature"):
                    fn(domain, ctx)
    return domain.render()[0], ctx


def noted(ctx_or_result, *words):
    notes = getattr(ctx_or_result, "ctx", ctx_or_result).notes
    return [n for n in notes if all(w in n for w in words)]


# -- cpu --------------------------------------------------------------------------------------


def test_cpu_passthrough_topology_follows_the_host_threads():
    root = tree(render(["cpu-passthrough"], "amd-sev", vcpu=4))
    cpu = root.find("cpu")
    assert dict(cpu.attrib) == {"mode": "host-passthrough", "check": "none", "migratable": "off"}
    # the Zen 5 host has 2 threads per core
    assert dict(cpu.find("topology").attrib) == {"sockets": "1", "dies": "1", "cores": "2", "threads": "2"}


def test_cpu_passthrough_odd_vcpus_get_one_thread_per_core():
    result = render(["cpu-passthrough"], "amd-sev", vcpu=3)
    topo = tree(result).find("cpu/topology")
    assert (topo.get("cores"), topo.get("threads")) == ("3", "1")
    assert noted(result, "cpu-passthrough", "threads per core")


def test_cpu_passthrough_on_tcg_falls_back_to_maximum():
    result = render(["cpu-passthrough"], "tcg", vcpu=4)
    cpu = tree(result).find("cpu")
    assert cpu.get("mode") == "maximum"
    assert (cpu.find("topology").get("cores"), cpu.find("topology").get("threads")) == ("4", "1")
    assert noted(result, "cpu-passthrough", "maximum")


def test_cpu_passthrough_without_maximum_uses_host_model_without_migratable():
    facts = replace(host_facts("tcg"), cpu_modes=frozenset({"custom", "host-model"}))
    root, ctx = apply(["cpu-passthrough"], facts)
    cpu = root.find("cpu")
    assert cpu.get("mode") == "host-model"
    assert cpu.get("migratable") is None  # libvirt refuses migratable= with host-model
    assert noted(ctx, "host-model")


@pytest.mark.parametrize(("host", "mode", "migratable"), [
    ("amd-sev", "host-passthrough", "on"),
    ("tcg", "host-model", None),
])
def test_cpu_migratable(host, mode, migratable):
    result = render(["cpu-migratable"], host)
    cpu = tree(result).find("cpu")
    assert (cpu.get("mode"), cpu.get("migratable")) == (mode, migratable)
    assert cpu.find("topology") is None
    assert bool(noted(result, "cpu-migratable")) == (host == "tcg")


def test_cpu_passthrough_and_migratable_conflict():
    with pytest.raises(RulesError, match="cpu-migratable"):
        render(["cpu-passthrough", "cpu-migratable"])


def test_vcpu_pinning_uses_the_first_cell_with_room_and_a_cpu_for_the_emulator():
    # numa4: cells of 4 CPUs with 1, 2, 3, 4 GiB; 2 GiB first fits in cell 1 (CPUs 4-7)
    root = tree(render(["vcpu-pinning"], "numa4-hugepages", vcpu=2, memory="2GiB"))
    pins = {p.get("vcpu"): p.get("cpuset") for p in root.iterfind("cputune/vcpupin")}
    assert pins == {"0": "4", "1": "5"}
    assert root.find("cputune/emulatorpin").get("cpuset") == "6-7"
    assert dict(root.find("numatune/memory").attrib) == {"mode": "strict", "nodeset": "1"}


def test_vcpu_pinning_a_full_cell_leaves_the_emulator_unpinned():
    result = render(["vcpu-pinning"], "numa4-hugepages", vcpu=4, memory="3GiB")
    root = tree(result)
    assert [p.get("cpuset") for p in root.iterfind("cputune/vcpupin")] == ["8", "9", "10", "11"]
    assert root.find("cputune/emulatorpin") is None
    assert root.find("numatune/memory").get("nodeset") == "2"
    assert noted(result, "no CPU left for the emulator")


def test_vcpu_pinning_prefers_a_cell_with_a_cpu_left_for_the_emulator():
    facts = replace(host_facts("numa4-hugepages"), cells=(
        NumaCell(id=0, memory_kib=8 * GiB, cpus=(0, 1)),
        NumaCell(id=1, memory_kib=8 * GiB, cpus=(2, 3, 4)),
    ))
    root, ctx = apply(["vcpu-pinning", "hugepages"], facts, vcpu=2, memory=2 * GiB)
    assert root.find("numatune/memory").get("nodeset") == "1"
    assert root.find("cputune/emulatorpin").get("cpuset") == "4"
    # hugepages makes the same choice of cell as vcpu-pinning
    assert noted(ctx, "no free huge pages", "NUMA cell 1", "node1")


def test_vcpu_pinning_emulatorpin_of_scattered_cpus():
    facts = replace(host_facts("numa4-hugepages"),
                    cells=(NumaCell(id=5, memory_kib=8 * GiB, cpus=(0, 2, 4, 6, 7)),))
    root, _ = apply(["vcpu-pinning"], facts, vcpu=2)
    assert root.find("cputune/emulatorpin").get("cpuset") == "4,6-7"
    assert root.find("numatune/memory").get("nodeset") == "5"


@pytest.mark.parametrize(("host", "options", "why"), [
    ("numa4-hugepages", {"vcpu": 5}, "no single NUMA cell"),
    ("numa4-hugepages", {"vcpu": 2, "memory": "5GiB"}, "no single NUMA cell"),
    ("tcg", {}, "no NUMA topology"),
])
def test_vcpu_pinning_nothing_fits(host, options, why):
    result = render(["vcpu-pinning"], host, **options)
    root = tree(result)
    assert root.find("cputune") is None and root.find("numatune") is None
    assert noted(result, "vcpu-pinning", why)


def test_cpuset_syntax():
    assert vscen_cpu.cpuset((0, 1, 2, 5)) == "0-2,5"
    assert vscen_cpu.cpuset((6, 4)) == "4,6"


# -- memory -----------------------------------------------------------------------------------


def _page(root):
    page = root.find("memoryBacking/hugepages/page")
    return None if page is None else (page.get("size"), page.get("unit"))


def test_hugepages_largest_size_in_the_pinned_cell():
    result = render(["hugepages", "vcpu-pinning"], "numa4-hugepages", vcpu=2, memory="2GiB")
    root = tree(result)
    assert root.find("numatune/memory").get("nodeset") == "1"
    assert _page(root) == ("1048576", "KiB")
    assert noted(result, "1048576 KiB", "NUMA cell 1")


def test_hugepages_count_free_pages_of_the_pinned_cell_only():
    facts = host_facts("numa4-hugepages")
    # the pinned cell (1) has one free 1 GiB page: too few for 2 GiB; 2 MiB pages suffice
    cells = tuple(replace(c, free_pages={1048576: 1, 2048: 1024} if c.id == 1 else {1048576: 100})
                  for c in facts.cells)
    root, ctx = apply(["vcpu-pinning", "hugepages"], replace(facts, cells=cells), memory=2 * GiB)
    assert _page(root) == ("2048", "KiB")
    # without pinning, the other cells' free 1 GiB pages count
    root, _ = apply(["hugepages"], replace(facts, cells=cells), memory=2 * GiB)
    assert _page(root) == ("1048576", "KiB")


def test_hugepages_total_across_cells_when_not_pinned():
    facts = host_facts("numa4-hugepages")
    cells = tuple(replace(c, free_pages={1048576: 1}) for c in facts.cells)  # 4 across the host
    root, ctx = apply(["hugepages"], replace(facts, cells=cells), memory=4 * GiB)
    assert _page(root) == ("1048576", "KiB")
    assert noted(ctx, "pages of the host")


def test_hugepages_memory_not_a_multiple_of_1gib_uses_2mib_pages():
    root = tree(render(["hugepages"], "numa4-hugepages", memory="1536MiB"))
    assert _page(root) == ("2048", "KiB")


@pytest.mark.parametrize(("host", "pinned", "how"), [
    ("amd-sev", [], "sysctl vm.nr_hugepages=2048"),
    ("amd-sev", ["vcpu-pinning"], "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"),
    ("tcg", [], "sysctl vm.nr_hugepages=2048"),
])
def test_hugepages_none_free_notes_what_to_reserve(host, pinned, how):
    # amd-sev (Zen 5) has 2 MiB and 1 GiB page sizes but no huge page reserved
    result = render(["hugepages", *pinned], host, memory="4GiB")
    assert tree(result).find("memoryBacking") is None
    assert noted(result, "no free huge pages", "reserve 2048 pages of 2048 KiB", how)


def test_hugepages_no_free_pages_on_a_live_host():
    facts = host_facts("numa4-hugepages")
    cells = tuple(replace(c, free_pages={}) for c in facts.cells)
    root, ctx = apply(["hugepages"], replace(facts, cells=cells), memory=4 * GiB)
    assert root.find("memoryBacking") is None
    assert noted(ctx, "reserve 2048 pages of 2048 KiB")


def test_locked_memory_and_balloons():
    root = tree(render(["locked-memory", "memballoon"]))
    assert root.find("memoryBacking/locked") is not None
    assert dict(root.find("devices/memballoon").attrib) == {
        "model": "virtio", "autodeflate": "on", "freePageReporting": "on"}
    root = tree(render(["no-memballoon"]))
    assert dict(root.find("devices/memballoon").attrib) == {"model": "none"}
    with pytest.raises(RulesError, match="no-memballoon"):
        render(["memballoon", "no-memballoon"])


# -- firmware ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["amd-sev", "aarch64"])
def test_uefi(host):
    root = tree(render(["uefi"], host))
    assert root.find("os").get("firmware") == "efi"
    assert root.find("os/firmware") is None


def test_secure_boot_on_x86_needs_smm():
    result = render(["secure-boot"], "amd-sev")
    root = tree(result)
    assert "uefi" in result.resolution.names  # implied
    assert root.find("os").get("firmware") == "efi"
    feats = {f.get("name"): f.get("enabled") for f in root.iterfind("os/firmware/feature")}
    assert feats == {"secure-boot": "yes", "enrolled-keys": "yes"}
    assert root.find("features/smm").get("state") == "on"


def test_secure_boot_off_x86_has_no_smm():
    root = tree(render(["secure-boot"], "aarch64"))
    assert len(root.findall("os/firmware/feature")) == 2
    assert root.find("features/smm") is None


def test_secure_boot_where_the_firmware_has_none_keeps_plain_uefi():
    result = render(["secure-boot"], "tcg")  # secureBoot enum lists only 'no'
    root = tree(result)
    assert root.find("os").get("firmware") == "efi"
    assert root.find("os/firmware") is None and root.find("features/smm") is None
    assert noted(result, "secure-boot", "no Secure Boot")


# -- clock and lifecycle ----------------------------------------------------------------------


def test_clock():
    root = tree(render(["clock"]))
    assert root.find("clock").get("offset") == "utc"
    timers = {t.get("name"): dict(t.attrib) for t in root.iterfind("clock/timer")}
    assert timers == {
        "rtc": {"name": "rtc", "tickpolicy": "catchup"},
        "pit": {"name": "pit", "tickpolicy": "delay"},
        "hpet": {"name": "hpet", "present": "no"},
    }


@pytest.mark.parametrize(("host", "features"), [("amd-sev", ["acpi", "apic"]), ("aarch64", ["acpi"])])
def test_acpi(host, features):
    root = tree(render(["acpi"], host))
    assert [f.tag for f in root.find("features")] == features


def test_destroy_on_events_and_power_management():
    root = tree(render(["destroy-on-events", "power-management"]))
    assert [root.findtext(e) for e in ("on_poweroff", "on_reboot", "on_crash")] == ["destroy"] * 3
    assert {e.tag: e.get("enabled") for e in root.find("pm")} == {
        "suspend-to-mem": "yes", "suspend-to-disk": "yes"}


@pytest.mark.parametrize(("add", "firmware"), [(["uefi"], None), ([], "efi")])
def test_power_management_with_uefi_has_no_suspend_to_disk(add, firmware):
    # libvirt 9.0 finds no OVMF for <suspend-to-disk enabled='yes'> (no descriptor has acpi-s4)
    result = render(["power-management", *add], "local-kvm", firmware=firmware)
    assert {e.tag: e.get("enabled") for e in tree(result).find("pm")} == {"suspend-to-mem": "yes"}
    assert noted(result, "power-management", "ACPI S4")


def test_power_management_with_bios_despite_uefi_keeps_suspend_to_disk():
    result = render(["power-management", "uefi"], "amd-sev", firmware="bios")
    assert tree(result).find("pm/suspend-to-disk").get("enabled") == "yes"


# -- tpm --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "model"), [("amd-sev", "tpm-crb"), ("aarch64", "tpm-tis")])
def test_tpm_model_by_arch(host, model):
    root = tree(render(["tpm"], host))
    tpm = root.find("devices/tpm")
    assert tpm.get("model") == model
    assert dict(tpm.find("backend").attrib) == {"type": "emulator", "version": "2.0"}


def test_tpm_off_x86_is_tis_even_where_crb_is_listed():
    facts = host_facts("aarch64")
    facts = replace(facts, enums={**facts.enums, "tpm.model": frozenset({"tpm-crb", "tpm-tis"})})
    root, _ = apply(["tpm"], facts)
    assert root.find("devices/tpm").get("model") == "tpm-tis"


def test_tpm_x86_host_without_crb_gets_tis():
    facts = host_facts("amd-sev")
    facts = replace(facts, enums={**facts.enums, "tpm.model": frozenset({"tpm-tis"})})
    root, ctx = apply(["tpm"], facts)
    assert root.find("devices/tpm").get("model") == "tpm-tis"
    assert noted(ctx, "tpm-tis")


# -- host filesystem --------------------------------------------------------------------------


def test_host_filesystem_virtiofs_with_shared_memory():
    result = render(["host-filesystem"], "local-kvm", filesystem=["/srv/data:data:ro", "source=/srv/src,target=src"])
    root = tree(result)
    fss = root.findall("devices/filesystem")
    assert [(f.get("type"), f.get("accessmode")) for f in fss] == [("mount", "passthrough")] * 2
    assert [f.find("driver").get("type") for f in fss] == ["virtiofs", "virtiofs"]
    assert [(f.find("source").get("dir"), f.find("target").get("dir")) for f in fss] == [
        ("/srv/data", "data"), ("/srv/src", "src")]
    assert [f.find("readonly") is not None for f in fss] == [True, False]
    assert root.find("memoryBacking/source").get("type") == "memfd"
    assert root.find("memoryBacking/access").get("mode") == "shared"


def test_host_filesystem_without_memfd_shares_a_file():
    facts = host_facts("amd-sev")
    facts = replace(facts, enums={**facts.enums, "memoryBacking.sourceType": frozenset({"file", "anonymous"})})
    root, ctx = apply(["host-filesystem"], facts, filesystem=(Filesystem("/srv/a", "a"),))
    assert root.find("memoryBacking/source").get("type") == "file"
    assert noted(ctx, "memfd")


def test_host_filesystem_with_nothing_to_share():
    result = render(["host-filesystem"])
    root = tree(result)
    assert root.find("devices/filesystem") is None and root.find("memoryBacking") is None
    assert noted(result, "nothing is shared")


# -- launch security --------------------------------------------------------------------------


def _launch_security(root):
    ls = root.find("launchSecurity")
    if ls is None:
        return None
    return {"type": ls.get("type"), **{c.tag: c.text for c in ls}}


def test_launch_security_sev_es_with_libvirt_9_schema():
    result = render(["launch-security"], "amd-sev", support=Support({"launchSecurity/@type": frozenset({"sev"})}))
    root = tree(result)
    assert _launch_security(root) == {"type": "sev", "cbitpos": "51", "reducedPhysBits": "1", "policy": "0x0007"}
    # implied: UEFI, locked memory and iommu-platform
    assert {"uefi", "locked-memory", "iommu-platform"} <= set(result.resolution.names)
    assert root.find("os").get("firmware") == "efi"
    assert root.find("memoryBacking/locked") is not None
    assert noted(result, "SEV-SNP is offered by the host", "using SEV-ES")


def test_launch_security_with_the_installed_libvirt():
    # libvirt 9.0 knows sev, not sev-snp: the test pins what this libvirt gives
    result = render(["launch-security"], "amd-sev")
    expected = "sev-snp" if Support.installed().accepts("launchSecurity", "type", "sev-snp") else "sev"
    assert _launch_security(tree(result))["type"] == expected


def test_launch_security_snp_where_libvirt_knows_it():
    root, ctx = apply(["launch-security"], host_facts("amd-sev"),
                      support=Support({"launchSecurity/@type": frozenset({"sev", "sev-snp"})}))
    assert _launch_security(root) == {"type": "sev-snp", "cbitpos": "51", "reducedPhysBits": "1",
                                      "policy": "0x00030000"}
    assert noted(ctx, "using SEV-SNP")


def test_launch_security_plain_sev_where_the_host_has_no_es():
    facts = replace(host_facts("amd-sev"), extra={FACT: {**host_offers(host_facts("amd-sev")), "offered": ["sev"]}})
    root, _ = apply(["launch-security"], facts, support=Support({"launchSecurity/@type": frozenset({"sev", "sev-snp"})}))
    assert _launch_security(root)["policy"] == "0x0003"
    assert _launch_security(root)["type"] == "sev"


def test_launch_security_tdx():
    root, ctx = apply(["launch-security"], host_facts("intel-tdx"), support=Support({"launchSecurity/@type": frozenset({"tdx"})}))
    assert _launch_security(root) == {"type": "tdx", "policy": "0x10000000"}


@pytest.mark.parametrize(("host", "known", "why"), [
    ("intel-tdx", {"sev"}, "knows none of them"),
    ("amd-sev", set(), "knows none of them"),
    ("tcg", {"sev", "sev-snp", "tdx"}, "offers no launch security"),
])
def test_launch_security_nothing_usable_writes_nothing(host, known, why):
    root, ctx = apply(["launch-security"], host_facts(host), support=Support({"launchSecurity/@type": frozenset(known)}))
    assert root.find("launchSecurity") is None
    assert noted(ctx, "launch-security", why)


@pytest.mark.parametrize("other", ["cpu-migratable", "host-filesystem", "memballoon"])
def test_launch_security_conflicts(other):
    with pytest.raises(RulesError, match=other):
        render(["launch-security", other])


def test_iommu_platform_marks_every_virtio_device():
    result = render(["iommu-platform", "test-devices", "memballoon", "host-filesystem"], "local-kvm",
                    filesystem=["/srv/data:data"])
    devices = tree(result).find("devices")

    def iommu(xpath):
        return [d.find("driver").get("iommu") if d.find("driver") is not None else None
                for d in devices.xpath(xpath)]

    assert iommu("disk[target/@bus='virtio']") == ["on"]
    assert iommu("disk[target/@bus='sata']") == [None]
    assert iommu("interface") == ["on"]
    assert iommu("rng") == ["on"]
    assert iommu("video") == ["on"]
    assert iommu("memballoon") == ["on"]
    assert iommu("filesystem") == ["on"]
    assert iommu("controller[@model='virtio-scsi']") == ["on"]
    assert iommu("controller[@type='usb']") == [None]
    assert iommu("input") == [None]
    # added for the virtio channel, which libvirt's implicit controller would leave without
    assert iommu("controller[@type='virtio-serial']") == ["on"]
    # the driver attributes other features set are kept
    assert devices.find("disk/driver").get("type") == "qcow2"


def test_iommu_platform_keeps_an_existing_virtio_serial_controller():
    def with_controller(domain, ctx):
        devices = domain.ensure("devices")
        devices.add("controller", type="virtio-serial", index=0, ports=16)
        devices.add("channel", type="unix").ensure("target").set(type="virtio", name="x")

    ctx = Context(settings=Settings(name="t1", memory=GiB, vcpu=1), host=host_facts("amd-sev"),
                  resolution=Resolution(), support=Support())
    domain = Domain()
    with domain.writer("x", "feature"):
        with_controller(domain, ctx)
    with domain.writer("iommu-platform", "feature"):
        FEATURES["iommu-platform"].finish(domain, ctx)
    ctrls = domain.render()[0].findall("devices/controller")
    assert [(c.get("ports"), c.find("driver").get("iommu")) for c in ctrls] == [("16", "on")]


def test_iommu_platform_without_devices_adds_nothing():
    root, _ = apply(["iommu-platform"], host_facts("amd-sev"))
    assert root.find("devices") is None


# -- together: schema and libvirt's test driver -----------------------------------------------

#: no secure-boot: SEV-ES (what amd-sev gives with libvirt 9) cannot have the SMM it needs
#: (tests/plugins/test_launch_security_smm.py)
CONFIDENTIAL = ["launch-security", "cpu-passthrough", "vcpu-pinning", "hugepages", "no-memballoon",
                "tpm", "destroy-on-events", "acpi", "clock", "test-devices"]
DESKTOP = ["uefi", "cpu-migratable", "memballoon", "power-management", "tpm", "host-filesystem",
           "acpi", "clock", "test-devices"]


@pytest.mark.parametrize(("host", "features"), [
    ("amd-sev", CONFIDENTIAL),
    ("numa4-hugepages", [f for f in CONFIDENTIAL if f != "launch-security"] + ["secure-boot"]),
    ("local-kvm", DESKTOP),
    ("local-tcg", DESKTOP),
])
def test_results_define_on_the_test_driver(host, features):
    libvirt = pytest.importorskip("libvirt")
    # a shared directory only where host-filesystem is chosen: --filesystem implies it, and it
    # cannot go with launch security
    shares = {"filesystem": ["/srv/data:data"]} if "host-filesystem" in features else {}
    result = render(features, host, memory="4GiB", vcpu=2, **shares)
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXMLFlags(result.xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        try:
            defined = etree.fromstring(dom.XMLDesc().encode())
        finally:
            dom.undefine()
    finally:
        conn.close()
    ours = tree(result)
    assert defined.find("cpu").get("mode") == ours.find("cpu").get("mode")
    assert defined.find("devices/tpm").get("model") == ours.find("devices/tpm").get("model")
    if "launch-security" in features:
        assert _launch_security(defined) == _launch_security(ours) is not None


def test_the_features_come_through_the_entry_points():
    """The installed plugins register every feature of this file (the stand-in host checks
    are refused as duplicates where the real ones are installed, and are harmless); the
    features' host checks are the stand-ins' or the launch-security plugin's own."""
    from vscen.pipeline import Request, load

    _, reg = load(Request(scenarios=[], plugins=(("stub-host-checks", StubHostChecks),)))
    assert set(FEATURES) <= set(reg.features)
    assert {reg.plugin_of(n) for n in FEATURES} == {
        "cpu", "memory", "firmware", "clock", "lifecycle", "tpm", "host-filesystem", "launch-security"}
    for name, feature in FEATURES.items():
        assert set(feature.validators) <= {*HOST_CHECKS, "confidential-computing", "launch-security-smm"}, name
