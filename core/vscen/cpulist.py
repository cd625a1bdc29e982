"""The kernel's and libvirt's CPU list syntax (``2-7,10``), public as ``vscen.parse_cpulist`` and
``vscen.format_cpulist``: a module of its own, as light as they are (the CPU features import it
for every guest; the host's local facts, which also read CPU lists, only where read)."""

from __future__ import annotations

#: the highest CPU number a list may hold (the kernel's NR_CPUS is at most 8192 today): a list
#: read from a file is bounded, so '0-9999999999' is refused rather than filling the memory
MAX_CPU = 65535


def parse_cpulist(text: str | None) -> tuple[int, ...]:
    """The kernel's CPU list syntax: ``2-7,10`` -> (2, 3, 4, 5, 6, 7, 10); ``""`` and
    ``(null)`` (nohz_full with none) -> (). A CPU above :data:`MAX_CPU` or a range running
    backwards is a ValueError; parts that are not numbers are passed over."""
    cpus: set[int] = set()
    for part in (text or "").replace("(null)", "").split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            continue
        if not 0 <= lo <= hi <= MAX_CPU:
            raise ValueError(f"CPU list '{part}' is not a range of CPUs from 0 to {MAX_CPU}")
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def format_cpulist(cpus) -> str:
    """(2, 3, 4, 7) -> ``2-4,7``: the syntax the kernel and libvirt use."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)
