"""Host facts provided by plugins (``vscen_register_facts``): read once at the facts stage,
recorded by snapshots and replayed from them, bounded when read back, and a misbehaving
provider named without stopping the others. Inline plugins only; plus the CPU flags a named
model implies (libvirt's cpu_map, here a small one written by the test)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from coresupport import Plug, load_tests_conftest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lxml import etree

from vscen import FactProvider, Feature, Scenario, Setting, UsageError, hookimpl
from vscen.host.facts import HostFacts, load_files, reference, snapshot
from vscen.pipeline import Request, render

conftest = load_tests_conftest()


class FactPlug:
    """An in-process plugin registering fact providers."""

    def __init__(self, *providers):
        self.providers = providers

    @hookimpl
    def vscen_register_facts(self, register):
        for p in self.providers:
            register(p)


def describe_facts(*names):
    """A feature writing the facts *names* into the description, as JSON."""
    def apply(domain, ctx):
        domain.ensure("description").text(json.dumps({n: ctx.host.fact(n) for n in names}, sort_keys=True))
    return Feature(name="show-facts", summary="facts in the description", apply=apply, facts=names)


def run(plugins, names=(), **kw):
    feature = describe_facts(*names)
    plugins = [("demo", Plug(features=[feature], scenarios=[Scenario(name="demo", summary="d",
                                                                        features=("show-facts",))])),
               *plugins]
    kw.setdefault("options", {"name": "facts"})
    if not kw.get("host_facts"):
        kw.setdefault("connect", "test:///default")
    result = render(Request(scenarios=["demo"], plugins=tuple(plugins), entry_points=False, **kw),
                    keep_connection=False)
    return result, json.loads(etree.fromstring(result.xml.encode()).findtext("description"))


def provider(name, read, **kw):
    return FactProvider(name=name, summary=f"the {name}", read=read, **kw)


# -- the facts stage ----------------------------------------------------------------------------


def test_providers_read_once_with_the_probe_and_see_earlier_facts():
    seen = []

    def first(probe):
        seen.append((probe.connection.uri, probe.local, probe.settings.name, probe.host.arch))
        return {"count": 2, "ids": (1, 2)}  # a tuple: kept as JSON gives it back

    def second(probe):
        return probe.host.fact("a.first")["count"] + 1

    result, shown = run([("a", FactPlug(provider("a.first", first), provider("a.second", second)))],
                        names=("a.first", "a.second"))
    # the embedded driver is not this machine: local is False
    assert seen == [("test:///default", False, "facts", "x86_64")]
    assert shown == {"a.first": {"count": 2, "ids": [1, 2]}, "a.second": 3}
    assert result.warnings == []


def test_recorded_hosts_give_no_connection_and_recorded_facts_are_not_read_again(tmp_path):
    calls = []

    def read(probe):
        calls.append(probe.connection)
        return None if probe.connection is None else "live"

    plug = [("a", FactPlug(provider("a.fact", read)))]
    _, shown = run(plug, names=("a.fact",), host_facts=conftest.host_files("amd-sev"))
    assert calls == [None] and shown == {"a.fact": None}
    # a snapshot holding the fact replays it; the provider is not asked
    path = tmp_path / "snap.xml"
    caps, domcaps = (p.read_text() for p in conftest.host_files("amd-sev"))
    path.write_text(snapshot(caps, domcaps, uri="qemu+ssh://far/system", facts={"a.fact": "recorded"}))
    calls.clear()
    _, shown = run(plug, names=("a.fact",), host_facts=[path])
    assert calls == [] and shown == {"a.fact": "recorded"}


@pytest.mark.parametrize("read, what", [
    (lambda probe: 1 / 0, "ZeroDivisionError: division by zero"),
    (lambda probe: {"when": object()}, "TypeError: not plain JSON-able data"),
    (lambda probe: float("nan"), "ValueError: not plain JSON-able data"),
])
def test_a_misbehaving_provider_is_a_warning_naming_fact_and_plugin(read, what):
    plugins = [("broken-facts", FactPlug(provider("broken.fact", read))),
               ("good-facts", FactPlug(provider("good.fact", lambda probe: "fine")))]
    result, shown = run(plugins, names=("broken.fact", "good.fact"))
    assert shown == {"broken.fact": None, "good.fact": "fine"}  # the others keep working
    [warning] = result.warnings
    assert warning.startswith("plugin 'broken-facts' from (in-process) -: fact 'broken.fact' could not be "
                              "read: " + what)
    assert warning.endswith("it is unknown to this run")


def test_a_provider_raising_a_usage_error_stops_the_run():
    def read(probe):
        raise UsageError("--thing: 'x' cannot be read")

    with pytest.raises(UsageError, match="--thing: 'x' cannot be read"):
        run([("a", FactPlug(provider("a.fact", read)))], names=("a.fact",))


class ThingPlug(FactPlug):
    """A provider reading its plugin's setting 'thing'."""

    @hookimpl
    def vscen_register_settings(self, register):
        register(Setting(name="thing", repeatable=True, help="Things to read."))


