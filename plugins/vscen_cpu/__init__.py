"""CPU model, topology and pinning.

- ``cpu-passthrough``: the guest sees the host CPU as it is (``host-passthrough``), with
  ``migratable='off'`` so that even host-only features (invariant TSC...) are passed, and a
  topology that mirrors the host's SMT (threads per core when they divide the vCPU count) so
  that the guest scheduler makes the same choices as the host's. ``check='none'``: libvirt
  cannot compare a passthrough CPU with anything. On a host without host-passthrough (TCG),
  ``maximum`` is the nearest (every feature the emulator can do), else ``host-model``.
- ``cpu-migratable``: passthrough restricted to migratable features (``migratable='on'``), so
  the guest can move between identical hosts; ``host-model`` where passthrough is not offered.
- ``vcpu-pinning``: each vCPU pinned to its own host CPU of one NUMA cell, the emulator
  threads to the cell's other CPUs, and the memory bound to that cell (``strict``): no
  cross-node memory traffic and no vCPU sharing a host CPU with QEMU's own threads. The
  order follows the host's cores: where the guest has SMT threads (``cpu-passthrough``
  mirrors the host's), the threads of one guest core land on the sibling threads of one host
  core; without, each vCPU gets a physical core of its own while there are enough.
"""

from __future__ import annotations

from vscen import Conflict, Feature, hookimpl
from vscen import format_cpulist as cpuset


def _cpu_modes(ctx) -> set[str] | None:
    """The CPU modes the host offers, or None where domcaps are not known."""
    return set(ctx.host.cpu_modes) if ctx.host.has_domcaps else None


def apply_passthrough(domain, ctx) -> None:
    modes = _cpu_modes(ctx)
    cpu = domain.ensure("cpu")
    if modes is None or "host-passthrough" in modes:
        cpu.set(mode="host-passthrough", check="none", migratable="off")
    elif "maximum" in modes:
        cpu.set(mode="maximum", check="none", migratable="off")
        ctx.note("cpu-passthrough: the host does not offer host-passthrough (no KVM): "
                 "using the 'maximum' CPU model instead")
    else:
        # libvirt refuses migratable= with host-model
        cpu.set(mode="host-model", check="none")
        ctx.note("cpu-passthrough: the host offers neither host-passthrough nor maximum: "
                 "using host-model instead")
    vcpu = ctx.settings.vcpu
    threads = ctx.host.threads if ctx.host.threads > 0 and vcpu % ctx.host.threads == 0 else 1
    if threads != ctx.host.threads:
        ctx.note(f"cpu-passthrough: {vcpu} vCPUs do not divide into the host's "
                 f"{ctx.host.threads} threads per core: one thread per core")
    cpu.ensure("topology").set(sockets=1, dies=1, cores=vcpu // threads, threads=threads)


def apply_migratable(domain, ctx) -> None:
    modes = _cpu_modes(ctx)
    cpu = domain.ensure("cpu")
    if modes is None or "host-passthrough" in modes:
        cpu.set(mode="host-passthrough", check="none", migratable="on")
    else:
        cpu.set(mode="host-model", check="none")
        ctx.note("cpu-migratable: the host does not offer host-passthrough (no KVM): "
                 "using host-model instead")


def choose_cell(ctx):
    """The first NUMA cell with a CPU per vCPU (plus one for the emulator where a cell has
    it) and room for the guest's memory; None where there is none."""
    vcpu, memory = ctx.settings.vcpu, ctx.settings.memory
    fits = [c for c in ctx.host.cells if len(c.cpus) >= vcpu and c.memory_kib >= memory]
    return next((c for c in fits if len(c.cpus) > vcpu), fits[0] if fits else None)



def apply_pinning(domain, ctx) -> None:
    if not ctx.host.cells:
        ctx.note("vcpu-pinning: the host facts carry no NUMA topology: vCPUs are not pinned")
        return
    cell = choose_cell(ctx)
    if cell is None:
        sizes = ", ".join(f"cell {c.id}: {len(c.cpus)} CPUs, {c.memory_kib} KiB" for c in ctx.host.cells)
        ctx.note(f"vcpu-pinning: no single NUMA cell has {ctx.settings.vcpu} CPUs and "
                 f"{ctx.settings.memory} KiB ({sizes}): vCPUs are not pinned")
        return
    vcpu = ctx.settings.vcpu
    order = pin_order(cell, guest_threads(domain))
    chosen = order[:vcpu]
    tune = domain.ensure("cputune")
    for i, host_cpu in enumerate(chosen):
        tune.child("vcpupin", vcpu=i).set(cpuset=host_cpu)
    rest = [c for c in cell.cpus if c not in chosen]
    if rest:
        tune.ensure("emulatorpin").set(cpuset=cpuset(rest))
    else:
        ctx.note(f"vcpu-pinning: NUMA cell {cell.id} has no CPU left for the emulator "
                 "threads: they float")
    domain.ensure("numatune/memory").set(mode="strict", nodeset=cell.id)
    ctx.note(f"vcpu-pinning: vCPUs pinned to CPUs {cpuset(chosen)} of NUMA cell {cell.id}")


def guest_threads(domain) -> int:
    """Threads per core of the guest's topology, where a CPU feature set one."""
    topology = domain.find("cpu/topology")
    value = topology.get("threads") if topology is not None else None
    return int(value) if value and value.isdigit() else 1


def pin_order(cell, threads: int) -> list[int]:
    """The cell's CPUs in the order vCPUs take them: sibling threads together where the guest
    has SMT, else one thread of each core first, the siblings after."""
    cores = cell.cores or tuple((c,) for c in cell.cpus)
    if threads > 1:
        return [cpu for core in cores for cpu in core]
    firsts = [core[0] for core in cores]
    return firsts + [cpu for core in cores for cpu in core[1:]]


FEATURES = (
    Feature(
        name="cpu-passthrough",
        summary="host CPU passed through, topology matching the host",
        category="cpu",
        conflicts=(Conflict("cpu-migratable", "a non-migratable passthrough CPU cannot also be migratable"),),
        details="<cpu mode='host-passthrough' check='none' migratable='off'> with a topology "
                "of the host's threads per core; 'maximum' or host-model where passthrough is not offered",
        apply=apply_passthrough,
    ),
    Feature(
        name="cpu-migratable",
        summary="host CPU passed through, restricted to migratable features",
        category="cpu",
        conflicts=(Conflict("cpu-passthrough", "a migratable CPU cannot pass non-migratable host features"),),
        details="<cpu mode='host-passthrough' check='none' migratable='on'/>; host-model where "
                "passthrough is not offered",
        apply=apply_migratable,
    ),
    Feature(
        name="vcpu-pinning",
        summary="vCPUs, emulator and memory pinned to one NUMA cell",
        category="cpu",
        details="<cputune> vcpupin per vCPU and emulatorpin to one NUMA cell with enough CPUs "
                "and memory; <numatune><memory mode='strict'>",
        # in finish: the guest topology set by a CPU feature decides the order
        finish=apply_pinning,
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
