"""Misbehaving plugins are named (issue 9, item 6): a validator that raises or returns something
other than ``vscen.Check``s, and a feature's or scenario's ``apply``/``finish`` that raises,
are reported naming the item, the plugin and its distribution with version, never as an
anonymous "internal error"; the other validators keep running. vscen's own errors, raised on
purpose with a message for the user, pass through as they are."""

from __future__ import annotations

import pytest
from coresupport import Plug, cli_env, error_lines, vscen, write_dist

from vscen import Check, Feature, HostError, InvalidDomainError, PluginError, Scenario, UsageError, Validator
from vscen.errors import EXIT_HOST, EXIT_INVALID
from vscen.pipeline import Request, render, run_host_validators


def run(*plugins, features=(), scenario_apply=None, validators=()):
    """Render the scenario "demo" (its *features* and host *validators*) with in-process plugins
    only, on the embedded test driver."""
    demo = Scenario(name="demo", summary="demo", features=tuple(f.name for f in features),
                    validators=tuple(validators), apply=scenario_apply)
    plugins = (("demo-plugin", Plug(features=features, scenarios=[demo])), *plugins)
    request = Request(scenarios=["demo"], plugins=plugins, entry_points=False, options={"name": "m"},
                      connect="test:///default")
    return render(request, keep_connection=False)


def boom(domain, ctx):
    raise ValueError("bad host data")


def ok(summary="fine"):
    return lambda ctx: [Check("pass", summary)]


# -- apply and finish ---------------------------------------------------------------------------


def test_a_feature_raising_in_apply_stops_the_build_naming_it_and_its_plugin():
    with pytest.raises(PluginError) as exc:
        run(features=[Feature(name="exploder", summary="x", apply=boom)])
    assert str(exc.value) == ("feature 'exploder' of plugin 'demo-plugin' (in-process) failed in apply: "
                              "ValueError: bad host data")
    assert exc.value.exit_code == 1 and isinstance(exc.value.__cause__, ValueError)


def test_a_feature_raising_in_finish_is_named_too():
    with pytest.raises(PluginError, match="^feature 'late' of plugin 'demo-plugin' \\(in-process\\) "
                                          "failed in finish: ValueError: bad host data$"):
        run(features=[Feature(name="late", summary="x", finish=boom)])


def test_prepare_runs_before_every_apply_and_is_named_when_it_raises():
    from dataclasses import replace

    seen = []

    def raise_vcpu(ctx):
        ctx.settings = replace(ctx.settings, vcpu=3)

    early = Feature(name="zz-early", summary="x", prepare=raise_vcpu)
    reader = Feature(name="aa-reader", summary="x", apply=lambda domain, ctx: seen.append(ctx.settings.vcpu))
    assert "<vcpu placement=\"static\">3</vcpu>" in run(features=[reader, early]).xml
    assert seen == [3]
    with pytest.raises(PluginError, match="^feature 'early' of plugin 'demo-plugin' \\(in-process\\) "
                                          "failed in prepare: ValueError: bad host data$"):
        run(features=[Feature(name="early", summary="x", prepare=lambda ctx: boom(None, ctx))])


def test_a_scenario_raising_in_apply_is_named():
    with pytest.raises(PluginError, match="^scenario 'demo' of plugin 'demo-plugin' \\(in-process\\) "
                                          "failed in apply: ValueError"):
        run(scenario_apply=boom)


def test_a_feature_refusing_with_a_vscen_error_keeps_its_message():
    def refuse(domain, ctx):
        raise UsageError("disk.bus: 'ide' is not offered by this machine type")

    with pytest.raises(UsageError, match="^disk.bus: 'ide' is not offered"):
        run(features=[Feature(name="picky", summary="x", apply=refuse)])


# -- validators ---------------------------------------------------------------------------------


def crash(ctx):
    return 1 / 0


@pytest.mark.parametrize("check,what", [
    (crash, "failed: ZeroDivisionError: division by zero"),
    (lambda ctx: Check("fail", "x"), "returned Check(status='fail', message='x', fix='', element='', val..., "
                                     "not an iterable of vscen.Check"),
    (lambda ctx: "fail", "returned 'fail', not an iterable of vscen.Check"),
    (lambda ctx: [Check("pass", "ok"), ("warn", "a tuple")], "returned ('warn', 'a tuple'), not an iterable of vscen.Check"),
    (lambda ctx: [None], "returned None, not an iterable of vscen.Check"),
    (lambda ctx: 42, "returned 42, not an iterable of vscen.Check"),
])
def test_a_misbehaving_host_validator_is_one_failing_check_naming_it_and_the_others_run(check, what):
    bad = Validator(name="flaky", summary="flaky", check=check)
    good = Validator(name="steady", summary="steady", check=ok())
    result = run(("checks-plugin", Plug(validators=[bad, good])))
    checks = run_host_validators(result.ctx, result.ctx.registry, ["flaky", "steady"])
    assert [(c.validator, c.status) for c in checks] == [("flaky", "fail"), ("steady", "pass")]
    assert checks[0].message == f"validator 'flaky' of plugin 'checks-plugin' (in-process) {what}"
    assert checks[0].fix == ("report it to the plugin's authors, or disable the plugin "
                             "(VSCEN_DISABLED_PLUGINS=checks-plugin)")


