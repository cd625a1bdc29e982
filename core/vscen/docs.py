"""Generated documentation: the rules matrix (``docs/rules-matrix.md``).

``vscen rules`` and the matrix share :func:`scenario_pairs`, so the document says exactly what
``vscen run A B`` would: the rules' problems (conflicts, missing requirements) and the
scenarios' clashing default settings, all at once. The matrix is regenerated with
``vscen rules --markdown > docs/rules-matrix.md``; ``tests/test_rules_matrix.py`` fails when
the file differs from what the registered plugins give.
"""

from __future__ import annotations

from itertools import combinations

REGENERATE = "vscen rules --markdown > docs/rules-matrix.md"


def scenario_pairs(reg) -> list[dict]:
    """Every pair of registered scenarios: {"scenarios": [a, b], "composes", "problems"}, the
    problems being the rules' and the clashing defaults, as ``vscen run a b`` reports them."""
    from vscen.errors import VscenError
    from vscen.resolve import resolve
    from vscen.settings import build_settings

    pairs = []
    for a, b in combinations(sorted(reg.scenarios), 2):
        try:
            chosen = resolve(reg, [a, b]).scenarios
            problems: list[str] = []
        except VscenError as exc:
            chosen = [reg.scenarios[a], reg.scenarios[b]]
            problems = exc.problems or [str(exc)]
        try:
            _, clashes = build_settings([(s.name, dict(s.defaults)) for s in chosen], [("default", {"name": "x"})])
        except VscenError as exc:
            clashes = [str(exc)]
        problems += clashes
        pairs.append({"scenarios": [a, b], "composes": not problems, "problems": problems})
    return pairs


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _names(names) -> str:
    return ", ".join(f"`{n}`" for n in names) or "-"


def _conflicts(reg, name: str) -> str:
    """The conflicts of *name*: its own rules', then those other items declare against it."""
    own = [f"`{c.name}`: {_cell(c.reason)}" for c in reg.item(name).conflicts]
    theirs = [f"`{other}` (its rule): {_cell(c.reason)}"
              for other, item in sorted(reg.items().items()) for c in item.conflicts if c.name == name]
    return "; ".join(own + theirs) or "-"


def rules_matrix(reg) -> str:
    """The rules matrix as Markdown: the scenario pairs (a grid, then the reasons of each
    refused pair), then every scenario's and every feature's rules."""
    scenarios = sorted(reg.scenarios)
    pairs = scenario_pairs(reg)
    verdict = {}
    for p in pairs:
        a, b = p["scenarios"]
        verdict[a, b] = verdict[b, a] = "composes" if p["composes"] else "refused"
    out = [
        "# Rules matrix",
        "",
        f"Generated from the registered plugins by `{REGENERATE}`; do not edit it by hand.",
        "`tests/test_rules_matrix.py` fails when it no longer matches the plugins.",
        "",
        "## Scenario pairs",
        "",
        "Whether `vscen run A B` composes the two scenarios, and why not where it refuses: the",
        "rules' problems and the default settings the two scenarios disagree on (which the user",
        "can settle by setting the value), all at once, as `vscen run` reports them.",
        "",
        "| | " + " | ".join(f"`{s}`" for s in scenarios) + " |",
        "|---|" + "---|" * len(scenarios),
    ]
    for a in scenarios:
        out.append(f"| `{a}` | " + " | ".join("-" if a == b else verdict[a, b] for b in scenarios) + " |")
    out.append("")
    for p in pairs:
        a, b = p["scenarios"]
        if p["composes"]:
            out.append(f"- `{a}` + `{b}`: composes")
            continue
        out.append(f"- `{a}` + `{b}`: refused")
        out += [f"  - {problem}" for problem in p["problems"]]
    out += ["", "## Scenarios", "",
            "Each conflict shows on both items' rows; \"(its rule)\" marks one the other item declares.",
            "",
            "| scenario | plugin | features | implies | requires | conflicts | checks | host actions |",
            "|---|---|---|---|---|---|---|---|"]
    for name in scenarios:
        s = reg.scenarios[name]
        out.append(f"| `{name}` | {reg.plugin_of(name, 'scenarios')} | {_names(s.features)} | {_names(s.implies)} | "
                   f"{_names(s.requires)} | {_conflicts(reg, name)} | {_names(s.validators)} | {_names(s.host_actions)} |")
    out += ["", "## Features", "",
            "| feature | plugin | category | implies | requires | conflicts | arches | checks | host actions |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in sorted(reg.features):
        f = reg.features[name]
        out.append(f"| `{name}` | {reg.plugin_of(name)} | {_cell(f.category)} | {_names(f.implies)} | "
                   f"{_names(f.requires)} | {_conflicts(reg, name)} | {', '.join(f.arches) or 'any'} | "
                   f"{_names(f.validators)} | {_names(f.host_actions)} |")
    return "\n".join(out) + "\n"
