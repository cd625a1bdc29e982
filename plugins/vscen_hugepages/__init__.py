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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vscen import HostAction, Step, hookimpl
from vscen.errors import ExistsError, HostError, LibvirtError, UsageError, VscenError

#: sysfs root (tests point it at a fake tree)
SYSFS = Path("/sys")
MEMINFO = Path("/proc/meminfo")
SYSCTL_CONF = Path("/etc/sysctl.d/90-vscen-hugepages.conf")
SYSCTL_HEADER = ("# Huge pages for guests made by vscen, reserved at boot. Written by 'vscen run "
                 "--hugepages persistent';\n# 'vscen destroy' takes it back.\n")
#: the page size vm.nr_hugepages reserves, where the host does not say (x86)
DEFAULT_HUGE_KIB = 2048
_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024,
          "mib": 1024, "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2, "gb": 1000**3 / 1024,
          "t": 1024**3, "tib": 1024**3, "tb": 1000**4 / 1024}


class _Unsupported(Exception):
    """The connection's driver cannot reserve huge pages (nothing was changed)."""


@dataclass(frozen=True)
class Need:
    """What the guest needs and what the host has, as planned."""

    size: int  # KiB
    pages: int  # the guest's pages of that size
    cells: tuple[int, ...]  # the NUMA cells the memory is bound to; () = the whole host
    free: int  # free pages of that size there
    total: int  # pages of that size on the whole host (nr_hugepages), where known

    @property
    def missing(self) -> int:
        return max(self.pages - self.free, 0)

    @property
    def where(self) -> str:
        if not self.cells:
            return "the host"
        return f"NUMA cell{'s' if len(self.cells) > 1 else ''} {','.join(map(str, self.cells))}"

    def targets(self, missing: int | None = None) -> list[tuple[int, int]]:
        """(cell, pages) to add: -1 is the whole host; several cells share evenly."""
        missing = self.missing if missing is None else missing
        if not self.cells:
            return [(-1, missing)] if missing else []
        share, extra = divmod(missing, len(self.cells))
        out = [(c, share + (1 if i < extra else 0)) for i, c in enumerate(self.cells)]
        return [(c, n) for c, n in out if n]


def _kib(value, unit) -> int:
    factor = _UNITS.get((unit or "KiB").lower())
    if factor is None:
        raise UsageError(f"hugepages: unit '{unit}' of the domain XML is not a memory unit")
    return int(int(value) * factor)


def _nodeset(text: str | None) -> tuple[int, ...]:
    """'0', '0-1', '0,2-3' -> cell ids; () for none or a set vscen does not parse ('^1')."""
    cells: set[int] = set()
    for part in filter(None, (text or "").replace(" ", "").split(",")):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return ()
        cells.update(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(cells))


def _finished(ctx):
    """The finished domain (with the user's --set), as lxml."""
    if ctx.xml is not None:
        return ctx.xml
    root, _ = ctx.domain.render()
    return root


