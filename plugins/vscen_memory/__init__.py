"""Guest memory: huge pages, locking and the balloon.

- ``hugepages``: guest memory backed by the largest huge page size the host has enough
  *free* pages of: fewer TLB misses and page walks for memory-heavy work. The pages are looked
  for in the NUMA cell ``vcpu-pinning`` binds the memory to (the same choice as that feature
  makes), else across the host. A size is used only when the guest memory is a whole number of
  its pages (QEMU refuses a remainder). Where no size fits, the guest uses normal pages and a
  note says how many pages to reserve; the ``hugepages`` host check reports it too. That is
  ``--hugepages auto`` (the default). With ``--hugepages reserve`` or ``persistent``, where no
  size has enough free pages, the guest is backed by 2 MiB pages all the same (the smallest
  offered size the memory is a whole number of, where the host has no 2 MiB pages) and the
  ``hugepages`` host action reserves the missing ones when the guest is created: 2 MiB pages
  can be reserved on a running host, while 1 GiB pages need physically contiguous gigabytes a
  running host rarely has (they are used when enough are free already, never reserved).
- ``locked-memory``: ``<locked/>`` keeps guest memory out of swap (latency, and for
  confidential guests no encrypted pages written to disk). libvirt then lifts QEMU's memlock
  limit altogether (it cannot know QEMU's own overhead in advance), so a guest could lock as
  much host memory as it likes: libvirt's documentation asks for a ``<memtune><hard_limit>``
  with it, and this feature sets one, the guest's memory plus QEMU's overhead (1 GiB, the
  figure libvirt itself adds for a guest with assigned devices), unless one is set already.
  (Lifting the memlock limit needs CAP_SYS_RESOURCE, which a system libvirtd has but one in
  an unprivileged container has not.)
- ``memballoon``: a virtio balloon that gives memory back to the host: ``autodeflate`` returns
  it to the guest before the guest's OOM killer runs, ``freePageReporting`` hands free guest
  pages to the host continuously.
- ``no-memballoon``: ``model='none'``, because libvirt adds a balloon unless told not to, and
  a balloon cannot reclaim memory that is locked, on huge pages or encrypted.
"""

from __future__ import annotations

from vscen import Conflict, Feature, hookimpl

BASE_PAGE_KIB = 4
#: the page size to suggest reserving where the host offers no huge page size at all
DEFAULT_HUGE_KIB = 2048


def _pinned_cell(ctx):
    """The NUMA cell vcpu-pinning chooses (same rule: enough CPUs, one more for the
    emulator where possible, and enough memory), or None."""
    if not ctx.has("vcpu-pinning"):
        return None
    vcpu, memory = ctx.settings.vcpu, ctx.settings.memory
    fits = [c for c in ctx.host.cells if len(c.cpus) >= vcpu and c.memory_kib >= memory]
    return next((c for c in fits if len(c.cpus) > vcpu), fits[0] if fits else None)


def reserve_size(huge: list[int], memory: int) -> int | None:
    """The page size to reserve for *memory* KiB: 2 MiB where offered (or nothing is known),
    else the smallest offered size the memory is a whole number of; None where none is."""
    fits = [s for s in (huge or [DEFAULT_HUGE_KIB]) if memory % s == 0]
    return DEFAULT_HUGE_KIB if DEFAULT_HUGE_KIB in fits else min(fits, default=None)


