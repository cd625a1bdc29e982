"""Apply and destroy a fleet: hosts in parallel (threads, one libvirt connection per guest),
the guests of one host (one libvirt URI) one after the other, each through the journalled path of ``vscen run``
(``vscen.run_guest``: a failing step rolls that guest back, and only that guest) and of
``vscen destroy`` (``vscen.destroy_guest``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vscen import VscenError
from vscen_fleet.placement import Plan, guest_disks, guest_settings


def apply_plan(plan: Plan, *, parallel: int = 4, output: Path | None = None, config: Path | None = None,
               wait: float = 60.0, progress=None) -> list[dict]:
    """Make every placed guest; one outcome per guest, in the plan's order: ``{"name", "host",
    "uri", "status": made|unchanged|failed, "steps", "error"}``."""
    fleet = plan.fleet
    by_uri: dict[str, list] = {}  # one libvirt daemon is never driven by two threads at once
    for p in plan.placements:
        if p.host is not None:
            by_uri.setdefault(fleet.host(p.host).uri, []).append(p)

    def one_host(uri: str) -> list[dict]:
        out = []
        for p in by_uri[uri]:
            host = fleet.host(p.host)
            row = {"name": p.name, "host": host.name, "uri": uri, "status": "failed", "steps": [], "error": None}
            try:
                done = _run(p, host, fleet, output, config, wait)
                row["steps"] = done["applied"]
                row["status"] = "made" if done["applied"] else "unchanged"
            except VscenError as exc:
                row["error"] = str(exc)
            except Exception as exc:  # a bug somewhere below: this guest fails, the others go on
                row["error"] = f"internal error: {type(exc).__name__}: {exc}"
            if progress:
                progress(row)
            out.append(row)
        return out

    return _by_order(plan.placements, _parallel(one_host, list(by_uri), parallel))


def _run(p, host, fleet, output, config, wait) -> dict:
    from vscen import run_guest

    group = p.group
    return run_guest(group.scenarios, features=group.add, remove=group.remove,
                     settings=guest_settings(group, p.name, host, fleet), disks=guest_disks(group, p.name),
                     uri=host.uri,
                     host_facts=host.facts, output=output, start=group.start, wait=wait, config=config)


def destroy_fleet(fleet, *, parallel: int = 4, output: Path | None = None, keep_storage: bool = False,
                  wait: float = 60.0, progress=None) -> list[dict]:
    """Remove every guest of *fleet* that vscen made (whatever host its journal names); one
    outcome per guest: ``{"name", "uri", "status": destroyed|absent|failed, "removed", "kept",
    "error"}``."""
    from vscen import UsageError, destroy_guest, guest_journal

    names = [n for g in fleet.groups for n in g.names]
    by_uri: dict[str, list[str]] = {}
    rows = []
    for name in names:
        try:
            uri = guest_journal(name, output).uri
        except UsageError:
            rows.append({"name": name, "uri": None, "status": "absent", "removed": 0, "kept": 0, "error": None})
            continue
        by_uri.setdefault(uri, []).append(name)

    def one_uri(uri: str) -> list[dict]:
        out = []
        for name in by_uri[uri]:
            row = {"name": name, "uri": uri, "status": "failed", "removed": 0, "kept": 0, "error": None}
            try:
                row["removed"], row["kept"], _ = destroy_guest(name, output=output, keep_storage=keep_storage, wait=wait)
                row["status"] = "destroyed"
            except VscenError as exc:
                row["error"] = str(exc)
            except Exception as exc:
                row["error"] = f"internal error: {type(exc).__name__}: {exc}"
            if progress:
                progress(row)
            out.append(row)
        return out

    rows += _parallel(one_uri, list(by_uri), parallel)
    order = {n: i for i, n in enumerate(names)}
    return sorted(rows, key=lambda r: order[r["name"]])


def _parallel(work, keys: list, parallel: int) -> list[dict]:
    if not keys:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(keys)))) as pool:
        return [row for rows in pool.map(work, keys) for row in rows]


def _by_order(placements, rows: list[dict]) -> list[dict]:
    order = {p.name: i for i, p in enumerate(placements)}
    return sorted(rows, key=lambda r: order[r["name"]])
