"""The host's huge page pools: read, reserved and given back through libvirt
(``virNodeAllocPages``, local or remote) or, where its driver cannot, this machine's sysfs."""

from __future__ import annotations

from pathlib import Path

from vscen import HostError, LibvirtError, Step, UsageError, VscenError, check_host, check_record, host_identity, on_this_machine
from vscen_hugepages.guest import DEFAULT_HUGE_KIB, Need, echo_command, size_text

#: sysfs root (tests point it at a fake tree)
SYSFS = Path("/sys")
MEMINFO = Path("/proc/meminfo")


class _Unsupported(Exception):
    """The connection's driver cannot reserve huge pages (nothing was changed)."""


def default_huge_kib() -> int:
    """The size vm.nr_hugepages reserves on this machine (Hugepagesize in /proc/meminfo)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("Hugepagesize:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return DEFAULT_HUGE_KIB


class _LibvirtPages:
    """The pools through libvirt's API (local or remote)."""

    via = "libvirt"

    def __init__(self, connection):
        self.connection = connection
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

    def __init__(self, connection):
        self.connection = connection

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


def backends(connection):
    """libvirt first; sysfs only on this machine (never for the test driver)."""
    yield _LibvirtPages(connection)
    if on_this_machine(connection):
        yield _SysfsPages(connection)


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
    boot = (f"hugepagesz={size_text(size)} hugepages={sum(before.values()) + missing}"
            if not n.cells else
            f"hugepagesz={size_text(size)} hugepages={n.cells[0]}:{before.get(n.cells[0], 0) + missing} (Linux >= 5.16)")
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
                  else f"; restored the counts to {counts_text(before)}")
        raise HostError(
            f"too few free huge pages: asked for {missing} more pages of {size} KiB in {n.where}, "
            f"the kernel found {got - free} (free memory is fragmented); the guest needs {n.pages}"
            f"{undone}. Reserve them at boot instead (kernel parameters {boot})"
        )
    return {"kind": "hugepages", "size_kib": size, "via": pools.via, "host": host_identity(pools.connection),
            "cells": list(n.cells), "previous": {str(c): v for c, v in before.items()},
            "added": {str(c): after.get(c, 0) - v for c, v in before.items() if after.get(c, 0) != v}}


def counts_text(counts: dict[int, int]) -> str:
    return ", ".join(f"{_cell_text(c)}: {v}" for c, v in sorted(counts.items()))


def reserve_step(connection, n: Need) -> Step:
    def do():
        for pools in backends(connection):
            try:
                return _reserve(pools, n)
            except _Unsupported:
                continue
        raise HostError(
            f"hugepages: libvirt at {connection.uri} cannot reserve huge pages (virNodeAllocPages "
            f"is not supported there); reserve {n.missing} pages of {n.size} KiB on that host "
            f"yourself ({echo_command(n, n.missing)})"
        )

    return Step(f"reserve {n.missing} huge pages of {n.size} KiB in {n.where} on {connection.uri} "
                f"(the guest needs {n.pages}, {n.free} are free)", do)


def undo_pages(connection, record: dict) -> None:
    """Take back the pages a ``hugepages`` record added; keep what others added since. Only on
    the host (and boot) where they were reserved, never through a test driver."""
    what = "hugepages"
    check_record(record, {"size_kib": int, "via": str, "previous": dict, "added": dict, "host": dict}, what)
    size = record["size_kib"]
    if size <= 0 or size > 16 * 1024 * 1024:
        raise UsageError(f"{what}: the journal's page size {size} KiB is not a huge page size; not touched")
    counts = []
    for key in ("previous", "added"):
        table = record[key]
        if len(table) > 1024 or not all(isinstance(c, str) and c.lstrip("-").isdigit() and isinstance(v, int)
                                        and not isinstance(v, bool) and 0 <= v < 1 << 40 for c, v in table.items()):
            raise UsageError(f"{what}: the journal's '{key}' is not a table of cells to page counts; not touched")
        counts.append({int(c): v for c, v in table.items()})
    previous, added = counts
    if not check_host(record["host"], connection, f"{what} of {size} KiB"):
        return  # reserved before the host rebooted: the pools are the boot's own now
    ways = list(backends(connection))
    if record.get("via") == "sysfs":
        ways = ways[1:] or ways
    for pools in ways:
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
                    f"is not supported there; set them back yourself ({counts_text(previous)})")
