"""The soft-rt scenario: a soft real-time guest, with bounded latency on a prepared host.

Real-time work in a guest (industrial control, audio, trading, NFV) needs vCPUs that are
never preempted by anything else and memory that never faults. vscen prepares the guest and
*checks* the host; what the host needs (isolated CPUs, a real-time kernel or tuned profile)
is reported with the exact kernel parameters or command, never done: it needs a reboot and an
administrator's decision.

``rt-pinning``
    Each vCPU pinned to its own *isolated* host CPU (``/sys/devices/system/cpu/isolated``,
    set by ``isolcpus=``: the scheduler puts nothing else there), one physical core each while
    there are enough, all in one NUMA cell that holds the guest's memory free; the memory bound
    to that cell (``<numatune>`` strict). The emulator threads (QEMU's main loop, device I/O)
    get one more isolated CPU of the cell to themselves, so their work never lands on a vCPU's
    CPU nor waits behind the host's housekeeping (OpenStack's ``emulator_threads_policy=
    isolate``); where the cell has no isolated CPU left, the cell's other CPUs, with a note.
    Where the host's isolated CPUs are not known (recorded facts without local facts, a remote
    host), the cell's CPUs after its first core are taken as if isolated, the first core left
    to the host, and the ``realtime-host`` check warns; where they are known and there are none
    (or too few), the check fails: FIFO vCPUs on CPUs the host also schedules on can starve its
    kernel threads (RCU stalls, hung tasks).
``rt-scheduling``
    ``<vcpusched vcpus='0-N' scheduler='fifo' priority='1'/>``: the vCPU threads run SCHED_FIFO
    at the lowest real-time priority, above every normal task but below the kernel's own
    real-time threads (interrupt threads on a PREEMPT_RT kernel), as Red Hat's RT-KVM guide
    does. Only on pinned vCPUs (implies ``rt-pinning``); a note otherwise.
``rt-clock``
    The ``clock`` timers (UTC, RTC catch-up, PIT delay, no HPET: guests then use the cheaper
    kvm-clock and TSC) plus ``<timer name='kvmclock' present='yes'/>`` (KVM's paravirtual clock,
    stable across vCPUs) and, where the host's CPU has an invariant TSC (``invtsc`` in its
    host-model), ``<feature policy='require' name='invtsc'/>``: the guest's TSC runs at a
    constant rate, so its clocksource stays on the TSC, the cheapest to read; the guest then
    refuses to start on a host without it rather than lose it silently.

The scenario adds a passed-through host CPU, locked memory on huge pages (no page faults, no
swap), no balloon (it would take memory back mid-run), KSM off (merged pages fault on write)
and a headless, raw, uncached disk. ``realtime-host`` checks KVM, the isolated CPUs, that they
are tickless (``nohz_full=``) and a PREEMPT_RT kernel (``/sys/kernel/realtime``) or a real-time
tuned profile; ``realtime-memory`` checks the guest's memory fits what the chosen cell has free
(no overcommit).
"""

from __future__ import annotations

from dataclasses import dataclass

from vscen import Check, Conflict, Feature, Scenario, Validator, hookimpl
from vscen import format_cpulist as cpuset

#: tuned profiles that tune a host for real-time guests (tuned-profiles-realtime, -nfv-host)
RT_PROFILES = ("realtime-virtual-host", "realtime", "cpu-partitioning")
PRIORITY = 1



def pin_order(cell) -> list[int]:
    """The cell's CPUs, one thread of each core first, the sibling threads after."""
    cores = cell.cores or tuple((c,) for c in cell.cpus)
    return [core[0] for core in cores] + [cpu for core in cores for cpu in core[1:]]


def cell_free_kib(cell) -> tuple[int, bool]:
    """(KiB the guest can have in *cell* without overcommit, whether free counts are known):
    the most of one page size (normal or huge) that is free, at most the cell's memory."""
    sizes = set(cell.pages) | set(cell.free_pages or {})
    if not sizes:
        return cell.memory_kib, False
    most = max(cell.free(s) * s for s in sizes)
    return (min(most, cell.memory_kib) if cell.memory_kib else most), cell.free_pages is not None


@dataclass(frozen=True)
class Placement:
    """Where the guest runs: NUMA cell, vCPU CPUs, emulator CPUs."""

    cell: object = None
    vcpus: tuple[int, ...] = ()
    emulator: tuple[int, ...] = ()
    #: emulator on an isolated CPU of its own (else the cell's housekeeping CPUs, or floating)
    emulator_isolated: bool = False
    #: the host's isolated CPUs are known (local facts); else the cell's CPUs are assumed
    known: bool = False
    #: why there is no placement: "cpus" (too few isolated CPUs) or "memory"
    problem: str = ""
    detail: str = ""


