"""vscen.testing, the plugin authors' test kit: its fixtures (loaded here, as in any project,
through vscen's pytest11 entry point), the recorded hosts it ships, golden files with
--vscen-regen, and what it must not do to other people's test sessions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest
from coresupport import Plug, builtin_plugin_names, load_tests_conftest, write_dist

from vscen import Check, Conflict, Feature, Scenario, Validator
from vscen.errors import RulesError, UsageError
from vscen.testing import DATA, HOSTS, compare_golden, host_files

RECORDED = load_tests_conftest()


def _describe(domain, ctx):
    domain.ensure("description").text(f"kit {ctx.settings.memory}")


KIT = Plug(
    features=[Feature(name="kit-describe", summary="d", apply=_describe),
              Feature(name="kit-left", summary="l", conflicts=(Conflict("kit-right", "they pull apart"),)),
              Feature(name="kit-right", summary="r")],
    scenarios=[Scenario(name="kit-box", summary="s", features=("kit-describe",), defaults={"memory": "3GiB"}),
               Scenario(name="kit-x86", summary="x", features=("kit-describe",), arches=("x86_64",))],
)


# -- recorded hosts ---------------------------------------------------------------------------

#: the kit's hosts and the recorded hosts (tests/data/hosts) they were made from (tests/conftest.py HOSTS)
SOURCES = {"amd-sev": "amd-sev", "intel-tdx": "intel-tdx", "kvm": "kvm", "local-tcg": "local-tcg", "aarch64": "aarch64"}


@pytest.mark.parametrize("host", sorted(SOURCES))
def test_each_shipped_host_gives_the_facts_of_its_recorded_files(host, vscen_host_facts):
    from vscen.host.facts import load_files

    shipped = vscen_host_facts(host)
    recorded = load_files(RECORDED.host_files(SOURCES[host]))
    differ = [f.name for f in fields(shipped) if f.name != "source" and getattr(shipped, f.name) != getattr(recorded, f.name)]
    assert differ == []
    assert shipped.has_domcaps and shipped.source == str(DATA / f"host-{host}.xml")


def test_every_host_name_has_its_file_with_its_origin():
    assert set(HOSTS) == set(SOURCES) | {"reference"}
    for name in SOURCES:
        [path] = host_files(name)
        head = path.read_text()[:600]
        assert head.startswith(f"<!-- vscen.testing host '{name}': ")
        assert "libvirt test data" in head or "recorded on a Debian 12 machine" in head
    assert host_files("reference") == [DATA / "reference-host.xml"]
    readme = (DATA / "README.md").read_text()
    assert all(f"host-{name}.xml" in readme for name in SOURCES) and "LGPL-2.1-or-later" in readme


def test_hosts_by_path_and_unknown_ones(tmp_path):
    snap = tmp_path / "snap.xml"
    snap.write_text("<hostFacts/>")
    assert host_files(str(snap)) == [snap] and host_files([snap, "kvm"]) == [snap, DATA / "host-kvm.xml"]
    with pytest.raises(UsageError) as err:
        host_files("amd")
    assert str(err.value) == ("host: 'amd' is neither a recorded host (amd-sev, intel-tdx, kvm, local-tcg, "
                              "aarch64, reference) nor an existing file")


# -- vscen_plugins and vscen_render -----------------------------------------------------------


def test_a_fresh_plugin_manager_with_chosen_plugins(vscen_plugins):
    loaded = vscen_plugins(("kit", KIT), entry_points=False)
    assert loaded.info("kit").status == "loaded" and loaded.warnings == []
    assert set(loaded.registry.scenarios) == {"kit-box", "kit-x86"}
    assert loaded.registry.plugin_of("kit-left") == "kit"
    again = vscen_plugins(entry_points=False)
    assert again.pm is not loaded.pm and again.registry.scenarios == {}
    with pytest.raises(LookupError, match="no plugin 'kit' .there are none.; is its distribution installed"):
        again.info("kit")


def test_render_on_a_recorded_host_with_settings(vscen_render):
    result = vscen_render("kit-box", plugins=[("kit", KIT)], entry_points=False, host="local-tcg")
    assert "<description>kit 3145728</description>" in result.xml  # the scenario's default memory
    assert result.xml.startswith('<domain type="qemu">')  # TCG host
    assert result.ctx.host.source == str(DATA / "host-local-tcg.xml")
    result = vscen_render(["kit-box"], plugins=[("kit", KIT)], entry_points=False, memory="1GiB", name="k1",
                          disk={"size": "5GiB", "cache": "none"}, sets=["./name=k2"])
    assert "<description>kit 1048576</description>" in result.xml and "<name>k2</name>" in result.xml
    assert result.settings.source("memory") == "option" and result.settings.disks[0].cache == "none"
    assert result.settings.disks[0].size == 5 * 1024**3
    assert result.customised == [("/domain/name", "k2")]


def test_render_raises_vscens_own_errors(vscen_render):
    with pytest.raises(RulesError) as err:
        vscen_render([], features=["kit-left", "kit-right"], plugins=[("kit", KIT)], entry_points=False)
    assert err.value.problems[0].startswith("feature 'kit-left' conflicts with feature 'kit-right': they pull apart")
    with pytest.raises(RulesError, match="scenario 'kit-x86' supports x86_64, not aarch64"):
        vscen_render("kit-x86", plugins=[("kit", KIT)], entry_points=False, host="aarch64")


def test_render_names_a_broken_plugin_in_a_note(vscen_render):
    broken = Plug(scenarios=[Scenario(name="kit-broken", summary="b", features=("no-such-feature",))])
    with pytest.raises(UsageError) as err:
        vscen_render("kit-broken", plugins=[("kit", KIT), ("bad", broken)], entry_points=False)
    assert "unknown scenario 'kit-broken'" in str(err.value)
    assert err.value.__notes__ == [
        "vscen: plugin 'bad' from (in-process) - is broken: scenario 'kit-broken' names unknown 'no-such-feature' "
        "(disable it with VSCEN_DISABLED_PLUGINS=bad)"]


def test_this_machines_config_and_environment_do_not_reach_the_kit(tmp_path):
    """In a pytest subprocess: the user's config sets memory and disables the installed plugin,
    the environment disables it too and adds a broken local plugin; the kit sees none of it."""
    config = tmp_path / "home" / "vscen" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('memory = "8GiB"\ndisabled_plugins = ["kit-demo"]\n')
    code = """
        from vscen import Scenario, hookimpl

        @hookimpl
        def vscen_register_scenarios(register):
            register(Scenario(name="kit-demo", summary="d"))
    """
    write_dist(tmp_path / "site", "vscen-kit-demo", "1.0", "kit-demo", "vscen_kit_demo", code)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "kitbroken.py").write_text("raise ImportError('broken')\n")
    test = """
        def test_it(vscen_render, vscen_plugins):
            loaded = vscen_plugins()
            assert loaded.info("kit-demo").status == "loaded" and loaded.warnings == []
            result = vscen_render("kit-demo")
            assert '<memory unit="KiB">2097152</memory>' in result.xml
    """
    proc = run_pytest(tmp_path, test, env_extra={
        "XDG_CONFIG_HOME": str(tmp_path / "home"), "VSCEN_DISABLED_PLUGINS": "kit-demo",
        "VSCEN_PLUGIN_PATH": str(tmp_path / "local"), "PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stdout
    assert "1 passed" in proc.stdout


def test_a_module_given_in_process_stands_in_for_its_entry_point(vscen_plugins, tmp_path, monkeypatch):
    site = tmp_path / "site"
    code = """
        from vscen import Feature, hookimpl

        @hookimpl
        def vscen_register_features(register):
            register(Feature(name="kit-ep", summary="from the entry point"))
    """
    write_dist(site, "vscen-kit-ep", "2.1", "kit-ep", "vscen_kit_ep", code)
    monkeypatch.syspath_prepend(str(site))
    import vscen_kit_ep

    try:
        builtins = builtin_plugin_names()
        installed = vscen_plugins(disabled=builtins)
        assert installed.info("kit-ep").distribution == "vscen-kit-ep"
        given = vscen_plugins(vscen_kit_ep, disabled=builtins)
        assert given.warnings == []  # not registered twice
        assert given.info("kit-ep").distribution == "(in-process)"
        assert given.registry.plugin_of("kit-ep") == "kit-ep"
        assert given.info("storage").status == "disabled" and given.info("storage").reason == "disabled in the test"
    finally:
        sys.modules.pop("vscen_kit_ep", None)


# -- vscen_validate ---------------------------------------------------------------------------


def test_validate_accepts_a_valid_domain(vscen_render, vscen_validate):
    vscen_validate(vscen_render("kit-box", plugins=[("kit", KIT)], entry_points=False).xml)


def test_validate_fails_naming_the_schema_error(vscen_validate):
    with pytest.raises(pytest.fail.Exception) as err:
        vscen_validate("<domain type='kvm'><name>x</name><memory>1024</memory><bogus/></domain>")
    assert str(err.value).startswith("not valid for libvirt's schema:\n  ")
    assert "/domain/bogus" in str(err.value)


def test_validate_fails_when_libvirt_refuses_what_the_schema_allows(vscen_validate):
    xml = textwrap.dedent("""\
        <domain type="test"><name>dup</name><memory>1048576</memory>
          <os><type>hvm</type></os>
          <devices>
            <disk type="file" device="disk"><source file="/a.img"/><target dev="vda" bus="virtio"/></disk>
            <disk type="file" device="disk"><source file="/b.img"/><target dev="vda" bus="virtio"/></disk>
          </devices>
        </domain>""")
    vscen_validate(xml, define=False)  # the schema alone cannot see it
    with pytest.raises(pytest.fail.Exception) as err:
        vscen_validate(xml)
    assert str(err.value).startswith("libvirt's test:///default driver refuses the domain: ")
    assert "vda" in str(err.value)


# -- golden files -----------------------------------------------------------------------------


def test_compare_golden(tmp_path):
    path = tmp_path / "g" / "x.xml"
    with pytest.raises(pytest.fail.Exception, match="no golden file .*x.xml: run pytest --vscen-regen"):
        compare_golden("<a/>\n", path, regen=False)
    compare_golden("<a/>\n", path, regen=True)
    assert path.read_text() == "<a/>\n"
    compare_golden("<a/>\n", path, regen=False)
    with pytest.raises(pytest.fail.Exception) as err:
        compare_golden("<b/>\n", path, regen=False)
    assert str(err.value).splitlines()[:5] == [
        f"{path} differs (review, then pytest --vscen-regen):", "--- x.xml (golden)", "+++ x.xml (now)",
        "@@ -1 +1 @@", "-<a/>"]


def run_pytest(where: Path, test: str, *args, env_extra=None) -> subprocess.CompletedProcess:
    """pytest in a fresh process, on a project of one test file: vscen.testing arrives through
    the pytest11 entry point, as in a plugin author's project."""
    import os

    (where / "proj" / "tests").mkdir(parents=True, exist_ok=True)
    (where / "proj" / "tests" / "test_demo.py").write_text(textwrap.dedent(test))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSCEN_") and k != "PYTHONPATH"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "tests"],
                          cwd=where / "proj", capture_output=True, text=True, env=env, timeout=300)