def test_only_the_facts_the_chosen_items_name_are_read():
    read = []
    plugins = [("a", FactPlug(provider("a.fact", lambda p: read.append("a.fact") or [1]),
                              provider("a.other", lambda p: read.append("a.other") or [2])))]
    result, shown = run(plugins, names=("a.fact",))
    assert read == ["a.fact"] and shown == {"a.fact": [1]}
    assert "a.other" not in result.ctx.host.extra


def test_a_setting_whose_fact_no_chosen_item_reads_gives_the_providers_note():
    plugins = [("a", ThingPlug(provider("a.fact", lambda p: list(p.settings.thing), setting="thing",
                                        unused="--thing: nobody looks at it; ignored")))]
    result, _ = run(plugins, options={"name": "facts", "thing": ["x"]})
    assert "--thing: nobody looks at it; ignored" in result.ctx.notes
    result, shown = run(plugins, names=("a.fact",), options={"name": "facts", "thing": ["x"]})
    assert "--thing: nobody looks at it; ignored" not in result.ctx.notes and shown == {"a.fact": ["x"]}
    result, _ = run(plugins)  # not given: nothing to say
    assert "--thing: nobody looks at it; ignored" not in result.ctx.notes


# -- snapshots: written and read back, bounded ------------------------------------------------


def test_snapshot_round_trip_of_plugin_facts(tmp_path):
    caps, domcaps = (p.read_text() for p in conftest.host_files("amd-sev"))
    facts = {"b.devices": {"pci": [{"address": "0000:03:00.0", "group": 14}], "usb": []},
             "a.list": ["x", "<y & 'z'>"], "a.none": None, "a.number": 2.5, "a.flag": False}
    path = tmp_path / "snap.xml"
    path.write_text(snapshot(caps, domcaps, facts=facts))
    back = load_files([path])
    assert back.extra == {k: v for k, v in facts.items() if v is not None}
    assert back.fact("a.none", "default") == "default" and back.fact("a.flag") is False
    assert replace(back, extra={}) == replace(load_files(conftest.host_files("amd-sev")), source=back.source)


def hostile(tmp_path, facts_xml: str):
    text = snapshot(*(p.read_text() for p in conftest.host_files("amd-sev")))
    path = tmp_path / "hostile.xml"
    path.write_text(text.replace("</hostFacts>", facts_xml + "</hostFacts>"))
    return path


@pytest.mark.parametrize("facts_xml, message", [
    ("<facts><fact name='a'>" + "[" * 5000 + "]" * 5000 + "</fact></facts>", "fact 'a' nests deeper than 32 levels"),
    ("<facts><fact name='a'>\"" + "x" * (4 << 20) + "\"</fact></facts>", "fact 'a' is 4194306 characters of JSON"),
    ("<facts><fact name='a'>{not json</fact></facts>", "fact 'a' is not valid JSON"),
    ("<facts><fact name='a'>NaN</fact></facts>", "fact 'a' is not valid JSON (NaN is not JSON)"),
    ("<facts><fact name='a'>1</fact><fact name='a'>2</fact></facts>", "fact 'a' is recorded twice"),
    ("<facts><fact name='a'>[1e999999]</fact></facts>", "fact 'a' is not valid JSON (1e999999 is out of range)"),
    ("<facts><fact name='a'>" + "9" * 5000 + "</fact></facts>", "fact 'a' is not valid JSON"),
    ("<facts><fact name='a'>[<b/>]</fact></facts>", "fact 'a' holds elements; a fact is JSON text"),
    ("<facts><fact>1</fact></facts>", "<facts> holds <fact name='...'> elements only, not <fact> without a name"),
    ("<facts><script/></facts>", "<facts> holds <fact name='...'> elements only, not <script>"),
    ("<facts>" + "".join(f"<fact name='f{i}'>1</fact>" for i in range(300)) + "</facts>", "more than 256 facts"),
])
def test_hostile_snapshot_content_is_a_usage_error_naming_the_file(tmp_path, facts_xml, message):
    path = hostile(tmp_path, facts_xml)
    with pytest.raises(UsageError) as exc:
        load_files([path])
    assert str(exc.value).startswith(f"--host-facts {path}: ")
    assert message in str(exc.value)


