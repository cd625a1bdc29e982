"""Placement: which host each guest of a fleet goes to, and why; or why none can take it.

Each host's facts are read once (``vscen.read_host``: recorded, or live, hosts in parallel).
Each group of guests is rendered once per host it may use (``vscen.render_guest``: the
resolver, the host validators, libvirt's schema and the domain validators, against that host's
facts), which says whether the host can have such a guest at all and what one costs: memory,
vCPUs and huge pages, read from the domain XML. Then the guests are placed one by one, in the
fleet file's order, by arithmetic: the guests vscen made already stay where they are; a new one
goes to a host that passed its checks and still has the memory (times ``memory_ratio``), the
vCPUs (times ``vcpu_ratio``) and the free huge pages it needs, the one with the most memory
left (``spread``) or the least that fits (``pack``), ties by the fleet file's host order. Same
input, same plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vscen import PluginError, UsageError, VscenError
from vscen_fleet import MEMORY_FACT
from vscen_fleet.spec import PEERS_SETTING, Fleet, Group, Host

#: how a refusal for want of room begins (the others are the host's checks failing)
ROOM = "no room: "
_UNITS = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000**2, "m": 1024**2,
          "mib": 1024**2, "gb": 1000**3, "g": 1024**3, "gib": 1024**3, "tb": 1000**4, "t": 1024**4,
          "tib": 1024**4}


@dataclass
class HostState:
    """A host while guests are placed: its facts and what is left of it."""

    host: Host
    facts: Any = None
    #: why the host's facts cannot be had ('' where they are)
    error: str = ""
    memory_kib: int | None = None
    memory_from: str = ""
    cpus: int | None = None
    #: free huge pages by size (KiB)
    pages: dict[int, int] = field(default_factory=dict)
    used_memory: int = 0
    used_vcpus: int = 0
    used_pages: dict[int, int] = field(default_factory=dict)
    guests: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Need:
    """What one guest of a group costs on a host, from its domain XML."""

    memory_kib: int
    vcpus: int
    #: (page size KiB, pages) where it is backed by huge pages
    hugepages: tuple[int, int] | None = None


@dataclass
class Placement:
    """Where one guest goes, or why it goes nowhere."""

    name: str
    group: Group
    host: str | None = None
    state: str = "new"  # new, exists, refused
    why: str = ""
    need: Need | None = None
    #: host name -> why it cannot take the guest (refused guests)
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """A fleet's placements over its hosts."""

    fleet: Fleet
    hosts: list[HostState]
    placements: list[Placement]

    @property
    def refused(self) -> list[Placement]:
        return [p for p in self.placements if p.state == "refused"]

    def state(self, name: str) -> HostState:
        return next(s for s in self.hosts if s.host.name == name)


def read_hosts(fleet: Fleet, config: Path | None = None) -> list[HostState]:
    """Every host's facts, once: recorded ones read here, live ones in parallel threads."""
    from concurrent.futures import ThreadPoolExecutor

    states = [HostState(h) for h in fleet.hosts]
    live = [s for s in states if not s.host.facts]
    for s in states:
        if s.host.facts:
            _read(s, config)
    if live:
        with ThreadPoolExecutor(max_workers=min(8, len(live))) as pool:
            list(pool.map(lambda s: _read(s, config), live))
    return states


def _read(state: HostState, config) -> None:
    from vscen import read_host

    host = state.host
    try:
        facts = read_host(host.uri, host.facts, config=config)
    except UsageError as exc:
        raise UsageError(f"hosts.{host.name}: {exc}") from None
    except VscenError as exc:  # unreachable: a refusal for every guest, said once per host
        state.error = f"its facts cannot be read: {exc}"
        return
    state.facts = facts
    state.memory_kib, state.memory_from = _memory(host, facts)
    state.cpus = host.cpus or (facts.cpus if facts.has_caps else None)
    for cell in facts.cells:
        for size in cell.pages:
            if size > 4:
                state.pages[size] = state.pages.get(size, 0) + cell.free(size)


def _memory(host: Host, facts) -> tuple[int | None, str]:
    """The memory guests may take, before the ratio, and where that figure comes from."""
    if host.memory_kib:
        return host.memory_kib, "the fleet file"
    live = facts.fact(MEMORY_FACT)
    if isinstance(live, dict) and isinstance(live.get("available_kib"), int):
        return live["available_kib"], "available memory"
    if facts.has_caps and facts.cells:
        reserved = sum(size * count for c in facts.cells for size, count in c.pages.items() if size > 4)
        return max(sum(c.memory_kib for c in facts.cells) - reserved, 0), "NUMA memory less huge pages"
    return None, ""