GOLDEN_TEST = '''
    from vscen import Scenario, hookimpl

    MEMORY = "{memory}"

    class Demo:
        @hookimpl
        def vscen_register_scenarios(self, register):
            register(Scenario(name="kit-demo", summary="d", defaults={{"memory": MEMORY}}))

    def test_golden(vscen_render, vscen_golden):
        result = vscen_render("kit-demo", plugins=[("demo", Demo())], entry_points=False, host="kvm")
        assert vscen_golden(result.xml, "kit-demo@kvm").name == "kit-demo@kvm.xml"
'''


def test_golden_files_with_vscen_regen_in_a_plugin_project(tmp_path):
    golden = tmp_path / "proj" / "tests" / "golden" / "kit-demo@kvm.xml"
    proc = run_pytest(tmp_path, GOLDEN_TEST.format(memory="1GiB"))
    assert proc.returncode == 1 and f"no golden file {golden}: run pytest --vscen-regen" in proc.stdout
    proc = run_pytest(tmp_path, GOLDEN_TEST.format(memory="1GiB"), "--vscen-regen")
    assert proc.returncode == 0, proc.stdout
    assert '<memory unit="KiB">1048576</memory>' in golden.read_text()
    assert run_pytest(tmp_path, GOLDEN_TEST.format(memory="1GiB")).returncode == 0
    proc = run_pytest(tmp_path, GOLDEN_TEST.format(memory="2GiB"))
    assert proc.returncode == 1 and "kit-demo@kvm.xml differs (review, then pytest --vscen-regen)" in proc.stdout
    assert '-  <memory unit="KiB">1048576</memory>' in proc.stdout
    assert '+  <memory unit="KiB">2097152</memory>' in proc.stdout
    help_text = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True,
                               cwd=tmp_path).stdout
    assert "--vscen-regen" in help_text