def isolated_of(ctx, cell) -> list[int]:
    """The CPUs of *cell* a real-time vCPU may take, in pinning order."""
    local = ctx.host.local
    order = pin_order(cell)
    if local is not None:
        return [c for c in order if c in set(local.isolated_cpus)]
    first = set(cell.cores[0]) if cell.cores else {min(cell.cpus, default=0)}
    return [c for c in order if c not in first]


def place(ctx) -> Placement:
    vcpu, memory = ctx.settings.vcpu, ctx.settings.memory
    known = ctx.host.local is not None
    cells = ctx.host.cells
    if not cells:
        return Placement(known=known, problem="cpus", detail="the host facts carry no NUMA topology")
    enough = [(c, iso) for c in cells if len(iso := isolated_of(ctx, c)) >= vcpu]
    if not enough:
        counts = ", ".join(f"cell {c.id}: {cpuset(isolated_of(ctx, c)) or 'none'}" for c in cells)
        what = "isolated CPUs" if known else "CPUs after the first core"
        return Placement(known=known, problem="cpus", detail=f"no NUMA cell has {vcpu} {what} ({counts})")
    fits = [(c, iso) for c, iso in enough if cell_free_kib(c)[0] >= memory]
    if not fits:
        free = ", ".join(f"cell {c.id}: {cell_free_kib(c)[0] // 1024} MiB" for c, _ in enough)
        return Placement(known=known, problem="memory",
                         detail=f"no NUMA cell with {vcpu} isolated CPUs has {memory // 1024} MiB free ({free})")
    cell, iso = next(((c, i) for c, i in fits if len(i) > vcpu), fits[0])
    vcpus = tuple(iso[:vcpu])
    if len(iso) > vcpu:
        return Placement(cell, vcpus, (iso[vcpu],), True, known)
    housekeeping = tuple(c for c in cell.cpus if c not in set(iso))
    return Placement(cell, vcpus, housekeeping, False, known)


# -- features -------------------------------------------------------------------------------


def apply_rt_pinning(domain, ctx) -> None:
    p = place(ctx)
    if p.cell is None:
        ctx.note(f"rt-pinning: {p.detail}: vCPUs are not pinned")
        return
    tune = domain.ensure("cputune")
    for i, cpu in enumerate(p.vcpus):
        tune.child("vcpupin", vcpu=i).set(cpuset=cpu)
    if p.emulator:
        tune.ensure("emulatorpin").set(cpuset=cpuset(p.emulator))
    domain.ensure("numatune/memory").set(mode="strict", nodeset=p.cell.id)
    where = "isolated CPUs" if p.known else "CPUs (assumed isolated: the host's isolated CPUs are unknown)"
    ctx.note(f"rt-pinning: vCPUs on {where} {cpuset(p.vcpus)} of NUMA cell {p.cell.id}")
    if not p.emulator:
        ctx.note(f"rt-pinning: NUMA cell {p.cell.id} has no CPU left for the emulator threads: they float")
    elif not p.emulator_isolated:
        ctx.note(f"rt-pinning: no isolated CPU left in NUMA cell {p.cell.id} for the emulator "
                 f"threads: they share the host's CPUs {cpuset(p.emulator)}")


def apply_rt_scheduling(domain, ctx) -> None:
    if domain.find("cputune/vcpupin") is None:
        ctx.note("rt-scheduling: the vCPUs are not pinned: no FIFO scheduling (it could starve "
                 "the host's own threads)")
        return
    vcpus = cpuset(range(ctx.settings.vcpu))
    domain.ensure("cputune").child("vcpusched", vcpus=vcpus).set(scheduler="fifo", priority=PRIORITY)


def apply_rt_clock(domain, ctx) -> None:
    if (ctx.settings.virt_type or ctx.host.domain_type) != "kvm":
        ctx.note("rt-clock: no KVM: no kvm-clock")
        return
    domain.ensure("clock").child("timer", name="kvmclock").set(present="yes")
    if ("require", "invtsc") in ctx.host.host_model_features:
        cpu = domain.ensure("cpu")
        if cpu.find("feature", name="invtsc") is None:  # libvirt's attribute order: policy, name
            cpu.add("feature", policy="require", name="invtsc")
    elif ctx.host.has_domcaps:
        ctx.note("rt-clock: the host's CPU has no invariant TSC: the guest's clock may leave the TSC")
    else:
        ctx.note("rt-clock: the host's CPU features are unknown (no domain capabilities): invariant TSC not required")


