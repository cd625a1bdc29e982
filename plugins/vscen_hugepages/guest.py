"""What the guest needs: huge pages of its backing's page size, for its memory, on the NUMA
cells that memory is bound to, read from the finished domain and counted against the host facts."""

from __future__ import annotations

from dataclasses import dataclass

from vscen import UsageError

#: the page size vm.nr_hugepages reserves, where the host does not say (x86)
DEFAULT_HUGE_KIB = 2048
_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024,
          "mib": 1024, "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2, "gb": 1000**3 / 1024,
          "t": 1024**3, "tib": 1024**3, "tb": 1000**4 / 1024}


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


def echo_command(n: Need, count: int) -> str:
    """The shell command that reserves *count* more pages (for notes)."""
    if not n.cells:
        return f"echo {n.total + count} > /sys/kernel/mm/hugepages/hugepages-{n.size}kB/nr_hugepages"
    return (f"echo N > /sys/devices/system/node/node{n.cells[0]}/hugepages/hugepages-{n.size}kB/"
            f"nr_hugepages with N = its current count + {count}")


def human(size: int) -> str:
    return f"{size // 1024} MiB" if size % 1024 == 0 else f"{size} KiB"


def size_text(size: int) -> str:
    return f"{size // 1024**2}G" if size % 1024**2 == 0 else f"{size // 1024}M" if size % 1024 == 0 else f"{size}K"