def test_brackets_in_strings_do_not_count_as_nesting(tmp_path):
    path = hostile(tmp_path, "<facts><fact name='a'>" + json.dumps(["[" * 100 + "\\\"{"]) + "</fact></facts>")
    assert load_files([path]).fact("a") == ["[" * 100 + "\\\"{"]


def test_entities_are_not_expanded(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me")
    text = snapshot(*(p.read_text() for p in conftest.host_files("amd-sev")), facts={"a": "x"})
    text = (f'<!DOCTYPE hostFacts [<!ENTITY leak SYSTEM "file://{secret}">]>\n'
            + text.replace('"x"</fact>', '"&leak;"</fact>'))
    path = tmp_path / "entity.xml"
    path.write_text(text)
    try:
        got = load_files([path]).fact("a")
    except UsageError:
        return  # refused: as good
    assert "do not read me" not in json.dumps(got)


def test_the_embedded_driver_reference_host_reads_provider_facts_with_its_connection():
    result, shown = run([("a", FactPlug(provider("a.uri", lambda p: p.connection.uri)))], names=("a.uri",))
    assert shown == {"a.uri": "test:///default"}
    assert result.ctx.host.source == reference().source


# -- CPU flags from libvirt's cpu_map ----------------------------------------------------------


def write_cpu_map(root):
    root.mkdir()
    (root / "index.xml").write_text(
        "<cpus><arch name='x86'><include filename='x86_features.xml'/>"
        "<include filename='x86_Base.xml'/><include filename='x86_Child.xml'/>"
        "<include filename='x86_missing.xml'/></arch></cpus>")
    (root / "x86_features.xml").write_text("<cpus><feature name='sse'/></cpus>")
    (root / "x86_Base.xml").write_text(
        "<cpus><model name='Base'><vendor name='AMD'/><feature name='sse'/><feature name='sse2'/></model></cpus>")
    (root / "x86_Child.xml").write_text(
        "<cpus><model name='Child'><model name='Base'/><feature name='avx'/></model></cpus>")
    return root


def test_model_features_follow_the_cpu_map(tmp_path):
    from vscen.host.cpumap import model_features

    cpu_map = write_cpu_map(tmp_path / "cpu_map")
    assert model_features("x86_64", "Base", cpu_map) == {"sse", "sse2"}
    assert model_features("x86_64", "Child", cpu_map) == {"sse", "sse2", "avx"}
    assert model_features("x86_64", "Unknown", cpu_map) == frozenset()
    assert model_features("x86_64", "Base", tmp_path / "nowhere") == frozenset()  # not installed


def test_cpu_flags_are_the_models_plus_required_less_disabled(tmp_path, monkeypatch):
    from vscen.host import cpumap

    monkeypatch.setattr(cpumap, "CPU_MAP_DIR", write_cpu_map(tmp_path / "cpu_map"))
    facts = HostFacts(source="t", host_model="Child",
                      host_model_features=(("require", "x2apic"), ("disable", "sse2")))
    assert facts.cpu_flags == ("avx", "sse", "x2apic")
    monkeypatch.setattr(cpumap, "CPU_MAP_DIR", tmp_path / "nowhere")
    facts = HostFacts(source="t", host_model="Child",
                      host_model_features=(("require", "x2apic"), ("disable", "sse2")))
    assert facts.cpu_flags == ("x2apic",)  # no cpu_map: the explicit features only
    assert HostFacts(source="t").cpu_flags == ()


def test_vscen_host_json_shows_the_flags():
    from vscen.cli.host import view
    from vscen.validate import Support

    facts = load_files(conftest.host_files("amd-sev"))
    data = view(facts, None, Support.installed())
    assert data["cpu"]["flags"] == list(facts.cpu_flags)
    assert {"x2apic", "invtsc"} <= set(data["cpu"]["flags"])  # domcaps' own, with or without a cpu_map


# -- on the command line -----------------------------------------------------------------------


FACTS_PLUGIN = '''
from vscen import FactProvider, hookimpl


def _boom(probe):
    raise RuntimeError("the sensor is gone")


@hookimpl
def vscen_register_facts(register):
    register(FactProvider(name="demo.uri", summary="the URI", read=lambda probe: probe.connection.uri))
    register(FactProvider(name="demo.boom", summary="fails", read=_boom))
'''


def test_snapshot_on_the_command_line_records_facts_and_names_a_failing_provider(tmp_path):
    from coresupport import cli_env, vscen

    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "demo_facts.py").write_text(FACTS_PLUGIN)
    env = cli_env(VSCEN_PLUGIN_PATH=str(tmp_path / "local"))
    proc = vscen("host", "snapshot", "--connect", "test:///default", env=env)
    assert proc.returncode == 0, proc.stderr
    [warning] = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: plugin 'demo_facts' from ")
    assert warning.endswith(": fact 'demo.boom' could not be read: RuntimeError: the sensor is gone; "
                            "it is unknown to this run")
    path = tmp_path / "snap.xml"
    path.write_text(proc.stdout)
    back = load_files([path])
    assert back.extra == {"demo.uri": "test:///default"}
    assert replace(back, extra={}) == replace(reference(), source=str(path))


