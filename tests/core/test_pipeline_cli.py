"""The pipeline with inline plugins (customise, precedence, checks) and the real command line
(exit codes, one-line errors without tracebacks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from coresupport import DEMO_PLUGIN, Plug, cli_env, error_lines, load_tests_conftest, vscen, write_dist
from lxml import etree

import vscen as vscen_pkg
from vscen import Check, Conflict, Feature, Scenario, Validator
from vscen.errors import (
    EXIT_INVALID,
    EXIT_RULES,
    EXIT_USAGE,
    HostError,
    InvalidDomainError,
    PluginError,
    RulesError,
    UsageError,
)
from vscen.pipeline import Request, customise, render


def feature(name, apply=None, **kw):
    return Feature(name=name, summary=name, apply=apply, **kw)


def describe(text):
    return lambda d, ctx: d.ensure("description").text(text)


def set_text(path, text):
    return lambda d, ctx: d.ensure(path).text(text)


def run(plugins, scenarios=("demo",), **kw):
    """Render with in-process plugins only, on the embedded test driver (reference host)."""
    kw.setdefault("options", {"name": "pipe"})
    if not kw.get("host_facts"):
        kw.setdefault("connect", "test:///default")
    request = Request(scenarios=list(scenarios), plugins=tuple(plugins), entry_points=False, **kw)
    return render(request, keep_connection=False)


def demo(*features, defaults=None, extra=()):
    names = tuple(f.name for f in features)
    return ("demo-plugin", Plug(features=features,
                                scenarios=[Scenario(name="demo", summary="demo", features=names,
                                                    defaults=defaults or {}), *extra]))


def root(result):
    return etree.fromstring(result.xml.encode())


# -- customise (--set) ------------------------------------------------------------------------


def test_set_creates_an_attribute_on_an_existing_element_and_sets_text():
    result = run([demo(feature("d", describe("from plugin")))],
                 sets=["./vcpu/@current=1", "./description=from user"])
    r = root(result)
    assert r.find("vcpu").get("current") == "1" and r.find("vcpu").text == "2"
    assert r.find("description").text == "from user"
    assert result.customised == [("/domain/vcpu/@current", "1"), ("/domain/description", "from user")]


def test_set_with_a_predicate_holding_an_equals_sign():
    result = run([demo(feature("d", describe("x")))], sets=["./os/boot[@dev='hd']/@dev=cdrom"])
    assert root(result).find("os/boot").get("dev") == "cdrom"


@pytest.mark.parametrize("item,message", [
    ("./devices/graphics/@type=vnc", "matches nothing"),
    ("./nothing=1", "matches nothing"),
    ("./name)=x", "is not a valid XPath"),
    ("./name", "is not XPATH=VALUE"),
    ("=x", "is not XPATH=VALUE"),
    ("./os=hvm", "has child elements"),
    ("/domain/@1bad=x", "is not an attribute name"),
    ("./@xmlns=]]>", "is not an attribute name"),
    ("./name=a\x01b", "a character XML cannot hold"),
    ("./name\udcff=x", "a character XML cannot hold"),
    ("./name[=x", "is not XPATH=VALUE"),
    ("./na me=x", "is not a valid XPath"),
])
def test_bad_sets_are_usage_errors(item, message):
    with pytest.raises(UsageError) as exc:
        run([demo(feature("d", describe("x")))], sets=[item])
    assert str(exc.value).startswith("--set: ")
    assert message in str(exc.value)


def test_customise_directly_on_a_tree():
    tree = etree.fromstring("<domain><devices><disk n='1'/><disk n='2'/></devices></domain>")
    done = customise(tree, ["./devices/disk/@cache=none"])
    assert done == [("/domain/devices/disk[1]/@cache", "none"), ("/domain/devices/disk[2]/@cache", "none")]
    assert [d.get("cache") for d in tree.iter("disk")] == ["none", "none"]


def test_a_set_that_breaks_the_schema_names_the_path_and_the_user():
    with pytest.raises(InvalidDomainError) as exc:
        run([demo(feature("d", describe("x")))], sets=["./name/@colour=blue"])
    assert "/domain/name" in str(exc.value) and "colour" in str(exc.value)
    assert "(set by user (--set))" in str(exc.value)
    assert exc.value.exit_code == EXIT_INVALID


def test_a_feature_level_conflict_is_refused_unless_a_set_decides_it():
    plugins = [demo(feature("stopper", set_text("on_poweroff", "destroy")),
                    feature("restarter", set_text("on_poweroff", "restart")),
                    feature("utc", lambda d, c: d.ensure("clock").set(offset="utc")),
                    feature("local", lambda d, c: d.ensure("clock").set(offset="localtime")))]
    with pytest.raises(RulesError) as exc:
        run(plugins)
    problems = exc.value.problems
    assert len(problems) == 2
    text = " ".join(problems)
    assert "/domain/on_poweroff" in text and "'stopper' sets 'destroy'" in text and "'restarter' sets 'restart'" in text
    assert "/domain/clock/@offset" in text and "'utc' sets 'utc'" in text
    with pytest.raises(RulesError) as exc:
        run(plugins, sets=["./on_poweroff=restart"])
    assert [p.split(":")[0] for p in exc.value.problems] == ["/domain/clock/@offset"]
    result = run(plugins, sets=["./on_poweroff=restart", "./clock/@offset=utc"])
    r = root(result)
    assert r.find("on_poweroff").text == "restart" and r.find("clock").get("offset") == "utc"


# -- precedence and provenance end to end -----------------------------------------------------


def eight_vcpus(d, ctx):
    d.ensure("vcpu").text(8)


@pytest.mark.parametrize("defaults,options,vcpu,who", [
    ({}, {}, "8", "demo-feature (feature)"),  # a feature beats the built-in default
    ({"vcpu": 4}, {}, "4", "demo (scenario)"),  # the scenario beats the feature
    ({"vcpu": 4}, {"vcpu": "6"}, "6", "option (user)"),  # the user beats everything
])
def test_settings_and_features_meet_at_their_levels(defaults, options, vcpu, who):
    result = run([demo(feature("demo-feature", eight_vcpus), defaults=defaults)],
                 options={"name": "prec", **options})
    assert root(result).find("vcpu").text == vcpu
    rows = {path: (value, w) for path, value, w in result.ctx.domain.explain()}
    value, written_by = rows["/domain/vcpu"]
    assert value == vcpu and written_by.startswith(who)


def test_rendering_is_byte_identical_and_independent_of_plugin_order():
    a = feature("a", describe("a"), implies=("b",))
    def rng(d, ctx):
        d.ensure("devices").add("rng", model="virtio").ensure("backend").set(model="random").text("/dev/urandom")

    b = feature("b", rng)
    c = feature("c", lambda d, c: d.ensure("features/acpi"))
    scen = Scenario(name="demo", summary="demo", features=("c", "a"))
    one = run([("p1", Plug(features=[a, b])), ("p2", Plug(features=[c], scenarios=[scen]))])
    two = run([("p2", Plug(features=[c], scenarios=[scen])), ("p1", Plug(features=[b, a]))])
    assert one.xml == two.xml
    assert one.resolution.names == two.resolution.names == ["b", "a", "c", "demo"]
    assert run([("p1", Plug(features=[a, b])), ("p2", Plug(features=[c], scenarios=[scen]))]).xml == one.xml


def test_scenario_default_clashes_are_rules_errors_unless_the_user_decides():
    plugins = [("p", Plug(scenarios=[Scenario(name="s1", summary="s", defaults={"memory": "4GiB"}),
                                      Scenario(name="s2", summary="s", defaults={"memory": "8GiB"})]))]
    with pytest.raises(RulesError, match="memory: scenario 's1' wants '4GiB' and scenario 's2' wants '8GiB'"):
        run(plugins, scenarios=["s1", "s2"])
    result = run(plugins, scenarios=["s1", "s2"], options={"name": "x", "memory": "6GiB"})
    assert root(result).find("memory").text == str(6 * 1024**2)


def test_a_user_config_file_is_read(tmp_path):
    conf = Path(os.environ["XDG_CONFIG_HOME"]) / "vscen" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('memory = "3GiB"\nvcpu = 3\n')
    result = run([demo(feature("d", describe("x")))])
    assert root(result).find("memory").text == str(3 * 1024**2)
    assert result.settings.source("vcpu") == f"config {conf}"


def test_the_name_defaults_to_the_scenarios():
    result = run([demo(feature("d", describe("x")))], options={})
    assert result.settings.name == "demo" and root(result).findtext("name") == "demo"


# -- rules, checks and plugin failures in the pipeline -----------------------------------------


def test_no_scenario_is_a_usage_error():
    with pytest.raises(UsageError, match="give at least one scenario"):
        run([demo(feature("d"))], scenarios=[])


def test_unknown_scenario_in_the_pipeline():
    with pytest.raises(UsageError, match=r"unknown scenario 'dmeo' \(did you mean 'demo'\?\)"):
        run([demo(feature("d"))], scenarios=["dmeo"])


def test_the_host_arch_is_checked_against_the_items():
    files = load_tests_conftest().host_files("aarch64")
    plugins = [demo(feature("x86-thing", describe("x"), arches=("x86_64",)))]
    with pytest.raises(RulesError, match="feature 'x86-thing' supports x86_64, not aarch64"):
        run(plugins, host_facts=files)
    assert root(run(plugins, host_facts=load_tests_conftest().host_files("local-kvm"))).find("description") is not None


def test_host_validators_run_for_the_items_that_name_them():
    calls = []

    def check(ctx):
        calls.append(ctx.settings.name)
        return [Check("warn", "a bit slow", fix="buy a faster host"), Check("pass", "fine")]

    val = Validator(name="speed", summary="speed", check=check)
    plugins = [demo(feature("d", describe("x"), validators=("speed",))), ("checks", Plug(validators=[val]))]
    result = run(plugins)
    assert calls == ["pipe"]
    assert [(c.validator, c.status) for c in result.checks] == [("speed", "warn"), ("speed", "pass")]


def test_a_failing_host_validator_is_a_host_error_with_the_fix():
    val = Validator(name="needs-kvm", summary="kvm", check=lambda ctx: [Check("fail", "no /dev/kvm", fix="load kvm_amd")])
    plugins = [demo(feature("d", describe("x"), validators=("needs-kvm",))), ("checks", Plug(validators=[val]))]
    with pytest.raises(HostError) as exc:
        run(plugins)
    assert str(exc.value) == "needs-kvm: no /dev/kvm (fix: load kvm_amd)"


def test_a_failing_domain_validator_names_the_element_and_who_set_it():
    def check(ctx):
        if ctx.xml.find("description") is not None:
            yield Check("fail", "descriptions are not allowed here", element="/domain/description")

    val = Validator(name="no-desc", summary="no descriptions", check=check, kind="domain")
    plugins = [demo(feature("describer", describe("x"))), ("checks", Plug(validators=[val]))]
    with pytest.raises(InvalidDomainError) as exc:
        run(plugins)
    assert str(exc.value) == ("/domain/description (set by describer (feature)): "
                              "descriptions are not allowed here [no-desc]")


def test_a_feature_failing_in_apply_is_reported_with_its_plugin():
    def boom(d, ctx):
        raise ValueError("bad host data")

    with pytest.raises(PluginError) as exc:
        run([demo(feature("exploder", boom))])
    assert str(exc.value) == ("feature 'exploder' of plugin 'demo-plugin' (in-process) failed in apply: "
                              "ValueError: bad host data")


def test_rules_errors_come_out_of_render():
    plugins = [demo(feature("l", conflicts=(Conflict("r", "opposites"),)), feature("r"))]
    with pytest.raises(RulesError, match="opposites"):
        run(plugins)


# -- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dist(tmp_path_factory):
    """A distribution on PYTHONPATH providing the core-demo/core-clash/core-boom scenarios."""
    return write_dist(tmp_path_factory.mktemp("site"), "vscen-core-demo", "0.3.1", "core-demo-plugin",
                      "vscen_core_demo_plugin", DEMO_PLUGIN)


@pytest.fixture
def env(demo_dist):
    return cli_env(demo_dist)


def assert_one_line_error(proc, code, *parts):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = error_lines(proc.stderr)
    assert line == proc.stderr.strip().splitlines()[-1]
    for part in parts:
        assert part in line, line
    return line


def test_cli_version():
    proc = vscen("--version")
    assert proc.returncode == 0
    assert proc.stdout == f"vscen {vscen_pkg.__version__}\n"


def test_cli_unknown_scenario_with_the_real_entry_points():
    proc = vscen("run", "nosuchscenario", "--dry-run", env=cli_env(disable_builtins=False))
    assert_one_line_error(proc, EXIT_USAGE, "error: unknown scenario 'nosuchscenario'")


def test_cli_unknown_scenario_suggests_the_closest(env):
    assert_one_line_error(vscen("run", "core-dmeo", env=env), EXIT_USAGE,
                          "unknown scenario 'core-dmeo' (did you mean 'core-demo'?)")


def test_cli_bad_memory(env):
    assert_one_line_error(vscen("run", "core-demo", "--memory", "4XB", "--dry-run", env=env), EXIT_USAGE,
                          "error: memory: '4XB' is not a size")


def test_cli_bad_vcpu(env):
    assert_one_line_error(vscen("run", "core-demo", "--vcpu", "0", "--dry-run", env=env), EXIT_USAGE,
                          "error: vcpu: '0'")


def test_cli_malformed_host_facts(env, tmp_path):
    bad = tmp_path / "caps.xml"
    bad.write_text("<capabilities><host>")
    assert_one_line_error(vscen("run", "core-demo", "--host-facts", str(bad), "--dry-run", env=env),
                          EXIT_USAGE, f"error: --host-facts {bad}: not well-formed XML")


def test_cli_rules_error(env):
    assert_one_line_error(vscen("run", "core-clash", "--dry-run", env=env), EXIT_RULES,
                          "'demo-left' conflicts with", "they pull opposite ways")


def test_cli_plugin_failure_is_one_line(env):
    assert_one_line_error(vscen("run", "core-boom", "--dry-run", "--connect", "test:///default", env=env), 1,
                          "error: feature 'demo-boom' of plugin 'core-demo-plugin' (vscen-core-demo 0.3.1) "
                          "failed in apply: RuntimeError: kaput")


def test_cli_invalid_set(env):
    assert_one_line_error(
        vscen("run", "core-demo", "--dry-run", "--connect", "test:///default", "--set", "./name/@colour=blue", env=env),
        EXIT_INVALID, "/domain/name (set by user (--set))")


def test_cli_debug_shows_the_traceback(env):
    proc = vscen("--debug", "run", "core-dmeo", env=env)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UsageError" in proc.stderr


def test_cli_unknown_option_is_a_usage_error(env):
    proc = vscen("run", "core-demo", "--colour", "blue", env=env)
    assert proc.returncode == EXIT_USAGE
    assert "Traceback" not in proc.stderr and "--colour" in proc.stderr


def test_cli_dry_run_prints_the_xml_and_changes_nothing(env, tmp_path):
    out = tmp_path / "out"
    proc = vscen("run", "core-demo", "--dry-run", "--connect", "test:///default", "--name", "c1",
                 "--output", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    r = etree.fromstring(proc.stdout.encode())
    assert r.findtext("name") == "c1" and r.findtext("description") == "core demo"
    assert f"would: write {out / 'c1' / 'domain.xml'}" in proc.stderr
    assert not out.exists()


def test_cli_run_writes_the_file(env, tmp_path):
    out = tmp_path / "out"
    proc = vscen("run", "core-demo", "--connect", "test:///default", "--name", "c2", "--output", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    written = (out / "c2" / "domain.xml").read_text()
    assert etree.fromstring(written.encode()).findtext("description") == "core demo"
    assert f"done: write {out / 'c2' / 'domain.xml'}" in proc.stdout


def test_run_takes_the_options_its_table_declares():
    """The command's parameters are made from OPTIONS; the function they are given to names
    the same parameters with the same defaults, and the command parses a real command line
    into them (paths as Path, repeated options as lists, flags as booleans)."""
    import inspect

    import typer

    from vscen.cli import run as run_module
    from vscen.registry import Registry

    params = inspect.signature(run_module.run).parameters
    assert [(n, d) for n, _, d, _, _ in run_module.OPTIONS] == [
        (p.name, p.default) for p in list(params.values())[1:] if p.kind is not p.VAR_KEYWORD]
    seen = {}
    function, cls = run_module.command(Registry())
    app = typer.Typer()
    app.command(cls=cls)(function)
    app.callback()(lambda: None)
    original = run_module.run
    run_module.run = lambda **values: seen.update(values)
    try:
        from typer.testing import CliRunner

        result = CliRunner().invoke(app, ["run", "a", "b", "--config", "/x.toml", "--host-facts", "/c.xml",
                                          "--host-facts", "/d.xml", "-f", "+tpm", "--force", "--wait", "2"])
    finally:
        run_module.run = original
    assert result.exit_code == 0, result.output
    assert seen["scenarios"] == ["a", "b"] and seen["config"] == Path("/x.toml")
    assert seen["host_facts"] == [Path("/c.xml"), Path("/d.xml")] and seen["feature"] == ["+tpm"]
    assert seen["force"] is True and seen["start"] is False and seen["wait"] == 2.0
    assert seen["disk"] is None and seen["output"] is None and seen["name"] is None
