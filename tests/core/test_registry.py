"""The registry: who registered what, and plugins whose declarations are inconsistent."""

from __future__ import annotations

from coresupport import Plug, load

from vscen import Conflict, Feature, HostAction, Scenario, Validator, hookimpl


def feat(name, **kw):
    return Feature(name=name, summary=f"feature {name}", **kw)


def test_objects_are_registered_with_their_plugin():
    good = Plug(features=[feat("a"), feat("b")], scenarios=[Scenario(name="s", summary="s", features=("a",))],
                validators=[Validator(name="v", summary="v", check=lambda ctx: [])],
                actions=[HostAction(name="h", summary="h", plan=lambda ctx: [], undo=lambda c, r: None)])
    other = Plug(features=[feat("c")])
    pm, reg = load(("good", good), ("other", other))
    assert set(reg.features) == {"a", "b", "c"}
    assert set(reg.scenarios) == {"s"}
    assert reg.plugin_of("a") == "good" and reg.plugin_of("c") == "other"
    assert reg.plugin_of("s", "scenarios") == "good"
    assert reg.plugin_of("v", "validators") == "good"
    assert reg.plugin_of("h", "host-actions") == "good"
    assert reg.plugin_of("nosuch") == "?"
    assert reg.item("s") is reg.scenarios["s"] and reg.item("a") is reg.features["a"]
    assert reg.item("nosuch") is None
    assert pm.infos["good"].registers == {"features": ["a", "b"], "scenarios": ["s"],
                                          "validators": ["v"], "host-actions": ["h"]}
    assert pm.infos["other"].registers == {"features": ["c"]}
    assert all(i.status == "loaded" for i in pm.infos.values())


def test_a_duplicate_name_breaks_the_second_plugin_and_drops_all_its_items():
    first = Plug(features=[feat("dup"), feat("one")])
    second = Plug(features=[feat("two"), feat("dup", details="the other one")])
    pm, reg = load(("first", first), ("second", second))
    assert pm.infos["first"].status == "loaded"
    assert pm.infos["second"].status == "broken"
    assert "'dup' is registered by 'first' already" in pm.infos["second"].reason
    assert set(reg.features) == {"dup", "one"}
    assert reg.features["dup"].details == ""  # the first plugin's
    assert reg.plugin_of("dup") == "first"
    assert pm.get_plugin("second") is None
    assert any("second" in w and "VSCEN_DISABLED_PLUGINS=second" in w for w in pm.warnings())


def test_features_and_scenarios_share_one_namespace():
    pm, reg = load(("f", Plug(features=[feat("same")])),
                   ("s", Plug(scenarios=[Scenario(name="same", summary="s")])))
    assert pm.infos["s"].status == "broken"
    assert "'same' is registered by 'f' already" in pm.infos["s"].reason
    assert "same" in reg.features and "same" not in reg.scenarios


def test_validators_and_host_actions_have_their_own_namespaces():
    pm, reg = load(("p", Plug(features=[feat("x")],
                              validators=[Validator(name="x", summary="v", check=lambda c: [])],
                              actions=[HostAction(name="x", summary="h", plan=lambda c: [], undo=lambda c, r: None)])))
    assert pm.infos["p"].status == "loaded"
    assert "x" in reg.features and "x" in reg.validators and "x" in reg.host_actions


def test_the_order_of_registration_decides_which_duplicate_is_kept():
    pm, reg = load(("zeta", Plug(features=[feat("dup", details="zeta")])),
                   ("alpha", Plug(features=[feat("dup", details="alpha")])))
    assert reg.features["dup"].details == "zeta"
    assert pm.infos["alpha"].status == "broken"


def test_unknown_names_in_rules_break_the_plugin():
    cases = {
        "req": feat("r", requires=("ghost",)),
        "imp": feat("i", implies=("ghost",)),
        "con": feat("c", conflicts=(Conflict("ghost", "because"),)),
        "scen": Scenario(name="sc", summary="s", features=("ghost",)),
        "val": feat("v", validators=("ghost-check",)),
        "act": feat("a", host_actions=("ghost-action",)),
    }
    plugins = [(name, Plug(features=[obj]) if isinstance(obj, Feature) else Plug(scenarios=[obj]))
               for name, obj in cases.items()]
    pm, reg = load(*plugins, ("fine", Plug(features=[feat("ok")])))
    for name in cases:
        assert pm.infos[name].status == "broken", name
    assert "feature 'r' names unknown 'ghost'" in pm.infos["req"].reason
    assert "feature 'i' names unknown 'ghost'" in pm.infos["imp"].reason
    assert "feature 'c' names unknown 'ghost'" in pm.infos["con"].reason
    assert "scenario 'sc' names unknown 'ghost'" in pm.infos["scen"].reason
    assert "unknown validator 'ghost-check'" in pm.infos["val"].reason
    assert "unknown host action 'ghost-action'" in pm.infos["act"].reason
    assert set(reg.items()) == {"ok"}
    assert pm.infos["fine"].status == "loaded"