def make_plan(fleet: Fleet, *, output: Path | None = None, config: Path | None = None,
              states: list[HostState] | None = None) -> Plan:
    """The placement of every guest of *fleet*; *states*: the hosts read already."""
    from vscen import output_dir

    output = output_dir(output, config)  # once: each guest's journal is looked for there
    try:  # the guests with a directory there: the others were not made (no journal to read)
        made = {p.name for p in output.iterdir()}
    except OSError:
        made = set()
    states = states if states is not None else read_hosts(fleet, config)
    by_name = {s.host.name: s for s in states}
    renders: dict[tuple[int, str], Need | str] = {}
    placements = []
    for group in fleet.groups:
        hosts = [by_name[n] for n in (group.hosts or [h.name for h in fleet.hosts])]
        for name in group.names:
            placements.append(Placement(name, group))
        # the guests vscen made already stay where they are, and count first
        for p in placements[-len(group.names):]:
            if p.name in made:
                _pin(p, hosts, renders, fleet, config, output)
    for p in placements:
        if p.state == "new":
            hosts = [by_name[n] for n in (p.group.hosts or [h.name for h in fleet.hosts])]
            _place(p, hosts, renders, fleet, config)
    return Plan(fleet, states, placements)


def _pin(p: Placement, hosts, renders, fleet, config, output) -> None:
    from vscen import guest_journal

    try:
        journal = guest_journal(p.name, output)
    except UsageError:
        return  # not made: placed below
    state = next((s for s in hosts if s.host.uri == journal.uri), None)
    if state is None:
        p.state = "refused"
        p.why = (f"vscen made it on {journal.uri} (journal {journal.path}), which is not one of its hosts "
                 f"({', '.join(s.host.name for s in hosts)}); vscen destroy {p.name} first, or give that host")
        return
    p.state, p.host = "exists", state.host.name
    need = _need(p.group, state, renders, fleet, config)
    if isinstance(need, Need):
        p.need = need
        _take(state, p)
        p.why = "vscen made it there already: it stays"
    else:
        p.why = f"vscen made it there already: it stays, though it would no longer pass there: {need}"
        state.guests.append(p.name)


def _place(p: Placement, hosts: list[HostState], renders, fleet: Fleet, config) -> None:
    fits = []
    for state in hosts:
        need = _need(p.group, state, renders, fleet, config)
        if not isinstance(need, Need):
            p.reasons[state.host.name] = need
            continue
        short = _short(state, need, fleet)
        if short:
            p.reasons[state.host.name] = ROOM + short
            continue
        fits.append((_left(state, need, fleet), state))
    if not fits:
        p.state = "refused"
        p.need = next((renders[(p.group.index, s.host.name)] for s in hosts
                       if isinstance(renders.get((p.group.index, s.host.name)), Need)), None)
        p.why = "no host can take it"
        return
    if fleet.strategy == "spread":
        left, state = max(fits, key=lambda f: f[0])  # max keeps the first of equals: host order
    else:
        left, state = min(fits, key=lambda f: f[0])
    p.host, p.need = state.host.name, renders[(p.group.index, state.host.name)]
    _take(state, p)
    others = len(fits) - 1
    p.why = (f"{fleet.strategy}: {_gib(left)} left there after it"
             + (f" ({others} other host{'s' if others > 1 else ''} could take it)" if others else ""))


def _left(state: HostState, need: Need, fleet: Fleet) -> float:
    """The memory *state*'s host has left once it takes a guest costing *need*: of its huge
    pages of the guest's size for a guest backed by them, else of its memory."""
    if need.hugepages:
        size, count = need.hugepages
        return (state.pages.get(size, 0) - state.used_pages.get(size, 0) - count) * size
    return state.memory_kib * fleet.memory_ratio - state.used_memory - need.memory_kib


def _take(state: HostState, p: Placement) -> None:
    state.used_vcpus += p.need.vcpus
    if p.need.hugepages:  # its memory is those pages, not the host's other memory
        size, count = p.need.hugepages
        state.used_pages[size] = state.used_pages.get(size, 0) + count
    else:
        state.used_memory += p.need.memory_kib
    state.guests.append(p.name)