# -- host checks ----------------------------------------------------------------------------


def suggested_cpus(ctx) -> str:
    """CPUs to isolate: all but the first core of each NUMA cell (left to the host)."""
    cpus = []
    for cell in ctx.host.cells:
        first = set(cell.cores[0]) if cell.cores else {min(cell.cpus, default=0)}
        cpus += [c for c in cell.cpus if c not in first]
    if not cpus:
        cpus = list(range(1, max(ctx.host.cpus, 2)))
    return cpuset(cpus)


def isolate_fix(ctx) -> str:
    cpus = suggested_cpus(ctx)
    return (f"isolate CPUs on the kernel command line: 'isolcpus=managed_irq,domain,{cpus} "
            f"nohz_full={cpus} rcu_nocbs={cpus}' (GRUB_CMDLINE_LINUX in /etc/default/grub, "
            "update-grub, reboot), or have tuned do it: isolated_cores="
            f"{cpus} in /etc/tuned/realtime-virtual-host-variables.conf, then 'tuned-adm profile "
            "realtime-virtual-host' and reboot (vscen never changes this itself)")


def check_realtime_host(ctx):
    host, local = ctx.host, ctx.host.local
    if (ctx.settings.virt_type or host.domain_type) != "kvm":
        return [Check("fail", "no KVM: an emulated (TCG) guest has no latency bound",
                      fix="enable VT-x/AMD-V and KVM on the host; real-time guests need it")]
    p = place(ctx)
    checks = []
    if local is None:
        seen = (f"vCPUs pinned to NUMA cell {p.cell.id} CPUs {cpuset(p.vcpus)}, assumed isolated"
                if p.cell is not None else p.detail)
        checks.append(Check("warn", f"the host's isolated CPUs, tick and kernel are unknown "
                                    f"(recorded facts without local facts, or a remote host): {seen}",
                            fix=f"on that host check /sys/devices/system/cpu/isolated; {isolate_fix(ctx)}"))
        return checks
    if not local.isolated_cpus:
        checks.append(Check("fail", "the host has no isolated CPUs (/sys/devices/system/cpu/isolated "
                                    "is empty): FIFO vCPUs would compete with the host's own threads",
                            fix=isolate_fix(ctx)))
    elif p.problem == "cpus":
        checks.append(Check("fail", f"isolated CPUs {cpuset(local.isolated_cpus)}: {p.detail}",
                            fix=f"lower --vcpu, or {isolate_fix(ctx)}"))
    elif p.cell is not None:
        emulator = (f"emulator on isolated CPU {cpuset(p.emulator)}" if p.emulator_isolated
                    else f"emulator on {cpuset(p.emulator) or 'no CPU left'}")
        checks.append(Check("pass", f"vCPUs on isolated CPUs {cpuset(p.vcpus)} of NUMA cell "
                                    f"{p.cell.id}, {emulator}"))
    want = set(p.vcpus) or set(local.isolated_cpus)
    ticking = sorted(want - set(local.nohz_full_cpus))
    if want and ticking:
        checks.append(Check("warn", f"CPUs {cpuset(ticking)} still get the periodic tick "
                                    f"(nohz_full: {cpuset(local.nohz_full_cpus) or 'none'}): a "
                                    "vCPU is interrupted up to 1000 times a second",
                            fix=isolate_fix(ctx)))
    elif want:
        checks.append(Check("pass", f"CPUs {cpuset(want)} are tickless (nohz_full)"))
    profile = local.tuned_profile or "none"
    if local.realtime_kernel:
        checks.append(Check("pass", f"a PREEMPT_RT kernel (tuned profile: {profile})"))
    elif any(name in RT_PROFILES for name in profile.split()):
        checks.append(Check("pass", f"tuned profile {profile} (no PREEMPT_RT kernel: soft real time)"))
    else:
        checks.append(Check("warn", f"neither a PREEMPT_RT kernel (/sys/kernel/realtime) nor a "
                                    f"real-time tuned profile (active: {profile}): long kernel "
                                    "sections can delay a vCPU",
                            fix="install tuned and its real-time profiles (tuned-profiles-realtime "
                                "or tuned-profiles-nfv-host) and run 'tuned-adm profile "
                                "realtime-virtual-host', or boot a PREEMPT_RT kernel "
                                "(linux-image-rt-amd64, kernel-rt)"))
    return checks


