"""docs/rules-matrix.md is generated (vscen.docs.rules_matrix) from the registered plugins: it
must match what they give now, so the document cannot drift from the rules."""

from __future__ import annotations

import subprocess
import sys
from itertools import combinations

from conftest import ROOT

from vscen import Conflict, Feature, Scenario, hookimpl
from vscen.docs import REGENERATE, rules_matrix, scenario_pairs
from vscen.pipeline import Request, load

MATRIX = ROOT / "docs" / "rules-matrix.md"


def installed():
    _, reg = load(Request(scenarios=[]))
    return reg


def test_the_rules_matrix_is_up_to_date():
    expected = rules_matrix(installed())
    assert MATRIX.exists(), f"no {MATRIX}: generate it with `.venv/bin/{REGENERATE}`"
    assert MATRIX.read_text() == expected, (
        f"{MATRIX.relative_to(ROOT)} no longer matches the plugins' rules: regenerate it with "
        f"`.venv/bin/{REGENERATE}` (from {ROOT}) and review the diff")


def test_the_cli_prints_the_same_matrix():
    proc = subprocess.run([sys.executable, "-m", "vscen.cli", "rules", "--markdown"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == rules_matrix(installed())


def test_every_scenario_pair_and_every_feature_is_in_it():
    reg = installed()
    text = rules_matrix(reg)
    for a, b in combinations(sorted(reg.scenarios), 2):
        assert (f"- `{a}` + `{b}`: composes" in text) != (f"- `{a}` + `{b}`: refused" in text), (a, b)
    for name in reg.features:
        assert f"\n| `{name}` | {reg.plugin_of(name)} |" in text, name


class Inline:
    """Two scenarios refused for a rule and a clashing default, two that compose."""

    @hookimpl
    def vscen_register_features(self, register):
        register(Feature(name="fast", summary="s", details="d"))
        register(Feature(name="safe", summary="s", details="d",
                         conflicts=(Conflict("fast", "safe and | fast do not mix"),)))

    @hookimpl
    def vscen_register_scenarios(self, register):
        register(Scenario(name="racer", summary="s", details="d", features=("fast",), defaults={"vcpu": 8}))
        register(Scenario(name="vault", summary="s", details="d", features=("safe",), defaults={"vcpu": 2}))
        register(Scenario(name="plain", summary="s", details="d", defaults={"vcpu": 2}))


def test_a_refused_pair_shows_every_reason_rules_and_settings():
    _, reg = load(Request(scenarios=[], plugins=(("inline", Inline()),), entry_points=False))
    pairs = {tuple(p["scenarios"]): p for p in scenario_pairs(reg)}
    assert pairs["plain", "vault"] == {"scenarios": ["plain", "vault"], "composes": True, "problems": []}
    refused = pairs["racer", "vault"]
    assert not refused["composes"]
    assert [p.split(":")[0] for p in refused["problems"]] == ["feature 'fast' conflicts with feature 'safe'", "vcpu"]
    # racer + plain: no rule against it, but the two want different vCPU counts
    assert pairs["plain", "racer"]["problems"] == [
        "vcpu: scenario 'plain' wants '2' and scenario 'racer' wants '8'; set it yourself to decide (--vcpu VALUE)"]

    text = rules_matrix(reg)
    assert "| `plain` | - | refused | composes |" in text
    assert "- `racer` + `vault`: refused\n  - feature 'fast' conflicts with feature 'safe': safe and | fast" in text
    # a conflict shows on both items' rows, the '|' escaped inside the table
    assert "| `fast` | inline | misc | - | - | `safe` (its rule): safe and \\| fast do not mix |" in text
    assert "| `safe` | inline | misc | - | - | `fast`: safe and \\| fast do not mix |" in text