def _short(state: HostState, need: Need, fleet: Fleet) -> str:
    """What *state*'s host lacks for one more guest costing *need* ('' where it fits)."""
    if state.memory_kib is None:
        return "its memory is unknown (no capabilities recorded): give memory = \"SIZE\" for it in the fleet file"
    if state.cpus is None:
        return "its CPUs are unknown (no capabilities recorded): give cpus = N for it in the fleet file"
    problems = []
    if need.hugepages:
        size, count = need.hugepages
        free = state.pages.get(size, 0) - state.used_pages.get(size, 0)
        if free < count:
            problems.append(f"{free} free huge pages of {_gib(size)} left, it needs {count}")
    else:
        free = state.memory_kib * fleet.memory_ratio - state.used_memory
        if free < need.memory_kib:
            problems.append(f"{_gib(max(free, 0))} of memory left (x{fleet.memory_ratio:g} of "
                            f"{_gib(state.memory_kib)}, {state.memory_from}), it needs {_gib(need.memory_kib)}")
    vcpus = state.cpus * fleet.vcpu_ratio - state.used_vcpus
    if vcpus < need.vcpus:
        problems.append(f"{math.floor(max(vcpus, 0))} vCPUs left (x{fleet.vcpu_ratio:g} of {state.cpus} CPUs), "
                        f"it needs {need.vcpus}")
    return "; ".join(problems)


def _need(group: Group, state: HostState, renders: dict, fleet: Fleet, config) -> Need | str:
    """What a guest of *group* costs on *state*'s host, or why the host cannot have one: the
    group rendered for that host's facts, once."""
    key = (group.index, state.host.name)
    if key not in renders:
        renders[key] = _render(group, state, fleet, config)
    return renders[key]


def guest_settings(group: Group, name: str, host: Host, fleet: Fleet) -> dict:
    """The settings of guest *name* of *group* placed on *host*: the group's, its name, and for
    a migration pool every other host of the group as a peer."""
    settings = dict(group.settings)
    settings["name"] = name
    if group.migration_pool:
        pool = [fleet.host(n) for n in (group.hosts or [h.name for h in fleet.hosts])]
        settings[PEERS_SETTING] = [",".join(str(f) for f in h.facts) if h.facts else h.uri
                                   for h in pool if h.name != host.name]
    return settings


def guest_disks(group: Group, name: str) -> list[str] | None:
    """The group's disks for guest *name* ("{name}" replaced), or None: the scenarios'."""
    return None if group.disks is None else [d.replace("{name}", name) for d in group.disks]


def _render(group: Group, state: HostState, fleet: Fleet, config) -> Need | str:
    from vscen import render_guest

    if state.facts is None:
        return state.error
    settings = guest_settings(group, group.names[0], state.host, fleet)
    try:
        result = render_guest(group.scenarios, features=group.add, remove=group.remove, settings=settings,
                              disks=guest_disks(group, group.names[0]), host=state.facts, uri=state.host.uri,
                              config=config)
    except (UsageError, PluginError) as exc:  # the fleet file's mistake, or a plugin's: not the host's
        raise type(exc)(f"{group.label}: {exc}") from None
    except VscenError as exc:  # the rules, the host's checks, the schema: why this host cannot have it
        return str(exc)
    if result.prepare_only:  # the host must be prepared (and rebooted) first: no guest to place
        return (f"the host must first be prepared by {', '.join(result.prepare_only)} and rebooted "
                "(vscen run ... --prepare-host there)")
    return need_of(result.xml, state.facts)


def need_of(xml: str, facts) -> Need:
    """Memory, vCPUs and huge pages of a domain XML."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    mem = root.find("memory")
    memory = int(mem.text) * _UNITS.get((mem.get("unit") or "KiB").lower(), 1024) // 1024
    vcpus = int(root.findtext("vcpu") or 1)
    hp = root.find("memoryBacking/hugepages")
    pages = None
    if hp is not None:
        page = hp.find("page")
        if page is not None:
            size = int(page.get("size")) * _UNITS.get((page.get("unit") or "KiB").lower(), 1024) // 1024
        else:
            size = min((s for s in facts.page_sizes if s > 4), default=2048)
        pages = (size, -(-memory // size))
    return Need(memory, vcpus, pages)


def _gib(kib: float) -> str:
    if not kib:
        return "0 GiB"
    for unit, scale in (("TiB", 1 << 30), ("GiB", 1 << 20), ("MiB", 1 << 10)):
        if kib >= scale:
            value = kib / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{kib:.0f} KiB"