def test_a_host_validator_that_raises_stops_the_run_as_a_failed_check():
    plugin = ("checks-plugin", Plug(validators=[Validator(name="flaky", summary="flaky", check=crash)]))
    with pytest.raises(HostError) as exc:
        run(plugin, validators=["flaky"])
    assert str(exc.value).startswith("flaky: validator 'flaky' of plugin 'checks-plugin' (in-process) failed: "
                                     "ZeroDivisionError: division by zero (fix: report it")


def test_a_generator_validator_failing_halfway_is_named():
    def halfway(ctx):
        yield Check("pass", "first")
        raise KeyError("cells")

    plugin = ("checks-plugin", Plug(validators=[Validator(name="half", summary="h", check=halfway)]))
    result = run(plugin)
    [check] = run_host_validators(result.ctx, result.ctx.registry, ["half"])
    assert check.status == "fail" and check.message.endswith("failed: KeyError: 'cells'")


def test_a_validator_refusing_with_a_vscen_error_keeps_its_message():
    def refuse(ctx):
        raise UsageError("--peer nowhere.xml: neither a libvirt URI nor a file")

    plugin = ("checks-plugin", Plug(validators=[Validator(name="peers", summary="p", check=refuse)]))
    with pytest.raises(UsageError, match="^--peer nowhere.xml"):
        run(plugin, validators=["peers"])


def test_a_misbehaving_domain_validator_is_named_and_the_others_still_check():
    def no_desc(ctx):
        yield Check("fail", "no description, please")

    validators = [Validator(name="broken-dom", summary="b", check=crash, kind="domain"),
                  Validator(name="no-desc", summary="d", check=no_desc, kind="domain")]
    with pytest.raises(InvalidDomainError) as exc:
        run(("dom-checks", Plug(validators=validators)))
    assert exc.value.problems == [
        "domain: validator 'broken-dom' of plugin 'dom-checks' (in-process) failed: ZeroDivisionError: "
        "division by zero [broken-dom]",
        "domain: no description, please [no-desc]",
    ]


# -- the command line: an installed distribution, named with its version ----------------------

CRASHING_PLUGIN = '''
from vscen import Check, Feature, Scenario, Validator, hookimpl


def _crash(ctx):
    raise RuntimeError("sensor offline")


def _wrong(ctx):
    return "all good"


def _boom(domain, ctx):
    raise KeyError("vcpu")


@hookimpl
def vscen_register_validators(register):
    register(Validator(name="crashy", summary="raises", check=_crash))
    register(Validator(name="wrongly", summary="a string", check=_wrong, kind="domain"))


@hookimpl
def vscen_register_features(register):
    register(Feature(name="crash-boom", summary="fails in apply", apply=_boom))


@hookimpl
def vscen_register_scenarios(register):
    register(Scenario(name="crash-host", summary="a crashing host check", validators=("crashy",)))
    register(Scenario(name="crash-plain", summary="only the domain validator misbehaves"))
    register(Scenario(name="crash-build", summary="fails in apply", features=("crash-boom",)))
'''


@pytest.fixture(scope="module")
def crash_env(tmp_path_factory):
    root = write_dist(tmp_path_factory.mktemp("site"), "vscen-crash", "2.1.0", "crash-plugin",
                      "vscen_crash_plugin", CRASHING_PLUGIN)
    return cli_env(root)


def one_error(proc, code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    [line] = error_lines(proc.stderr)
    return line


@pytest.mark.parametrize("scenario,code,expected", [
    ("crash-host", EXIT_HOST,
     "error: crashy: validator 'crashy' of plugin 'crash-plugin' (vscen-crash 2.1.0) failed: "
     "RuntimeError: sensor offline (fix: report it to the plugin's authors, or disable the plugin "
     "(VSCEN_DISABLED_PLUGINS=crash-plugin))"),
    ("crash-plain", EXIT_INVALID,
     "error: domain: validator 'wrongly' of plugin 'crash-plugin' (vscen-crash 2.1.0) returned 'all good', "
     "not an iterable of vscen.Check [wrongly]"),
    ("crash-build", 1,
     "error: feature 'crash-boom' of plugin 'crash-plugin' (vscen-crash 2.1.0) failed in apply: KeyError: 'vcpu'"),
])
def test_the_cli_names_the_plugin_distribution_and_version(crash_env, scenario, code, expected):
    proc = vscen("run", scenario, "--dry-run", "--connect", "test:///default", env=crash_env)
    assert one_error(proc, code) == expected


# -- host actions ---------------------------------------------------------------------------------


def test_a_host_action_raising_in_plan_is_named(tmp_path):
    from vscen import HostAction
    from vscen.plan import make_plan

    def plan(ctx):
        return ctx.settings.no_such_setting

    action = HostAction(name="prep", summary="p", plan=plan, undo=lambda conn, record: None)
    feature = Feature(name="needs-prep", summary="n", host_actions=("prep",))
    result = run(("prep-plugin", Plug(actions=[action])), features=[feature])
    with pytest.raises(PluginError, match="^host action 'prep' of plugin 'prep-plugin' \\(in-process\\) failed in "
                                          "plan: AttributeError: .*no_such_setting"):
        make_plan(result, tmp_path)