def check_realtime_memory(ctx):
    p = place(ctx)
    memory = ctx.settings.memory
    if p.problem == "memory":
        return [Check("fail", f"{p.detail}: a real-time guest must not overcommit memory",
                      fix="lower --memory, free memory in that cell, or reserve huge pages there "
                          "(vscen run --hugepages reserve)")]
    if p.cell is None:
        return [Check("skip", f"no NUMA cell chosen ({p.detail})")]
    free, known = cell_free_kib(p.cell)
    how = "free" if known else "in the recorded totals (free counts unknown)"
    return [Check("pass", f"{memory // 1024} MiB fit the {free // 1024} MiB NUMA cell {p.cell.id} has {how}")]


# -- registration ---------------------------------------------------------------------------


FEATURES = (
    Feature(
        name="rt-pinning",
        summary="vCPUs and emulator on isolated host CPUs of one NUMA cell, memory bound to it",
        category="cpu",
        conflicts=(Conflict("vcpu-pinning", "the vCPUs are pinned once: to isolated CPUs or to any CPUs of a cell"),),
        details="<cputune> vcpupin per vCPU on an isolated CPU (one core each first), emulatorpin "
                "on one more isolated CPU (else the cell's others); <numatune><memory mode='strict'>; "
                "where isolation is unknown, the cell's CPUs after its first core",
        apply=apply_rt_pinning,
    ),
    Feature(
        name="rt-scheduling",
        summary="vCPU threads scheduled FIFO at real-time priority 1",
        category="cpu",
        implies=("rt-pinning",),
        details="finish: <cputune><vcpusched vcpus='0-N' scheduler='fifo' priority='1'/> where "
                "the vCPUs are pinned",
        finish=apply_rt_scheduling,
    ),
    Feature(
        name="rt-clock",
        summary="a stable guest clock: kvm-clock, invariant TSC, no HPET",
        category="clock",
        implies=("clock",),
        details="the clock feature's timers plus <timer name='kvmclock' present='yes'/>, and "
                "<cpu><feature policy='require' name='invtsc'/> where the host CPU has it (KVM only)",
        apply=apply_rt_clock,
    ),
)

SOFT_RT = Scenario(
    name="soft-rt",
    summary="a soft real-time guest: isolated pinned vCPUs at FIFO priority, locked huge pages",
    details=(
        "For latency-bound work (control loops, audio, packet processing). Each vCPU on an "
        "isolated host CPU of its own, scheduled FIFO, the emulator on another isolated CPU, "
        "memory bound to that NUMA cell, on huge pages and locked (no faults, no swap), no "
        "balloon, KSM off, a passed-through CPU with an invariant TSC and kvm-clock. The host "
        "must be prepared (isolcpus/nohz_full/rcu_nocbs, a PREEMPT_RT kernel or tuned's "
        "realtime-virtual-host profile): vscen checks and explains, never changes it. "
        "Defaults: machine q35, 2 GiB, 2 vCPUs, headless, raw disk with cache=none, io=native."
    ),
    features=("cpu-passthrough", "rt-pinning", "rt-scheduling", "rt-clock", "hugepages",
              "locked-memory", "no-memballoon", "storage", "network", "serial-console",
              "headless", "acpi", "ksm-off"),
    defaults={"machine": "q35", "memory": "2GiB", "vcpu": 2, "graphics": "none",
              "disk": {"format": "raw", "cache": "none", "io": "native"}},
    conflicts=(
        Conflict("memballoon", "inflating a balloon faults guest pages and takes memory back mid-run"),
        Conflict("easy-migration", "a live migration pauses the guest, and its pinning belongs to this host"),
        Conflict("desktop", "a desktop's balloon, shared pages and migratable CPU add latency"),
    ),
    validators=("realtime-host", "realtime-memory"),
)

VALIDATORS = (
    Validator(name="realtime-host", kind="host", check=check_realtime_host,
              summary="KVM, isolated tickless CPUs, a PREEMPT_RT kernel or real-time tuned profile"),
    Validator(name="realtime-memory", kind="host", check=check_realtime_memory,
              summary="the guest's memory fits what its NUMA cell has free"),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)


@hookimpl
def vscen_register_scenarios(register):
    register(SOFT_RT)


@hookimpl
def vscen_register_validators(register):
    for v in VALIDATORS:
        register(v)
