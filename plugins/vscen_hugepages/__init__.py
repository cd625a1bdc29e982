"""Host action ``hugepages``: reserve the huge pages a guest is backed by.

With ``--hugepages auto`` (the default) nothing is reserved: the ``hugepages`` feature uses
what is free. With ``reserve`` or ``persistent`` the feature writes the backing whatever is
free, and this action plans the missing pages from the finished domain: the page size of
``<memoryBacking><hugepages><page>``, the memory, and the NUMA cells of
``<numatune><memory nodeset=...>`` (what ``vcpu-pinning`` chose; without one, the whole host,
where the kernel spreads the pages over the NUMA nodes itself).

Reserving goes through libvirt (``virNodeAllocPages``, so remote hosts work as local ones),
falling back to sysfs (``/sys/devices/system/node/nodeN/hugepages/hugepages-SkB/nr_hugepages``,
or ``/sys/kernel/mm/hugepages/hugepages-SkB/nr_hugepages`` for the whole host) on this
machine where the driver lacks that API. Before asking, the pages must fit the free memory of
those cells (vscen never has the kernel reclaim the host's memory wholesale); after asking,
the free pages are counted again, since the kernel gives what it can find: fewer is a
``too few free huge pages`` error, and the counts are restored at once. The record keeps the
counts before (per cell) and what was added; undo takes back what was added, leaving pages
others added meanwhile.

``persistent`` also writes ``/etc/sysctl.d/90-vscen-hugepages.conf`` (``vm.nr_hugepages``,
the pool of the default 2 MiB size, applied at boot) atomically; undo restores the previous
file or removes it. Pages of other sizes (1 GiB) can only be reserved at boot by the kernel
parameters ``hugepagesz=1G hugepages=N``: vscen reports that, and never changes kernel
parameters or reboots.

Modules: ``guest`` (what the guest needs), ``pools`` (reading and changing the host's pools)
and ``boot`` (``persistent``: the sysctl file).
"""

from __future__ import annotations

from vscen import HostAction, Step, UsageError, VscenError, hookimpl
from vscen_hugepages.boot import plan_persistent, undo_sysctl
from vscen_hugepages.guest import DEFAULT_HUGE_KIB, Need, human, need
from vscen_hugepages.pools import reserve_step, undo_pages

__all__ = ["HUGEPAGES", "Need", "need", "plan", "undo"]


def plan(ctx) -> list[Step]:
    mode = ctx.settings.hugepages
    if mode == "auto" or (ctx.xml is None and ctx.domain is None):
        return []
    n = need(ctx)
    if n is None:
        sizes = sorted(s for s in ctx.host.page_sizes if s > 4) or [DEFAULT_HUGE_KIB]
        raise UsageError(
            f"hugepages: --hugepages {mode}, but the guest memory ({ctx.settings.memory} KiB) is "
            f"not a whole number of huge pages ({', '.join(map(str, sizes))} KiB); give a memory "
            f"size that is a multiple of {human(min(sizes))}, or --hugepages auto"
        )
    connection = ctx.connection
    steps: list[Step] = []
    if not n.missing:
        ctx.note(f"hugepages: {n.free} pages of {n.size} KiB are free in {n.where}, the guest needs "
                 f"{n.pages}: nothing to reserve")
    elif connection is None or connection.is_test:
        ctx.note(f"hugepages: {ctx.uri or 'no connection'} has no real memory: the {n.missing} "
                 f"missing pages of {n.size} KiB in {n.where} are not reserved")
    else:
        steps.append(reserve_step(connection, n))
    if mode == "persistent":
        steps += plan_persistent(ctx, n)
    return steps


def undo(connection, record: dict) -> None:
    kind = record.get("kind")
    if kind == "hugepages-sysctl":
        undo_sysctl(connection, record)
        return
    if kind != "hugepages":
        raise VscenError(f"hugepages: unknown record kind '{kind}'")
    undo_pages(connection, record)


HUGEPAGES = HostAction(
    name="hugepages",
    summary="reserve the huge pages the guest is backed by (--hugepages reserve/persistent)",
    details=(
        "Adds the missing pages of the guest's page size on the NUMA cell its memory is bound "
        "to (else the whole host) through libvirt's virNodeAllocPages, falling back to sysfs on "
        "this machine; refuses what the free memory cannot hold, checks the kernel gave them "
        "all (else 'too few free huge pages' and the counts are restored). persistent: also "
        "vm.nr_hugepages in /etc/sysctl.d/90-vscen-hugepages.conf (2 MiB pages); 1 GiB pages "
        "only reported (kernel parameters hugepagesz=1G hugepages=N, needs a reboot). Undo "
        "takes back what was added, and the file."
    ),
    plan=plan,
    undo=undo,
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_host_actions(register):
    register(HUGEPAGES)


@hookimpl
def vscen_register_settings(register):
    from vscen import Setting

    register(Setting(name="hugepages", choices=("auto", "reserve", "persistent"), default="auto", example="reserve",
                     help="Huge pages for guests backed by them: auto uses what is free; reserve reserves what is "
                          "missing; persistent also across reboots."))