def need(ctx) -> Need | None:
    """The huge pages the guest's domain asks for, against ctx.host; None without backing."""
    root = _finished(ctx)
    page = root.find("memoryBacking/hugepages/page")
    if page is None:
        return None
    size = _kib(page.get("size"), page.get("unit"))
    mem = root.find("memory")
    memory = _kib(mem.text, mem.get("unit")) if mem is not None else ctx.settings.memory
    numa = root.find("numatune/memory")
    cells = _nodeset(numa.get("nodeset") if numa is not None else None)
    known = {c.id: c for c in ctx.host.cells}
    chosen = [known[i] for i in cells if i in known] if cells else list(known.values())
    return Need(size=size, pages=-(-memory // size), cells=cells,
                free=sum(c.free(size) for c in chosen),
                total=sum(c.pages.get(size, 0) for c in known.values()))


def _echo(n: Need, count: int) -> str:
    """The shell command that reserves *count* more pages (for notes)."""
    if not n.cells:
        return f"echo {n.total + count} > /sys/kernel/mm/hugepages/hugepages-{n.size}kB/nr_hugepages"
    return (f"echo N > /sys/devices/system/node/node{n.cells[0]}/hugepages/hugepages-{n.size}kB/"
            f"nr_hugepages with N = its current count + {count}")


def _human(size: int) -> str:
    return f"{size // 1024} MiB" if size % 1024 == 0 else f"{size} KiB"


def _size_text(size: int) -> str:
    return f"{size // 1024**2}G" if size % 1024**2 == 0 else f"{size // 1024}M" if size % 1024 == 0 else f"{size}K"


def _default_huge_kib() -> int:
    """The size vm.nr_hugepages reserves on this machine (Hugepagesize in /proc/meminfo)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("Hugepagesize:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return DEFAULT_HUGE_KIB


# -- reading and changing the pools --------------------------------------------------------------


class _LibvirtPages:
    """The pools through libvirt's API (local or remote)."""

    via = "libvirt"

    def __init__(self, connection):
        self.conn = connection.conn
        self.uri = connection.uri

    def _fail(self, what, exc):
        return LibvirtError(f"hugepages: cannot {what} on {self.uri}: {exc.get_error_message()}")

    def totals(self, size: int) -> dict[int, int]:
        """cell -> pages of *size* (nr_hugepages of the cell), from the capabilities."""
        import libvirt
        from lxml import etree

        try:
            caps = etree.fromstring(self.conn.getCapabilities().encode())
        except libvirt.libvirtError as exc:
            raise self._fail("read the capabilities", exc) from None
        out = {}
        for cell in caps.iterfind("host/topology/cells/cell"):
            pages = cell.find(f"pages[@size='{size}']")
            out[int(cell.get("id"))] = int(pages.text or 0) if pages is not None else 0
        return out

    def free(self, size: int, cells: tuple[int, ...]) -> int:
        import libvirt

        try:
            if not cells:
                got = self.conn.getFreePages([size], -1, 1, 0)
            else:
                got = {}
                for c in cells:
                    got.update(self.conn.getFreePages([size], c, 1, 0))
        except libvirt.libvirtError as exc:
            raise self._fail(f"count the free {size} KiB pages", exc) from None
        return sum(int(p.get(size, 0)) for p in got.values())

    def free_memory(self, cells: tuple[int, ...]) -> int:
        """Free memory in KiB (of *cells*, or the host)."""
        import libvirt

        try:
            if not cells:
                return self.conn.getFreeMemory() // 1024
            return sum(self.conn.getCellsFreeMemory(c, 1)[0] for c in cells) // 1024
        except libvirt.libvirtError as exc:
            raise self._fail("read the free memory", exc) from None

    def _alloc(self, size, cell, count, flags, what):
        import libvirt

        try:
            self.conn.allocPages({size: count}, cell, 1, flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                raise _Unsupported(exc.get_error_message()) from None
            raise self._fail(what, exc) from None

    def probe(self, size: int, cell: int) -> None:
        """Raise _Unsupported where the driver cannot reserve pages (adding none changes nothing)."""
        import libvirt

        self._alloc(size, cell, 0, libvirt.VIR_NODE_ALLOC_PAGES_ADD, f"reserve pages of {size} KiB")

    def add(self, size: int, cell: int, count: int) -> None:
        import libvirt

        self._alloc(size, cell, count, libvirt.VIR_NODE_ALLOC_PAGES_ADD,
                    f"add {count} pages of {size} KiB ({_cell_text(cell)})")

    def set(self, size: int, cell: int, count: int) -> None:
        import libvirt

        self._alloc(size, cell, count, libvirt.VIR_NODE_ALLOC_PAGES_SET,
                    f"set the pages of {size} KiB ({_cell_text(cell)}) to {count}")


class _SysfsPages:
    """The pools through this machine's sysfs (where libvirt's driver cannot)."""

    via = "sysfs"

    def _node(self, cell: int, size: int, name: str) -> Path:
        if cell < 0:
            return SYSFS / "kernel/mm/hugepages" / f"hugepages-{size}kB" / name
        return SYSFS / f"devices/system/node/node{cell}/hugepages/hugepages-{size}kB" / name

    def _cells(self) -> list[int]:
        base = SYSFS / "devices/system/node"
        found = sorted(int(p.name[4:]) for p in base.glob("node*") if p.name[4:].isdigit())
        return found or [-1]

    @staticmethod
    def _read(path: Path) -> int:
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise HostError(f"hugepages: cannot read {path} ({exc})") from None

    def _write(self, path: Path, value: int) -> None:
        try:
            path.write_text(f"{value}\n")
        except OSError as exc:
            raise HostError(f"hugepages: cannot write {value} to {path} ({exc.strerror}); "
                            "reserving huge pages needs root") from None

    def totals(self, size: int) -> dict[int, int]:
        return {c: self._read(self._node(c, size, "nr_hugepages")) for c in self._cells()}

    def free(self, size: int, cells: tuple[int, ...]) -> int:
        return sum(self._read(self._node(c, size, "free_hugepages")) for c in (cells or self._cells()))

    def free_memory(self, cells: tuple[int, ...]) -> int:
        if not cells:
            files = [(MEMINFO, "MemFree:")]
        else:
            files = [(SYSFS / f"devices/system/node/node{c}/meminfo", f"Node {c} MemFree:") for c in cells]
        total = 0
        for path, key in files:
            try:
                line = next(x for x in path.read_text().splitlines() if x.startswith(key))
                total += int(line[len(key):].split()[0])
            except (OSError, StopIteration, ValueError, IndexError):
                raise HostError(f"hugepages: cannot read the free memory from {path}") from None
        return total

    def probe(self, size: int, cell: int) -> None:
        path = self._node(cell, size, "nr_hugepages")
        if not path.exists():
            raise HostError(f"hugepages: {path} does not exist: this machine has no pool of "
                            f"{size} KiB pages{'' if cell < 0 else f' on NUMA node {cell}'}")

    def add(self, size: int, cell: int, count: int) -> None:
        path = self._node(cell, size, "nr_hugepages")
        self._write(path, self._read(path) + count)

    def set(self, size: int, cell: int, count: int) -> None:
        self._write(self._node(cell, size, "nr_hugepages"), count)


def _cell_text(cell: int) -> str:
    return "the whole host" if cell < 0 else f"NUMA cell {cell}"


def _backends(connection):
    """libvirt first; sysfs only on this machine (never for the test driver)."""
    yield _LibvirtPages(connection)
    if connection.is_local and not connection.is_test:
        yield _SysfsPages()


def _restore(pools, size: int, before: dict[int, int]) -> list[str]:
    """Set every cell back to its count in *before*; returns what failed."""
    problems = []
    try:
        now = pools.totals(size)
    except VscenError as exc:
        return [str(exc)]
    for cell, count in before.items():
        if now.get(cell, count) != count:
            try:
                pools.set(size, cell, count)
            except (VscenError, _Unsupported) as exc:
                problems.append(str(exc))
    return problems


def _reserve(pools, n: Need) -> dict | None:
    size = n.size
    for cell in n.cells or (-1,):
        pools.probe(size, cell)  # an unsupported driver changes nothing and reads nothing
    before = pools.totals(size)
    free = pools.free(size, n.cells)
    missing = n.pages - free
    if missing <= 0:
        return None  # someone reserved them since the plan
    boot = (f"hugepagesz={_size_text(size)} hugepages={sum(before.values()) + missing}"
            if not n.cells else
            f"hugepagesz={_size_text(size)} hugepages={n.cells[0]}:{before.get(n.cells[0], 0) + missing} (Linux >= 5.16)")
    free_kib = pools.free_memory(n.cells)
    if missing * size > free_kib:
        raise HostError(
            f"too few free huge pages: the guest needs {n.pages} pages of {size} KiB in {n.where}, "
            f"{free} are free, and the {missing} missing ones need {missing * size // 1024} MiB "
            f"but {n.where} has {free_kib // 1024} MiB of free memory; nothing was reserved. Free "
            f"memory, lower --memory, or reserve them at boot (kernel parameters {boot})"
        )
    try:
        for cell, count in n.targets(missing):
            pools.add(size, cell, count)
    except _Unsupported:
        if _restore(pools, size, before):  # a partial add on several cells
            raise HostError(f"hugepages: {pools.via} could not reserve pages, and restoring "
                            "the counts failed") from None
        raise
    except VscenError as exc:
        problems = _restore(pools, size, before)
        undone = f"; restoring the counts failed too: {'; '.join(problems)}" if problems else "; the counts are restored"
        raise HostError(f"too few free huge pages: {exc}{undone}") from None
    after = pools.totals(size)
    got = pools.free(size, n.cells)
    if got < n.pages:
        problems = _restore(pools, size, before)
        undone = (f"; restoring the counts failed too: {'; '.join(problems)}" if problems
                  else f"; restored the counts to {_counts(before)}")
        raise HostError(
            f"too few free huge pages: asked for {missing} more pages of {size} KiB in {n.where}, "
            f"the kernel found {got - free} (free memory is fragmented); the guest needs {n.pages}"
            f"{undone}. Reserve them at boot instead (kernel parameters {boot})"
        )
    return {"kind": "hugepages", "size_kib": size, "via": pools.via,
            "cells": list(n.cells), "previous": {str(c): v for c, v in before.items()},
            "added": {str(c): after.get(c, 0) - v for c, v in before.items() if after.get(c, 0) != v}}


def _counts(counts: dict[int, int]) -> str:
    return ", ".join(f"{_cell_text(c)}: {v}" for c, v in sorted(counts.items()))


def _reserve_step(connection, n: Need) -> Step:
    def do():
        for pools in _backends(connection):
            try:
                return _reserve(pools, n)
            except _Unsupported:
                continue
        raise HostError(
            f"hugepages: libvirt at {connection.uri} cannot reserve huge pages (virNodeAllocPages "
            f"is not supported there); reserve {n.missing} pages of {n.size} KiB on that host "
            f"yourself ({_echo(n, n.missing)})"
        )

    return Step(f"reserve {n.missing} huge pages of {n.size} KiB in {n.where} on {connection.uri} "
                f"(the guest needs {n.pages}, {n.free} are free)", do)


def _sysctl_text(total: int) -> str:
    return f"{SYSCTL_HEADER}vm.nr_hugepages = {total}\n"


def _sysctl_value(text: str | None) -> int | None:
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "vm.nr_hugepages":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _sysctl_step(connection, n: Need, planned: int) -> Step:
    path = SYSCTL_CONF

    def do():
        from vscen.apply import atomic_write

        total = planned
        for pools in _backends(connection):
            try:
                total = sum(pools.totals(n.size).values())
                break
            except VscenError:
                continue
        old = path.read_text() if path.exists() else None
        if (_sysctl_value(old) or 0) >= total:
            return None
        text = _sysctl_text(total)
        atomic_write(path, text)
        return {"kind": "hugepages-sysctl", "path": str(path), "previous": old, "written": text}

    return Step(f"write {path}: vm.nr_hugepages = {planned} (keeps the huge pages across reboots)", do)


def _plan_persistent(ctx, n: Need) -> list[Step]:
    connection = ctx.connection
    planned = n.total + n.missing
    boot = f"hugepagesz={_size_text(n.size)} hugepages={planned}"
    local = connection is not None and connection.is_local and not connection.is_test
    if connection is None or connection.is_test:
        ctx.note(f"hugepages: --hugepages persistent: {ctx.uri or 'no connection'} is not a real "
                 f"host, so nothing is kept across reboots (a host would need vm.nr_hugepages = {planned})")
        return []
    if n.size != (_default_huge_kib() if local else DEFAULT_HUGE_KIB):
        ctx.note(f"hugepages: {n.size} KiB pages can only be reserved across reboots by the kernel: "
                 f"add the kernel parameters '{boot}' on {connection.uri} and reboot it (vscen "
                 "never changes kernel parameters)")
        return []
    if n.cells and len(ctx.host.cells) > 1:
        ctx.note(f"hugepages: at boot the kernel spreads vm.nr_hugepages over every NUMA node; to "
                 f"have the pages in {n.where} use the kernel parameters 'hugepagesz="
                 f"{_size_text(n.size)} hugepages={n.cells[0]}:{n.pages}' (Linux >= 5.16) instead")
    if not connection.is_local:
        ctx.note(f"hugepages: remote host {connection.uri}: to keep the pages across reboots, put "
                 f"'vm.nr_hugepages = {planned}' in {SYSCTL_CONF} there")
        return []
    if not SYSCTL_CONF.parent.is_dir():
        ctx.note(f"hugepages: {SYSCTL_CONF.parent} does not exist: to keep the pages across "
                 f"reboots, add 'vm.nr_hugepages = {planned}' to /etc/sysctl.conf")
        return []
    try:
        old = SYSCTL_CONF.read_text() if SYSCTL_CONF.exists() else None
    except OSError as exc:
        raise HostError(f"hugepages: cannot read {SYSCTL_CONF} ({exc.strerror})") from None
    if old is not None and not old.startswith(SYSCTL_HEADER) and not ctx.force:
        raise ExistsError(f"hugepages: {SYSCTL_CONF} exists and was not written by vscen "
                          "(use --force to replace it)",
                          [f"hugepages: {SYSCTL_CONF} exists and was not written by vscen "
                           "(use --force to replace it)"])
    if (_sysctl_value(old) or 0) >= planned:
        ctx.note(f"hugepages: {SYSCTL_CONF} keeps {_sysctl_value(old)} pages across reboots: unchanged")
        return []
    if not os.access(SYSCTL_CONF.parent, os.W_OK):
        raise HostError(f"hugepages: cannot write {SYSCTL_CONF} (--hugepages persistent needs root)")
    return [_sysctl_step(connection, n, planned)]


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
            f"size that is a multiple of {_human(min(sizes))}, or --hugepages auto"
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
        steps.append(_reserve_step(connection, n))
    if mode == "persistent":
        steps += _plan_persistent(ctx, n)
    return steps


def undo(connection, record: dict) -> None:
    kind = record.get("kind")
    if kind == "hugepages-sysctl":
        _undo_sysctl(record)
        return
    if kind != "hugepages":
        raise VscenError(f"hugepages: unknown record kind '{kind}'")
    size = int(record["size_kib"])
    previous = {int(c): int(v) for c, v in record.get("previous", {}).items()}
    added = {int(c): int(v) for c, v in record.get("added", {}).items()}
    backends = list(_backends(connection))
    if record.get("via") == "sysfs":
        backends = backends[1:] or backends
    for pools in backends:
        try:
            now = pools.totals(size)
            for cell, before in previous.items():
                current = now.get(cell)
                if current is None:
                    continue
                # take back what was added; keep what others added since
                target = max(before, current - added.get(cell, 0))
                if current > target:
                    pools.set(size, cell, target)
            return
        except _Unsupported:
            continue
    raise HostError(f"hugepages: cannot give back the pages on {connection.uri}: reserving "
                    f"is not supported there; set them back yourself ({_counts(previous)})")


def _undo_sysctl(record: dict) -> None:
    from vscen.apply import atomic_write

    path = Path(record["path"])
    if path != SYSCTL_CONF:
        raise VscenError(f"hugepages: the journal names {path}, not {SYSCTL_CONF}: not touched")
    try:
        current = path.read_text()
    except FileNotFoundError:
        return  # gone already
    if record.get("written") is not None and current != record["written"]:
        return  # rewritten since (another guest's run): leave it to that one
    if record.get("previous") is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, record["previous"])


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


@hookimpl
def vscen_register_host_actions(register):
    register(HUGEPAGES)


@hookimpl
def vscen_register_settings(register):
    from vscen import Setting

    register(Setting(name="hugepages", choices=("auto", "reserve", "persistent"), default="auto", example="reserve",
                     help="Huge pages for guests backed by them: auto uses what is free; reserve reserves what is "
                          "missing; persistent also across reboots."))
