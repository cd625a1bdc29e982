"""What the fleet commands print: the plan as data and as text, the refusals, the outcomes."""

from __future__ import annotations

from vscen import HostError
from vscen_fleet.placement import ROOM, Plan, _gib


def plan_data(plan: Plan) -> dict:
    fleet = plan.fleet
    return {
        "fleet": str(fleet.path),
        "placement": {"strategy": fleet.strategy, "memory_ratio": fleet.memory_ratio, "vcpu_ratio": fleet.vcpu_ratio},
        "hosts": [{"name": s.host.name, "uri": s.host.uri, "facts": [str(f) for f in s.host.facts],
                   "error": s.error or None, "memory_kib": s.memory_kib, "memory_from": s.memory_from or None,
                   "cpus": s.cpus, "free_hugepages": {str(k): v for k, v in sorted(s.pages.items())},
                   "used_memory_kib": s.used_memory, "used_vcpus": s.used_vcpus,
                   "used_hugepages": {str(k): v for k, v in sorted(s.used_pages.items())},
                   "guests": list(s.guests)} for s in plan.hosts],
        "guests": [{"name": p.name, "group": p.group.index, "scenarios": list(p.group.scenarios),
                    "host": p.host, "uri": plan.fleet.host(p.host).uri if p.host else None,
                    "state": p.state, "why": p.why,
                    "memory_kib": p.need.memory_kib if p.need else None,
                    "vcpus": p.need.vcpus if p.need else None,
                    "hugepages": {"size_kib": p.need.hugepages[0], "pages": p.need.hugepages[1]}
                    if p.need and p.need.hugepages else None,
                    "refused_by": dict(p.reasons)} for p in plan.placements],
        "refused": [p.name for p in plan.refused],
    }


def _cost(p) -> str:
    if p.need is None:
        return "-"
    text = f"{_gib(p.need.memory_kib)}, {p.need.vcpus} vCPU{'s' if p.need.vcpus != 1 else ''}"
    if p.need.hugepages:
        text += f", {p.need.hugepages[1]} huge pages of {_gib(p.need.hugepages[0])}"
    return text


def plan_text(plan: Plan) -> str:
    fleet = plan.fleet
    placed = [p for p in plan.placements if p.host]
    lines = [f"fleet {fleet.path}: {len(plan.placements)} guests on {len(plan.hosts)} hosts "
             f"({fleet.strategy}; memory x{fleet.memory_ratio:g}, vCPUs x{fleet.vcpu_ratio:g})"]
    width = max([len(p.name) for p in placed] + [5])
    hwidth = max([len(p.host) for p in placed] + [4])
    for p in placed:
        lines.append(f"  {p.name:<{width}}  -> {p.host:<{hwidth}}  {p.state:<6}  {_cost(p)}; {p.why}")
    lines.append("hosts:")
    for s in plan.hosts:
        if s.error:
            lines.append(f"  {s.host.name} ({s.host.uri}): {s.error}")
            continue
        mem = (f"memory {_gib(s.used_memory)} of {_gib(s.memory_kib * fleet.memory_ratio)}"
               f" ({s.memory_from})" if s.memory_kib is not None else "memory unknown")
        cpus = f"vCPUs {s.used_vcpus} of {s.cpus * fleet.vcpu_ratio:g}" if s.cpus else "CPUs unknown"
        pages = "".join(f", huge pages of {_gib(k)}: {s.used_pages.get(k, 0)} of {v}"
                        for k, v in sorted(s.pages.items()) if v or s.used_pages.get(k))
        lines.append(f"  {s.host.name} ({s.host.uri}): {len(s.guests)} guest{'' if len(s.guests) == 1 else 's'}; {mem}; {cpus}{pages}")
    for names, p in _refusal_runs(plan):
        lines.append(refusal_text(names, p))
    return "\n".join(lines)


def _refusal_runs(plan: Plan):
    """Refused guests, those of one group refused for the same reasons together."""
    runs: list[tuple[list[str], object]] = []
    for p in plan.refused:
        last = runs[-1][1] if runs else None
        if last is not None and last.group is p.group and last.reasons == p.reasons and last.why == p.why:
            runs[-1][0].append(p.name)
        else:
            runs.append(([p.name], p))
    return runs


def refusal_text(names: list[str], p) -> str:
    who = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]} ({len(names)} guests)"
    what = f"{'+'.join(p.group.scenarios)}" + (f", {_cost(p)}" if p.need else "")
    if not p.reasons:
        return f"refused: {who} ({what}): {p.why}"
    them, their = ("it", "its") if len(names) == 1 else ("them", "their")
    failing = [h for h, why in p.reasons.items() if not why.startswith(ROOM)]
    short = [h for h in p.reasons if h not in failing]
    parts = []
    if short:
        one = len(short) == 1
        parts.append(f"{', '.join(short)} pass{'es' if one else ''} {their} checks but lack{'s' if one else ''} room")
    if failing:
        parts.append(f"{', '.join(failing)} cannot have {them}")
    head = f"refused: {who} ({what}): no host can take {them} ({'; '.join(parts)}):"
    return "\n".join([head] + [f"    {host}: {why}" for host, why in p.reasons.items()])


def refuse(plan: Plan, doing: str = "", show: bool = False) -> None:
    """A HostError (exit 4) when the plan refuses guests, naming them; *show*: the reasons
    first on stderr (they are in the plan's output otherwise)."""
    runs = _refusal_runs(plan)
    if not runs:
        return
    if show:
        import typer

        for names, p in runs:
            typer.echo(refusal_text(names, p), err=True)
    n = len(plan.refused)
    who = ", ".join(names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}" for names, _ in runs)
    raise HostError(f"{n} guest{'s' if n > 1 else ''} cannot be placed ({who})" + (f"; {doing}" if doing else "")
                    + (": see why above" if show else ": see 'refused' in the plan"))


def apply_text(rows: list[dict]) -> str:
    lines = []
    by_host: dict[str, list[dict]] = {}
    for r in rows:
        by_host.setdefault(r["host"], []).append(r)
    for host, rs in by_host.items():
        counts = {s: sum(r["status"] == s for r in rs) for s in ("made", "unchanged", "failed")}
        lines.append(f"{host} ({rs[0]['uri']}): " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
        for r in rs:
            detail = (f"{len(r['steps'])} steps" if r["status"] == "made" else
                      "exists as asked" if r["status"] == "unchanged" else f"rolled back: {r['error']}")
            lines.append(f"  {r['name']}: {r['status']} ({detail})")
    made = sum(r["status"] == "made" for r in rows)
    lines.append(f"fleet: {made} made, {sum(r['status'] == 'unchanged' for r in rows)} unchanged, "
                 f"{sum(r['status'] == 'failed' for r in rows)} failed" if rows else "fleet: no guests")
    return "\n".join(lines)


def destroy_text(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        if r["status"] == "absent":
            lines.append(f"{r['name']}: not made here (nothing to remove)")
        elif r["status"] == "destroyed":
            lines.append(f"{r['name']} on {r['uri']}: removed {r['removed']} things vscen made"
                         + (f", kept {r['kept']} (storage)" if r["kept"] else ""))
        else:
            lines.append(f"{r['name']} on {r['uri']}: FAILED: {r['error']}")
    lines.append(f"fleet: {sum(r['status'] == 'destroyed' for r in rows)} destroyed, "
                 f"{sum(r['status'] == 'absent' for r in rows)} not made, {sum(r['status'] == 'failed' for r in rows)} failed")
    return "\n".join(lines)