def test_bad_golden_names(vscen_golden):
    for name in ("a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="must be a file name"):
            vscen_golden("<a/>", name)


# -- a good guest in other people's test sessions ---------------------------------------------


def test_importing_the_kit_is_light():
    code = ("import sys, vscen.testing; print(sorted(m for m in ('lxml', 'libvirt', 'typer', "
            "'vscen.pipeline', 'vscen.settings', 'importlib_metadata', 'pytest') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_plain_helpers_work_without_pytest(tmp_path):
    """For scripts and other test runners: no pytest needed; a failed check is an AssertionError."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["pytest"] = None  # as if it were not installed
        from pathlib import Path
        from vscen.testing import compare_golden, host_files
        assert host_files("kvm")[0].is_file()
        try:
            compare_golden("<a/>", Path({str(tmp_path / "none.xml")!r}), regen=False)
        except AssertionError as exc:
            print("failed:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"failed: no golden file {tmp_path / 'none.xml'}")


def test_the_kit_changes_nothing_in_tests_that_do_not_use_it(tmp_path):
    """No autouse fixture: a test that uses none of the vscen_* fixtures keeps its environment."""
    test = '''
        import os

        def test_untouched():
            assert os.environ["VSCEN_DISABLED_PLUGINS"] == "x"
            assert os.environ["XDG_CONFIG_HOME"] == "/nowhere"
    '''
    proc = run_pytest(tmp_path, test, env_extra={"VSCEN_DISABLED_PLUGINS": "x", "XDG_CONFIG_HOME": "/nowhere"})
    assert proc.returncode == 0, proc.stdout


def test_host_checks_run_against_recorded_hosts(vscen_render):
    def no_kvm(ctx):
        if not ctx.host.kvm:
            yield Check("warn", "no KVM")

    plug = Plug(scenarios=[Scenario(name="kit-v", summary="v", validators=("kit-kvm",))],
                validators=[Validator(name="kit-kvm", summary="k", check=no_kvm)])
    assert [c.status for c in vscen_render("kit-v", plugins=[("v", plug)], entry_points=False, host="local-tcg").checks] == ["warn"]
    assert vscen_render("kit-v", plugins=[("v", plug)], entry_points=False, host="amd-sev").checks == []


def test_host_actions_plan_on_the_embedded_driver(vscen_render):
    from vscen import HostAction, Step

    def plan(ctx):
        if "default" in ctx.connection.conn.listNetworks():
            return []
        return [Step("define the default network", lambda: None)]

    plug = Plug(features=[Feature(name="kit-net", summary="n", host_actions=("kit-net",))],
                actions=[HostAction(name="kit-net", summary="n", plan=plan, undo=lambda c, r: None)])
    result = vscen_render([], features=["kit-net"], plugins=[("n", plug)], entry_points=False, keep_connection=True)
    assert result.ctx.uri == "test:///default" and result.connection.conn.isAlive()
    assert list(plan(result.ctx)) == []  # libvirt's test driver has an active network 'default'
    assert vscen_render([], features=["kit-net"], plugins=[("n", plug)], entry_points=False).connection is None
