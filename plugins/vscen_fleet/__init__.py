"""Fleets: many guests on many hosts from one file (``vscen fleet plan|apply|destroy``).

A fleet file (TOML) lists the hosts a fleet may use (named hosts of vscen's config, or a
``uri`` with optional recorded ``facts`` and capacity) and the guests it wants: a name pattern
and a count (``name = "vault-{n:02}"``, ``count = 4``), scenarios, features, settings, which
hosts they may use, and whether they form a migration pool. ``vscen fleet plan`` says where
each guest goes and why, or why no host can take it, and changes nothing; ``vscen fleet
apply`` makes the guests, hosts in parallel, each guest through the journalled path of
``vscen run`` (a failure rolls back that guest only); ``vscen fleet destroy`` removes what the
fleet made, as ``vscen destroy`` does. See docs/fleet.md.

Placement reads each host's facts once and renders each group of guests once per host, with
the resolver and the validators against that host's facts: a guest goes only where its checks
pass (SEV guests where SEV is offered, huge pages where they are free, a CPU every host of a
migration pool runs), packed by memory and vCPUs without going beyond ``[placement]
memory_ratio`` and ``vcpu_ratio``. The plan is deterministic, and idempotent: guests vscen made
already stay where they are, and applying again changes nothing.

Host fact ``fleet.memory``: a live host's total, free and available memory (libvirt's node
memory statistics), what placement packs against; recorded hosts without it count their NUMA
memory less the huge pages.
"""

from __future__ import annotations

from vscen import Command, FactProvider, hookimpl

#: the fact's name (placement reads it); the placement module itself only when a fleet is planned
MEMORY_FACT = "fleet.memory"


def read_memory(probe):
    """Total, free and available (free + buffers + page cache) memory of a live host, KiB."""
    connection = probe.connection
    if probe.conn is None or connection.is_test:  # recorded, or the test driver's made-up figures
        return None
    conn = probe.conn
    try:
        stats = conn.getMemoryStats(-1)  # VIR_NODE_MEMORY_STATS_ALL_CELLS
        total, free = int(stats["total"]), int(stats["free"])
        available = free + int(stats.get("buffers", 0)) + int(stats.get("cached", 0))
    except Exception:  # a driver without node memory statistics: libvirt's free memory
        total = int(conn.getInfo()[1]) * 1024
        free = available = int(conn.getFreeMemory()) // 1024
    return {"total_kib": total, "free_kib": free, "available_kib": available}


def show_memory(value, host, support):
    from vscen_fleet.placement import _gib

    if not value:
        return [("memory", "free memory unknown (read only from a live host's libvirt)")]
    return [("memory", f"{_gib(value['total_kib'])} total, {_gib(value['free_kib'])} free, "
                       f"{_gib(value['available_kib'])} available")]


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_commands(register):
    register(Command(name="fleet", summary="Many guests on many hosts from a fleet file: plan, apply, destroy.",
                     app="vscen_fleet.cli:app"))


@hookimpl
def vscen_register_facts(register):
    register(FactProvider(
        name=MEMORY_FACT, read=read_memory, show=show_memory,
        summary="a live host's total, free and available memory (libvirt's node memory statistics), "
                "for placing guests",
        example={"total_kib": 24683792, "free_kib": 22665480, "available_kib": 24029780}))
