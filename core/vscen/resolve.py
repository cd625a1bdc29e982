"""Resolve the chosen scenarios and features: closure, rules, stable order.

The closure follows ``implies`` (and a scenario's ``features``); ``requires`` must be met by
the closure; ``conflicts`` must not meet it. Every problem is collected and reported at once.
The order is dependencies first (implied and required items before the item that names them),
ties broken by name, so the built XML never depends on plugin load order.
"""

from __future__ import annotations

import difflib
import heapq
from dataclasses import dataclass, field

from vscen.errors import RulesError, UsageError, raise_all
from vscen.model import Rules
from vscen.registry import Registry


@dataclass
class Resolution:
    """The features and scenarios chosen, implied and removed, and why each is there."""

    #: features and scenarios in the order they are applied
    items: list[Rules] = field(default_factory=list)
    #: name -> why it is there ("chosen", "implied by desktop", ...)
    why: dict[str, str] = field(default_factory=dict)
    #: names the user removed with ``--feature -NAME``
    removed: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.items]

    @property
    def scenarios(self) -> list[Rules]:
        return [i for i in self.items if i.kind == "scenario"]

    @property
    def features(self) -> list[Rules]:
        return [i for i in self.items if i.kind == "feature"]

    def has(self, name: str) -> bool:
        return name in self.why

    def validators(self) -> list[str]:
        """Validators named by the resolved items, in order, once each: host validators, and
        the domain validators that run only where an item naming them is chosen."""
        return list(dict.fromkeys(v for i in self.items for v in i.validators))

    def host_actions(self) -> list[str]:
        return list(dict.fromkeys(a for i in self.items for a in i.host_actions))

    def facts(self) -> list[str]:
        """Host facts (providers' names) the resolved items read, once each."""
        return list(dict.fromkeys(f for i in self.items for f in i.facts))


def suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def resolve(
    reg: Registry,
    scenarios: list[str],
    add: list[str] = (),
    remove: list[str] = (),
    arch: str | None = None,
) -> Resolution:
    """Resolve *scenarios* plus features *add* minus features *remove*, or raise."""
    items = reg.items()
    unknown = []
    for name in scenarios:
        if name not in reg.scenarios:
            what = "is a feature: use --feature +" + name if name in reg.features else ""
            unknown.append(f"unknown scenario '{name}'" + (f" ({what})" if what else suggest(name, reg.scenarios)))
    for name in list(add) + list(remove):
        if name not in reg.features:
            unknown.append(f"unknown feature '{name}'" + suggest(name, reg.features))
    raise_all(UsageError, "unknown names", unknown)

    res = Resolution(removed=list(remove))
    todo: list[str] = []
    for name in list(scenarios) + list(add):
        if name not in res.why:
            res.why[name] = "chosen"
            todo.append(name)
    while todo:
        item = items[todo.pop(0)]
        for ref in item.pulls():
            if ref not in res.why and ref not in remove:
                res.why[ref] = f"implied by {item.name}"
                todo.append(ref)

    problems: list[str] = []
    for name in remove:
        if name in add:
            problems.append(f"feature '{name}' is both added and removed")
    chosen = {n: items[n] for n in res.why}
    clashes: dict[frozenset, list[str]] = {}
    for item in chosen.values():
        for ref in item.requires:
            if ref not in chosen:
                how = "it was removed" if ref in remove else f"add it with --feature +{ref}"
                if ref in reg.scenarios and ref not in remove:
                    how = "it was not chosen"
                problems.append(f"{item.kind} '{item.name}' requires '{ref}' ({how})")
        for c in item.conflicts:
            if c.name in chosen:
                # a conflict declared on both sides is one problem, with both reasons
                pair = frozenset((item.name, c.name))
                why = f"{c.reason} (rule of plugin '{reg.plugin_of(item.name)}')"
                if pair not in clashes:
                    problems.append(pair)
                if not any(w.startswith(c.reason + " (") for w in clashes.get(pair, [])):
                    clashes.setdefault(pair, []).append(why)
        if arch and item.arches and arch not in item.arches:
            problems.append(
                f"{item.kind} '{item.name}' supports {', '.join(item.arches)}, not {arch}"
            )
    problems = [_conflict(res, chosen, p, clashes[p]) if isinstance(p, frozenset) else p for p in problems]
    raise_all(RulesError, "the chosen scenarios and features cannot be combined", problems)

    res.items = _order(chosen)
    res.why = {i.name: res.why[i.name] for i in res.items}
    return res


def _conflict(res: Resolution, chosen: dict, pair: frozenset, reasons: list[str]) -> str:
    a, b = sorted(pair)
    return (f"{chosen[a].kind} '{a}' conflicts with {chosen[b].kind} '{b}': {'; '.join(reasons)}; "
            f"{_path(res, a)}, {_path(res, b)}")


def _path(res: Resolution, name: str) -> str:
    why = res.why[name]
    return f"'{name}' {why}" if why != "chosen" else f"'{name}' chosen"


def _order(chosen: dict[str, Rules]) -> list[Rules]:
    """Topological order, dependencies first, ties by name (Kahn's algorithm with a heap)."""
    deps = {n: {d for d in i.pulls() + i.requires if d in chosen} for n, i in chosen.items()}
    users: dict[str, set[str]] = {n: set() for n in chosen}
    for n, ds in deps.items():
        for d in ds:
            users[d].add(n)
    ready = [n for n, ds in deps.items() if not ds]
    heapq.heapify(ready)
    out: list[Rules] = []
    while ready:
        n = heapq.heappop(ready)
        out.append(chosen[n])
        for u in sorted(users[n]):
            deps[u].discard(n)
            if not deps[u]:
                heapq.heappush(ready, u)
    if len(out) != len(chosen):  # a requires-cycle: keep the rest in name order
        out += [chosen[n] for n in sorted(set(chosen) - {i.name for i in out})]
    return out