def apply_hugepages(domain, ctx) -> None:
    memory = ctx.settings.memory
    cell = _pinned_cell(ctx)
    cells = (cell,) if cell is not None else ctx.host.cells
    where = f"NUMA cell {cell.id}" if cell is not None else "the host"
    sizes = set(ctx.host.page_sizes).union(*(c.pages for c in ctx.host.cells))
    huge = sorted((s for s in sizes if s > BASE_PAGE_KIB), reverse=True)
    for size in huge:
        if memory % size:
            continue
        if sum(c.free(size) for c in cells) >= memory // size:
            domain.ensure("memoryBacking/hugepages").child("page", size=size, unit="KiB")
            ctx.note(f"hugepages: guest memory backed by {size} KiB pages of {where}")
            return
    if ctx.settings.get("hugepages", "auto") != "auto":
        size = reserve_size(huge, memory)
        if size is not None:
            domain.ensure("memoryBacking/hugepages").child("page", size=size, unit="KiB")
            need, free = memory // size, sum(c.free(size) for c in cells)
            ctx.note(f"hugepages: guest memory backed by {size} KiB pages of {where}: {free} of "
                     f"the {need} pages it needs are free; the hugepages host action reserves "
                     f"the rest (--hugepages {ctx.settings.get('hugepages', 'auto')})")
            return
    size = min(huge, default=DEFAULT_HUGE_KIB)
    count = -(-memory // size)
    if cell is not None:
        how = f"echo {count} > /sys/devices/system/node/node{cell.id}/hugepages/hugepages-{size}kB/nr_hugepages"
    elif size == DEFAULT_HUGE_KIB:
        how = f"sysctl vm.nr_hugepages={count}"
    else:
        # vm.nr_hugepages only reserves pages of the default huge page size
        how = f"echo {count} > /sys/kernel/mm/hugepages/hugepages-{size}kB/nr_hugepages"
    odd = f", and give a memory size that is a multiple of {size} KiB" if memory % size else ""
    ctx.note(f"hugepages: no free huge pages for {memory} KiB in {where}: reserve {count} "
             f"pages of {size} KiB ({how}){odd}; using normal pages")


#: what QEMU itself needs besides the guest's memory, for the hard limit of a locked guest
QEMU_OVERHEAD_KIB = 1024 * 1024


def apply_locked(domain, ctx) -> None:
    domain.ensure("memoryBacking/locked")
    # locked memory is unbounded otherwise: bound it as libvirt's documentation asks
    domain.ensure("memtune/hard_limit").set(unit="KiB").text(ctx.settings.memory + QEMU_OVERHEAD_KIB)


def apply_memballoon(domain, ctx) -> None:
    domain.ensure("devices/memballoon").set(model="virtio", autodeflate="on", freePageReporting="on")


def apply_no_memballoon(domain, ctx) -> None:
    domain.ensure("devices/memballoon").set(model="none")


FEATURES = (
    Feature(
        name="hugepages",
        summary="guest memory on the largest huge pages the host has free",
        category="memory",
        validators=("hugepages",),
        host_actions=("hugepages",),
        details="<memoryBacking><hugepages><page size=S unit='KiB'/>: the largest size with "
                "enough free pages (in the pinned NUMA cell if any); normal pages and a note "
                "otherwise (--hugepages auto). With --hugepages reserve or persistent: 2 MiB "
                "pages where none has enough free, and the hugepages host action reserves the "
                "missing ones",
        apply=apply_hugepages,
    ),
    Feature(
        name="locked-memory",
        summary="guest memory locked in host RAM (never swapped)",
        category="memory",
        details="<memoryBacking><locked/> and <memtune><hard_limit> = memory + 1 GiB (QEMU's overhead), "
                "since libvirt lifts the memlock limit for a locked guest",
        apply=apply_locked,
    ),
    Feature(
        name="memballoon",
        summary="virtio balloon with auto-deflate and free page reporting",
        category="memory",
        conflicts=(Conflict("no-memballoon", "a guest has a balloon or not"),),
        details="<memballoon model='virtio' autodeflate='on' freePageReporting='on'>",
        apply=apply_memballoon,
    ),
    Feature(
        name="no-memballoon",
        summary="no balloon device",
        category="memory",
        conflicts=(Conflict("memballoon", "a guest has a balloon or not"),),
        details="<memballoon model='none'/>",
        apply=apply_no_memballoon,
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
