"""Resolution: closure, why, order, requires, conflicts, removal, unknown names, arch."""

from __future__ import annotations

import pytest
from coresupport import Plug, load

from vscen import Conflict, Feature, Scenario
from vscen.errors import RulesError, UsageError
from vscen.resolve import resolve


def feat(name, **kw):
    return Feature(name=name, summary=f"feature {name}", **kw)


def scen(name, features=(), **kw):
    return Scenario(name=name, summary=f"scenario {name}", features=tuple(features), **kw)


def registry(*plugins):
    pm, reg = load(*plugins)
    assert all(i.status == "loaded" for i in pm.infos.values()), [i.reason for i in pm.infos.values()]
    return reg


@pytest.fixture
def reg():
    base = Plug(
        features=[
            feat("zeta", implies=("alpha",)),  # dependency order beats name order
            feat("alpha", implies=("mu",), validators=("v1",)),
            feat("mu", validators=("v1", "v2")),
            feat("beta"),
            feat("gamma", requires=("beta",)),
            feat("x86-only", arches=("x86_64",)),
            feat("cpu-fast", conflicts=(Conflict("cpu-mobile", "a guest cannot both pin and migrate"),)),
            feat("cpu-mobile"),
            feat("needs-s", requires=("server",)),
            feat("aa-needs", requires=("zz-base",)),
            feat("zz-base"),
        ],
        scenarios=[
            scen("server", ["zeta", "beta"]),
            scen("laptop", ["cpu-mobile"]),
            scen("secure-vm", ["cpu-fast"]),
        ],
    )
    from vscen import Validator

    checks = Plug(validators=[Validator(name=n, summary=n, check=lambda ctx: []) for n in ("v1", "v2")])
    return registry(("base", base), ("checks", checks))


def test_closure_follows_scenario_features_and_implies_and_says_why(reg):
    res = resolve(reg, ["server"])
    assert set(res.names) == {"server", "zeta", "alpha", "mu", "beta"}
    assert res.why == {"alpha": "implied by zeta", "beta": "implied by server", "mu": "implied by alpha",
                       "zeta": "implied by server", "server": "chosen"}
    assert [s.name for s in res.scenarios] == ["server"]
    assert res.has("mu") and not res.has("gamma")


def test_added_features_are_chosen_and_pull_their_implications(reg):
    res = resolve(reg, [], add=["zeta"])
    assert res.why == {"mu": "implied by alpha", "alpha": "implied by zeta", "zeta": "chosen"}


def test_order_is_dependencies_first_ties_by_name(reg):
    res = resolve(reg, ["server"], add=["gamma"])
    # mu <- alpha <- zeta <- server, beta <- gamma (requires), beta <- server
    assert res.names == ["beta", "gamma", "mu", "alpha", "zeta", "server"]


def test_required_items_come_before_the_items_requiring_them(reg):
    assert resolve(reg, [], add=["aa-needs", "zz-base"]).names == ["zz-base", "aa-needs"]


def test_order_does_not_depend_on_registration_order():
    items = [feat("c", implies=("a",)), feat("b"), feat("a"), feat("d", requires=("b",)),
             scen("s", ["d", "c", "b"])]
    features = [i for i in items if isinstance(i, Feature)]
    forward = registry(("p1", Plug(features=features[:2])), ("p2", Plug(features=features[2:], scenarios=[items[-1]])))
    backward = registry(("p2", Plug(features=features[2:][::-1], scenarios=[items[-1]])),
                        ("p1", Plug(features=features[:2][::-1])))
    a = resolve(forward, ["s"])
    b = resolve(backward, ["s"])
    assert a.names == b.names == ["a", "b", "c", "d", "s"]
    assert a.why == b.why


def test_validators_and_host_actions_are_listed_once_in_order(reg):
    res = resolve(reg, ["server"])
    assert res.validators() == ["v1", "v2"]
    assert res.host_actions() == []


def test_an_unmet_requirement_says_how_to_meet_it(reg):
    with pytest.raises(RulesError) as exc:
        resolve(reg, [], add=["gamma"])
    assert str(exc.value) == "feature 'gamma' requires 'beta' (add it with --feature +beta)"
    assert resolve(reg, [], add=["gamma", "beta"]).names == ["beta", "gamma"]


def test_a_required_scenario_must_be_chosen(reg):
    with pytest.raises(RulesError, match=r"feature 'needs-s' requires 'server' \(it was not chosen\)"):
        resolve(reg, [], add=["needs-s"])
    assert "needs-s" in resolve(reg, ["server"], add=["needs-s"]).names


