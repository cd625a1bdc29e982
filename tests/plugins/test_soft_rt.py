"""The soft-rt scenario (vscen_soft_rt) and the local facts it reads: isolated and tickless
CPUs, a PREEMPT_RT kernel, tuned's profile; on recorded hosts with and without them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import vscen_soft_rt as rt
from conftest import DATA, host_facts, host_files
from lxml import etree

from vscen.context import Context
from vscen.domain.model import Domain
from vscen.errors import HostError, RulesError
from vscen.host import local as hl
from vscen.host.local import LocalFacts, Mount
from vscen.pipeline import Request, load
from vscen.resolve import Resolution
from vscen.settings import build_settings
from vscen.validate import Support

LIBVIRT_9 = Support({"launchSecurity/@type": frozenset({"sev"})}, schema=True)
#: the recorded 4-cell host plus the local facts of a host prepared for real-time guests (the
#: golden case soft-rt@numa4-rt): CPUs 2-7 isolated and tickless, PREEMPT_RT, tuned realtime
NUMA4_RT = [*host_files("numa4-hugepages"), DATA / "hosts" / "numa4-rt-local.xml"]
#: a host prepared as the brief says: isolcpus/nohz_full 2-7, PREEMPT_RT, tuned realtime profile
PREPARED = LocalFacts(isolated_cpus=tuple(range(2, 8)), nohz_full_cpus=tuple(range(2, 8)),
                      realtime_kernel=True, tuned_profile="realtime-virtual-host")


@pytest.fixture(scope="module")
def registry():
    _pm, reg = load(Request(scenarios=[]))
    return reg


def numa4(local: LocalFacts | None):
    """The recorded 4-cell host (cells of 4 CPUs: 0-3, 4-7...; 1, 2, 3, 4 GiB) with *local*."""
    return replace(host_facts("numa4-hugepages"), local=local)


def make_ctx(host, memory="2GiB", vcpu=2):
    settings, _ = build_settings([], [("default", {"name": "t", "memory": memory, "vcpu": vcpu})])
    return Context(settings=settings, host=host, resolution=Resolution(), support=LIBVIRT_9)


def checks(registry, name, ctx):
    return [(c.status, c.message, c.fix) for c in registry.validators[name].check(ctx)]


def parsed(result):
    return etree.fromstring(result.xml.encode())


# -- local facts: reading, the snapshot ---------------------------------------------------------


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_local_facts_read_the_real_time_files(tmp_path, monkeypatch):
    monkeypatch.setattr(hl, "SYSFS_ROOT", tmp_path)
    assert hl.read() == LocalFacts()  # none of the files: nothing known, nothing isolated
    write(tmp_path, "sys/devices/system/cpu/isolated", "2-5,7\n")
    write(tmp_path, "sys/devices/system/cpu/nohz_full", "2-5\n")
    write(tmp_path, "sys/kernel/realtime", "1\n")
    write(tmp_path, "etc/tuned/active_profile", "realtime-virtual-host\n")
    write(tmp_path, "proc/mounts", "/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n"
                                   "nas:/vm /var/lib/libvirt/my\\040images nfs4 rw 0 0\n")
    facts = hl.read()
    assert facts.isolated_cpus == (2, 3, 4, 5, 7) and facts.nohz_full_cpus == (2, 3, 4, 5)
    assert facts.realtime_kernel and facts.tuned_profile == "realtime-virtual-host"
    assert facts.mounts == (Mount("/", "ext4"), Mount("/var/lib/libvirt/my images", "nfs4"))
    assert hl.from_xml(hl.to_xml(facts)) == facts
    write(tmp_path, "sys/devices/system/cpu/nohz_full", "(null)\n")  # what the kernel says for none
    write(tmp_path, "sys/kernel/realtime", "0\n")
    facts = hl.read()
    assert facts.nohz_full_cpus == () and not facts.realtime_kernel


@pytest.mark.parametrize("text, cpus", [
    ("", ()), ("(null)", ()), ("0", (0,)), ("2-4,7", (2, 3, 4, 7)), ("1,3-4\n", (1, 3, 4)),
])
def test_cpu_lists(text, cpus):
    assert hl.parse_cpulist(text) == cpus
    assert hl.parse_cpulist(hl.format_cpulist(cpus)) == cpus


def test_an_old_snapshot_without_the_new_facts_still_reads():
    old = etree.fromstring(b"<local><kvm device='yes' usable='yes'/><cmdline>ro</cmdline></local>")
    facts = hl.from_xml(old)
    assert facts.kvm_usable and facts.isolated_cpus == () and facts.tuned_profile == "" and facts.mounts == ()


def render_rt(scenarios=("soft-rt",), files=NUMA4_RT, **kw):
    from vscen.pipeline import render

    request = Request(scenarios=list(scenarios), host_facts=files, support=LIBVIRT_9,
                      options={"name": "rt"}, **kw)
    return render(request, keep_connection=False)


def test_the_recorded_prepared_host_carries_its_local_facts():
    from vscen.host.facts import load_files

    facts = load_files(NUMA4_RT)
    assert facts.local.isolated_cpus == tuple(range(2, 8)) and facts.local.realtime_kernel
    assert facts.local.tuned_profile == "realtime-virtual-host"
    assert (DATA / "hosts" / "numa4-rt-local.xml").name in facts.source


# -- placement and the host checks --------------------------------------------------------------


def test_a_prepared_host_pins_to_its_isolated_cpus(registry):
    ctx = make_ctx(numa4(PREPARED))
    p = rt.place(ctx)
    # cell 0 (1 GiB) cannot hold 2 GiB; cell 1 has 4 isolated CPUs: two vCPUs and the emulator
    assert (p.cell.id, p.vcpus, p.emulator, p.emulator_isolated, p.known) == (1, (4, 5), (6,), True, True)
    got = checks(registry, "realtime-host", ctx)
    assert [s for s, _, _ in got] == ["pass", "pass", "pass"]
    assert "vCPUs on isolated CPUs 4-5 of NUMA cell 1, emulator on isolated CPU 6" in got[0][1]
    assert "a PREEMPT_RT kernel" in got[2][1]


def test_too_few_isolated_cpus_in_a_cell_shares_the_emulator(registry):
    local = replace(PREPARED, isolated_cpus=(2, 3), nohz_full_cpus=(2, 3))
    p = rt.place(make_ctx(numa4(local), memory="512MiB"))
    assert (p.cell.id, p.vcpus, p.emulator, p.emulator_isolated) == (0, (2, 3), (0, 1), False)
    domain = Domain()
    ctx = make_ctx(numa4(local), memory="512MiB")
    rt.apply_rt_pinning(domain, ctx)
    assert domain.find("cputune/emulatorpin").get("cpuset") == "0-1"
    assert any("no isolated CPU left in NUMA cell 0 for the emulator" in n for n in ctx.notes)


def test_no_isolated_cpus_fails_with_the_kernel_parameters(registry):
    local = replace(PREPARED, isolated_cpus=(), nohz_full_cpus=())
    got = checks(registry, "realtime-host", make_ctx(numa4(local)))
    status, message, fix = got[0]
    assert status == "fail" and "no isolated CPUs" in message
    assert "isolcpus=managed_irq,domain,1-3,5-7,9-11,13-15 nohz_full=1-3,5-7,9-11,13-15 rcu_nocbs=1-3,5-7,9-11,13-15" in fix
    assert "tuned-adm profile realtime-virtual-host" in fix and "never changes this itself" in fix


def test_more_vcpus_than_isolated_cpus_in_any_cell_fails(registry):
    got = checks(registry, "realtime-host", make_ctx(numa4(PREPARED), memory="1GiB", vcpu=5))
    assert got[0][0] == "fail"
    assert "no NUMA cell has 5 isolated CPUs (cell 0: 2-3, cell 1: 4-7, cell 2: none, cell 3: none)" in got[0][1]


def test_ticking_cpus_and_no_real_time_kernel_or_profile_warn(registry):
    local = replace(PREPARED, nohz_full_cpus=(2, 3), realtime_kernel=False, tuned_profile="virtual-host")
    got = checks(registry, "realtime-host", make_ctx(numa4(local)))
    assert [s for s, _, _ in got] == ["pass", "warn", "warn"]
    assert "CPUs 4-5 still get the periodic tick (nohz_full: 2-3)" in got[1][1]
    assert "nohz_full=" in got[1][2]
    assert "active: virtual-host" in got[2][1] and "tuned-adm profile realtime-virtual-host" in got[2][2]
    # the tuned profile alone is enough for soft real time
    tuned = replace(local, tuned_profile="realtime-virtual-host")
    assert checks(registry, "realtime-host", make_ctx(numa4(tuned)))[2][0] == "pass"


def test_unknown_isolation_pins_to_a_cell_with_a_warning(registry):
    ctx = make_ctx(numa4(None))
    p = rt.place(ctx)
    # the first core of each cell is left to the host
    assert (p.cell.id, p.vcpus, p.emulator, p.known) == (1, (5, 6), (7,), False)
    got = checks(registry, "realtime-host", ctx)
    assert [s for s, _, _ in got] == ["warn"]
    assert "unknown" in got[0][1] and "assumed isolated" in got[0][1]
    assert "/sys/devices/system/cpu/isolated" in got[0][2]


def test_tcg_is_refused(registry):
    got = checks(registry, "realtime-host", make_ctx(host_facts("local-tcg")))
    assert got == [("fail", "no KVM: an emulated (TCG) guest has no latency bound", got[0][2])]


def test_memory_must_fit_what_the_cell_has_free(registry):
    got = checks(registry, "realtime-memory", make_ctx(numa4(PREPARED)))
    assert got[0][0] == "pass" and "2048 MiB fit the 2048 MiB NUMA cell 1" in got[0][1]
    got = checks(registry, "realtime-memory", make_ctx(numa4(PREPARED), memory="3GiB"))
    assert got[0][0] == "fail" and "must not overcommit" in got[0][1]
    assert "no NUMA cell with 2 isolated CPUs has 3072 MiB free (cell 0: 1024 MiB, cell 1: 2048 MiB)" in got[0][1]
    # live free counts: cell 1 with 100 MiB of normal pages and no huge pages free
    cells = tuple(replace(c, free_pages={4: 25600, 2048: 0, 1048576: 0}) for c in numa4(PREPARED).cells)
    got = checks(registry, "realtime-memory", make_ctx(replace(numa4(PREPARED), cells=cells), memory="1GiB"))
    assert got[0][0] == "fail" and "cell 1: 100 MiB" in got[0][1]


# -- rendering ----------------------------------------------------------------------------------


def test_the_prepared_host_renders_a_real_time_guest():
    result = render_rt()
    xml = parsed(result)
    assert [(p.get("vcpu"), p.get("cpuset")) for p in xml.iterfind("cputune/vcpupin")] == [("0", "4"), ("1", "5")]
    assert xml.find("cputune/emulatorpin").get("cpuset") == "6"
    sched = xml.find("cputune/vcpusched")
    assert dict(sched.attrib) == {"vcpus": "0-1", "scheduler": "fifo", "priority": "1"}
    assert xml.find("numatune/memory").attrib == {"mode": "strict", "nodeset": "1"}
    assert xml.find("memoryBacking/hugepages/page") is not None and xml.find("memoryBacking/locked") is not None
    assert xml.find("devices/memballoon").get("model") == "none"
    assert xml.find("cpu").get("mode") == "host-passthrough"
    assert xml.find("cpu/feature[@name='invtsc']").get("policy") == "require"
    timers = {t.get("name"): dict(t.attrib) for t in xml.iterfind("clock/timer")}
    assert timers["kvmclock"]["present"] == "yes" and timers["hpet"]["present"] == "no"
    assert timers["pit"]["tickpolicy"] == "delay"
    assert {c.status for c in result.checks if c.validator in ("realtime-host", "realtime-memory")} == {"pass"}


def test_a_host_without_isolated_cpus_is_refused(tmp_path):
    snapshot = tmp_path / "plain.xml"
    snapshot.write_text(etree.tostring(etree.fromstring(
        b"<hostFacts>" + etree.tostring(hl.to_xml(LocalFacts(kvm_device=True))) + b"</hostFacts>"), encoding="unicode"))
    with pytest.raises(HostError, match="realtime-host: the host has no isolated CPUs"):
        render_rt(files=[*host_files("numa4-hugepages"), snapshot])


def test_fifo_only_on_pinned_vcpus():
    ctx = make_ctx(replace(numa4(None), cells=()))
    domain = Domain()
    rt.apply_rt_pinning(domain, ctx)
    rt.apply_rt_scheduling(domain, ctx)
    assert domain.find("cputune") is None
    assert any("no FIFO scheduling" in n for n in ctx.notes)
    assert any("no NUMA topology" in n for n in ctx.notes)


def test_no_invariant_tsc_no_requirement():
    host = replace(numa4(PREPARED), host_model_features=(("require", "x2apic"),))
    ctx = make_ctx(host)
    domain = Domain()
    rt.apply_rt_clock(domain, ctx)
    assert domain.find("cpu") is None and domain.find("clock/timer", name="kvmclock").get("present") == "yes"
    assert any("no invariant TSC" in n for n in ctx.notes)


@pytest.mark.parametrize("scenarios, add, reason", [
    (["soft-rt", "desktop"], [], "a desktop's balloon, shared pages and migratable CPU add latency"),
    (["soft-rt", "easy-migration"], [], "a live migration pauses the guest"),
    (["soft-rt", "computation"], [], "the vCPUs are pinned once"),
    (["soft-rt"], ["memballoon"], "inflating a balloon faults guest pages"),
])
def test_rules(scenarios, add, reason):
    with pytest.raises(RulesError) as exc:
        render_rt(scenarios, add=add)
    assert reason in str(exc.value)


def test_registered_by_the_plugin(registry):
    scenario = registry.scenarios["soft-rt"]
    assert registry.plugin_of("soft-rt", "scenarios") == "soft-rt"
    assert {"rt-pinning", "rt-scheduling", "rt-clock", "hugepages", "locked-memory", "no-memballoon"} <= set(scenario.features)
    assert scenario.validators == ("realtime-host", "realtime-memory")
    assert registry.features["rt-scheduling"].implies == ("rt-pinning",)