def test_an_implies_cycle_breaks_the_plugin():
    cyc = Plug(features=[feat("a", implies=("b",)), feat("b", implies=("c",)), feat("c", implies=("a",))])
    pm, reg = load(("cyc", cyc), ("fine", Plug(features=[feat("ok")])))
    assert pm.infos["cyc"].status == "broken"
    assert "implies itself (a cycle)" in pm.infos["cyc"].reason
    assert set(reg.features) == {"ok"}
    assert pm.infos["fine"].status == "loaded"


def test_a_self_conflict_breaks_the_plugin_and_drops_its_items_only():
    selfish = Plug(features=[feat("uses", implies=("dep",), conflicts=(Conflict("dep", "never"),)),
                             feat("dep"), feat("innocent")],
                   scenarios=[Scenario(name="selfish-s", summary="s")],
                   validators=[Validator(name="selfish-v", summary="v", check=lambda c: [])])
    fine = Plug(features=[feat("ok", implies=("ok2",)), feat("ok2")])
    pm, reg = load(("selfish", selfish), ("fine", fine))
    info = pm.infos["selfish"]
    assert info.status == "broken"
    assert "feature 'uses' conflicts with 'dep', which it implies" in info.reason
    assert set(reg.items()) == {"ok", "ok2"}
    assert "selfish-v" not in reg.validators
    assert not any(plugin == "selfish" for plugin in reg.owner.values())
    assert pm.infos["fine"].status == "loaded"
    assert reg.plugin_of("ok") == "fine"


def test_a_direct_self_conflict_is_caught_too():
    pm, reg = load(("p", Plug(features=[feat("me", conflicts=(Conflict("me", "myself"),))])))
    assert pm.infos["p"].status == "broken"
    assert "conflicts with 'me', which it implies" in pm.infos["p"].reason
    assert reg.features == {}


def test_a_plugin_relying_on_a_dropped_item_is_broken_as_well():
    bad = Plug(features=[feat("base", requires=("ghost",))])
    user = Plug(features=[feat("top", implies=("base",))])
    bystander = Plug(features=[feat("alone")])
    pm, reg = load(("bad", bad), ("user", user), ("bystander", bystander))
    assert pm.infos["bad"].status == "broken"
    assert pm.infos["user"].status == "broken"
    assert "feature 'top' names unknown 'base'" in pm.infos["user"].reason
    assert pm.infos["bystander"].status == "loaded"
    assert set(reg.features) == {"alone"}


class Raising:
    @hookimpl
    def vscen_register_features(self, register):
        register(feat("half"))
        raise RuntimeError("cannot read my data file")


class RaisingLater:
    """Features register fine, scenarios fail: the features go too."""

    @hookimpl
    def vscen_register_features(self, register):
        register(feat("early"))

    @hookimpl
    def vscen_register_scenarios(self, register):
        raise KeyError("oops")


def test_a_plugin_whose_hook_raises_is_broken_and_the_others_load():
    pm, reg = load(("raising", Raising()), ("later", RaisingLater()), ("fine", Plug(features=[feat("ok")])))
    assert pm.infos["raising"].status == "broken"
    assert pm.infos["raising"].reason == (
        "vscen_register_features failed: RuntimeError: cannot read my data file")
    assert pm.infos["later"].status == "broken"
    assert pm.infos["later"].reason.startswith("vscen_register_scenarios failed: KeyError")
    assert set(reg.features) == {"ok"}
    assert pm.infos["fine"].status == "loaded"


class WrongType:
    def __init__(self, obj):
        self.obj = obj

    @hookimpl
    def vscen_register_features(self, register):
        register(self.obj)


def test_registering_something_that_is_not_a_feature_breaks_the_plugin():
    pm, reg = load(("dicty", WrongType({"name": "x"})),
                   ("scenario-as-feature", WrongType(Scenario(name="sc", summary="s"))),
                   ("fine", Plug(features=[feat("ok")])))
    for name in ("dicty", "scenario-as-feature"):
        info = pm.infos[name]
        assert info.status == "broken"
        assert info.reason.startswith("vscen_register_features failed: TypeError: ")
        assert "expected a vscen.Feature" in info.reason
    assert "{'name': 'x'}" in pm.infos["dicty"].reason
    assert set(reg.items()) == {"ok"}


def test_every_problem_of_a_broken_plugin_is_in_its_reason():
    many = Plug(features=[feat("dup"), feat("r", requires=("ghost",)), feat("i", implies=("phantom",))])
    pm, _ = load(("first", Plug(features=[feat("dup")])), ("many", many))
    reason = pm.infos["many"].reason
    assert "'dup' is registered by 'first' already" in reason
    assert "feature 'r' names unknown 'ghost'" in reason
    assert "feature 'i' names unknown 'phantom'" in reason