def test_a_conflict_names_both_items_the_reason_the_plugin_and_how_each_came_in(reg):
    with pytest.raises(RulesError) as exc:
        resolve(reg, ["secure-vm", "laptop"])
    msg = str(exc.value)
    assert exc.value.problems == [msg]
    assert "'cpu-fast' conflicts with" in msg and "'cpu-mobile'" in msg
    assert "a guest cannot both pin and migrate" in msg
    assert "plugin 'base'" in msg
    assert "'cpu-fast' implied by secure-vm" in msg and "'cpu-mobile' implied by laptop" in msg


def test_a_conflict_between_chosen_features(reg):
    with pytest.raises(RulesError) as exc:
        resolve(reg, [], add=["cpu-fast", "cpu-mobile"])
    assert "'cpu-fast' chosen" in str(exc.value) and "'cpu-mobile' chosen" in str(exc.value)


def test_a_conflict_declared_on_both_sides_is_one_problem_with_both_reasons():
    reg = registry(("left", Plug(features=[feat("l", conflicts=(Conflict("r", "left says no"),))])),
                   ("right", Plug(features=[feat("r", conflicts=(Conflict("l", "right says no"),))])))
    with pytest.raises(RulesError) as exc:
        resolve(reg, [], add=["l", "r"])
    [problem] = exc.value.problems
    assert "left says no" in problem and "plugin 'left'" in problem
    assert "right says no" in problem and "plugin 'right'" in problem


def test_every_problem_is_reported_at_once(reg):
    with pytest.raises(RulesError) as exc:
        resolve(reg, ["laptop"], add=["cpu-fast", "gamma", "x86-only"], arch="aarch64")
    problems = exc.value.problems
    assert len(problems) == 3
    assert any("requires 'beta'" in p for p in problems)
    assert any("'cpu-fast' conflicts with" in p and "'cpu-mobile'" in p for p in problems)
    assert any("'x86-only' supports x86_64, not aarch64" in p for p in problems)
    msg = str(exc.value)
    assert msg.startswith("the chosen scenarios and features cannot be combined: ")
    assert all(p in msg for p in problems)


def test_removal_takes_a_feature_out_of_the_closure(reg):
    res = resolve(reg, ["server"], remove=["beta"])
    assert "beta" not in res.names and res.removed == ["beta"]
    res = resolve(reg, ["server"], remove=["alpha"])  # implied by zeta: gone, and what it implied
    assert set(res.names) == {"server", "zeta", "beta"}


def test_removing_a_requirement_is_reported(reg):
    with pytest.raises(RulesError, match=r"feature 'gamma' requires 'beta' \(it was removed\)"):
        resolve(reg, ["server"], add=["gamma"], remove=["beta"])


def test_adding_and_removing_the_same_feature_is_refused(reg):
    with pytest.raises(RulesError, match="feature 'beta' is both added and removed"):
        resolve(reg, [], add=["beta"], remove=["beta"])


def test_unknown_names_get_a_suggestion(reg):
    with pytest.raises(UsageError) as exc:
        resolve(reg, ["severs"])
    assert str(exc.value) == "unknown scenario 'severs' (did you mean 'server'?)"
    with pytest.raises(UsageError, match=r"unknown feature 'gama' \(did you mean 'gamma'\?\)"):
        resolve(reg, ["server"], add=["gama"])
    with pytest.raises(UsageError, match=r"unknown feature 'betta' \(did you mean 'beta'\?\)"):
        resolve(reg, ["server"], remove=["betta"])


def test_unknown_names_are_all_reported_and_features_are_not_scenarios(reg):
    with pytest.raises(UsageError) as exc:
        resolve(reg, ["gamma", "qqqqqq"], add=["zzzzzzzzz"])
    problems = exc.value.problems
    assert problems == [
        "unknown scenario 'gamma' (is a feature: use --feature +gamma)",
        "unknown scenario 'qqqqqq'",
        "unknown feature 'zzzzzzzzz'",
    ]
    with pytest.raises(UsageError, match="unknown feature 'server'"):
        resolve(reg, [], add=["server"])


def test_arch_restriction(reg):
    assert "x86-only" in resolve(reg, [], add=["x86-only"], arch="x86_64").names
    assert "x86-only" in resolve(reg, [], add=["x86-only"]).names  # arch not known yet
    with pytest.raises(RulesError, match="feature 'x86-only' supports x86_64, not aarch64"):
        resolve(reg, [], add=["x86-only"], arch="aarch64")