SHOW_PLUGIN = '''
from vscen import FactProvider, hookimpl


def _show(value, host, support):
    return [("demo uri", f"{value} on {host.arch}")]


def _broken(value, host, support):
    raise RuntimeError("cannot draw")


@hookimpl
def vscen_register_facts(register):
    register(FactProvider(name="demo.uri", summary="the URI", read=lambda probe: probe.connection.uri,
                          show=_show))
    register(FactProvider(name="demo.quiet", summary="JSON only", read=lambda probe: 7))
    register(FactProvider(name="demo.broken", summary="cannot show", read=lambda probe: 1, show=_broken))
'''


def test_vscen_host_shows_the_plugins_facts(tmp_path):
    """A provider's ``show`` adds rows to ``vscen host``, after kvm; every fact is in --json's
    ``facts``; a ``show`` that raises is a warning naming the plugin."""
    from coresupport import cli_env, vscen

    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "demo_show.py").write_text(SHOW_PLUGIN)
    env = cli_env(VSCEN_PLUGIN_PATH=str(tmp_path / "local"))
    proc = vscen("host", "--connect", "test:///default", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    kvm = next(i for i, line in enumerate(lines) if line.startswith("kvm "))
    assert lines[kvm + 1].split() == ["demo", "uri", "test:///default", "on", "x86_64"]
    assert "demo.quiet" not in proc.stdout
    assert ("warning: plugin 'demo_show': fact 'demo.broken' could not be shown: RuntimeError: "
            "cannot draw") in proc.stderr
    proc = vscen("host", "--json", "--connect", "test:///default", env=env)
    assert json.loads(proc.stdout)["facts"] == {"demo.broken": 1, "demo.quiet": 7, "demo.uri": "test:///default"}


def _as_json_gives_it_back(value):
    try:
        return "ok", json.loads(json.dumps(value, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, None


_KEYS = st.one_of(st.text(max_size=4), st.integers(-5, 5), st.booleans(), st.none(),
                  st.floats(allow_nan=True, allow_infinity=True))
_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(_KEYS, inner, max_size=4), st.frozensets(st.integers(), max_size=2)),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
@example({float("inf"): {"": None, 0: None}})  # the key's error before the value's
def test_plain_is_what_json_gives_back(value):
    from vscen.host.providers import plain

    expected = _as_json_gives_it_back(value)
    try:
        got = ("ok", plain(value))
    except (TypeError, ValueError) as exc:
        got = (type(exc).__name__, None)
    assert got == expected
    if got[0] == "ok":
        assert repr(got[1]) == repr(expected[1])  # the same types and key order too
