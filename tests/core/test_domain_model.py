"""The domain model: find-or-create, provenance, precedence, conflicts, libvirt order."""

from __future__ import annotations

import itertools

import pytest
from lxml import etree

from vscen.domain.model import LEVELS, Domain
from vscen.domain.order import ORDER


def xml(domain: Domain) -> str:
    root, _ = domain.render()
    return etree.tostring(root, encoding="unicode")


def rows(domain: Domain) -> dict[str, tuple[str, str]]:
    return {path: (value, who) for path, value, who in domain.explain()}


# -- finding and creating ---------------------------------------------------------------------


def test_ensure_finds_what_exists_and_creates_what_does_not():
    d = Domain()
    acpi = d.ensure("features/acpi")
    assert d.ensure("features/acpi") is acpi
    assert d.ensure("features") is acpi.parent
    assert [c.tag for c in d.children] == ["features"]
    assert [c.tag for c in d.find("features").children] == ["acpi"]


def test_child_matches_attributes_and_add_always_appends():
    d = Domain()
    clock = d.ensure("clock")
    rtc = clock.child("timer", name="rtc")
    assert clock.child("timer", name="rtc") is rtc
    pit = clock.child("timer", name="pit")
    assert pit is not rtc
    assert [t.get("name") for t in clock.findall("timer")] == ["rtc", "pit"]

    devices = d.ensure("devices")
    first = devices.add("disk", type="file", device="disk")
    second = devices.add("disk", type="file", device="disk")
    assert first is not second
    assert len(devices.findall("disk")) == 2
    cdrom = devices.add("disk", type="file", device="cdrom")
    assert d.find("devices/disk", device="cdrom") is cdrom
    assert d.find("devices/disk", device="floppy") is None
    assert d.find("devices/nothing") is None
    assert devices.findall("disk", device="disk") == [first, second]


def test_remove_takes_the_element_out():
    d = Domain()
    devices = d.ensure("devices")
    keep = devices.add("disk", device="disk")
    devices.add("disk", device="cdrom").remove()
    assert devices.findall("disk") == [keep]
    assert "cdrom" not in xml(d)


def test_values_are_strings_and_set_none_withdraws():
    d = Domain()
    with d.writer("a", "feature"):
        d.ensure("vcpu").text(4).set(current=2)
    assert d.find("vcpu").get() == "4"
    assert d.find("vcpu").attrs == {"current": "2"}
    with d.writer("b", "scenario"):
        d.find("vcpu").set(current=3)
    assert d.find("vcpu").get("current") == "3"
    with d.writer("b", "scenario"):
        d.find("vcpu").set(current=None)  # b withdraws: a's value is back
    assert d.find("vcpu").get("current") == "2"


@pytest.mark.parametrize("write", [
    lambda el: el.set(enabled=True),
    lambda el: el.set(enabled=False),
    lambda el: el.text(True),
    lambda el: el.child("feature", enabled=True),
    lambda el: el.add("feature", enabled=False),
])
def test_booleans_are_rejected(write):
    d = Domain()
    el = d.ensure("os/firmware")
    with pytest.raises(TypeError, match="yes'/'no"):
        write(el)
    assert el.writes == {}
    text = xml(d)
    assert "True" not in text and "False" not in text and "enabled" not in text


def test_writer_rejects_unknown_levels_and_restores_the_previous_writer():
    d = Domain()
    with pytest.raises(ValueError, match="level"):
        with d.writer("x", "plugin"):
            pass
    with pytest.raises(RuntimeError):
        with d.writer("x", "feature"):
            raise RuntimeError("inside")
    assert (d.current.plugin, d.current.level) == ("vscen", "default")


# -- provenance -------------------------------------------------------------------------------


def test_explain_names_the_plugin_and_level_of_every_element_and_value():
    d = Domain()
    with d.writer("cpu-plugin", "feature"):
        d.ensure("cpu").set(mode="host-passthrough", migratable="off")
    with d.writer("clock-plugin", "scenario"):
        d.ensure("clock").set(offset="utc").child("timer", name="rtc").set(tickpolicy="catchup")
    r = rows(d)
    assert r["/domain/cpu"] == ("", "cpu-plugin (feature)")
    assert r["/domain/cpu/@mode"] == ("host-passthrough", "cpu-plugin (feature)")
    assert r["/domain/cpu/@migratable"] == ("off", "cpu-plugin (feature)")
    assert r["/domain/clock/@offset"] == ("utc", "clock-plugin (scenario)")
    assert r["/domain/clock/timer"] == ("", "clock-plugin (scenario)")
    assert r["/domain/clock/timer/@tickpolicy"] == ("catchup", "clock-plugin (scenario)")
    assert r["/domain"] == ("", "vscen (default)")


def test_explain_says_what_a_higher_level_overrode():
    d = Domain()
    with d.writer("cpu-plugin", "feature"):
        d.ensure("cpu").set(mode="host-passthrough")
    with d.writer("option", "user"):
        d.ensure("cpu").set(mode="host-model")
    value, who = rows(d)["/domain/cpu/@mode"]
    assert value == "host-model"
    assert who == "option (user); overrides cpu-plugin (feature) wanted 'host-passthrough'"


# -- precedence -------------------------------------------------------------------------------

WRITES = [("vscen", "default", "d"), ("feat", "feature", "f"), ("scen", "scenario", "s"),
          ("me", "user", "u")]


def _build(writes) -> Domain:
    d = Domain()
    for plugin, level, value in writes:
        with d.writer(plugin, level):
            d.ensure("clock").set(offset=value)
            d.ensure("on_crash").text(value)
    return d


@pytest.mark.parametrize("order", list(itertools.permutations(WRITES)),
                         ids=lambda o: ">".join(w[1] for w in o))
def test_user_beats_scenario_beats_feature_beats_default_whatever_writes_first(order):
    d = _build(order)
    assert d.find("clock").get("offset") == "u"
    assert d.find("on_crash").get() == "u"
    assert d.conflicts() == []
    assert xml(d) == xml(_build(WRITES))


@pytest.mark.parametrize("present,winner", [
    (("default", "feature", "scenario"), "s"),
    (("default", "feature"), "f"),
    (("default", "scenario"), "s"),
    (("feature", "user"), "u"),
    (("default",), "d"),
])
def test_highest_present_level_wins_in_either_order(present, winner):
    writes = [w for w in WRITES if w[1] in present]
    for order in (writes, writes[::-1]):
        d = _build(order)
        assert d.find("clock").get("offset") == winner
        assert d.find("on_crash").get() == winner


def test_levels_are_ordered_as_documented():
    assert LEVELS == ("default", "feature", "scenario", "user", "set")


# -- conflicts --------------------------------------------------------------------------------


def _two_features(first, second):
    d = Domain()
    for plugin, value in (first, second):
        with d.writer(plugin, "feature"):
            d.ensure("clock").set(offset=value)
    return d


def test_two_plugins_of_one_level_setting_different_values_conflict():
    for order in ((("a", "utc"), ("b", "localtime")), (("b", "localtime"), ("a", "utc"))):
        d = _two_features(*order)
        [problem] = d.conflicts()
        assert problem.startswith("/domain/clock/@offset: ")
        assert "'a' sets 'utc'" in problem and "'b' sets 'localtime'" in problem
        assert "feature level" in problem


def test_text_conflicts_are_reported_on_the_element_path():
    d = Domain()
    for plugin, value in (("a", "destroy"), ("b", "restart")):
        with d.writer(plugin, "scenario"):
            d.ensure("on_crash").text(value)
    [problem] = d.conflicts()
    assert problem.startswith("/domain/on_crash: ")
    assert "scenario level" in problem


def test_no_conflict_when_the_values_agree():
    d = _two_features(("a", "utc"), ("b", "utc"))
    assert d.conflicts() == []
    assert d.find("clock").get("offset") == "utc"


@pytest.mark.parametrize("level", ["scenario", "user"])
def test_no_conflict_when_a_higher_level_decides(level):
    d = _two_features(("a", "utc"), ("b", "localtime"))
    with d.writer("boss", level):
        d.ensure("clock").set(offset="localtime")
    assert d.conflicts() == []
    assert d.find("clock").get("offset") == "localtime"


def test_a_conflict_among_lower_levels_does_not_count_but_one_at_the_top_does():
    d = _two_features(("a", "utc"), ("b", "localtime"))
    for plugin, value in (("s1", "utc"), ("s2", "variable")):
        with d.writer(plugin, "scenario"):
            d.ensure("clock").set(offset=value)
    [problem] = d.conflicts()
    assert "'s1' sets 'utc'" in problem and "'s2' sets 'variable'" in problem
    assert "'a'" not in problem and "scenario level" in problem


def test_the_users_set_decides_a_conflict_and_only_that_one():
    d = _two_features(("a", "utc"), ("b", "localtime"))
    for plugin, value in (("a", "destroy"), ("b", "restart")):
        with d.writer(plugin, "feature"):
            d.ensure("on_crash").text(value)
    assert len(d.conflicts()) == 2
    assert d.customise(["./clock/@offset=utc"]) == [("/domain/clock/@offset", "utc")]
    [left] = d.conflicts()
    assert left.startswith("/domain/on_crash:")
    d.customise(["./on_crash=preserve"])
    assert d.conflicts() == []
    root, _ = d.render()
    assert root.find("on_crash").text == "preserve" and root.find("clock").get("offset") == "utc"
    assert ("/domain/on_crash", "preserve", "user (--set), was 'restart' from b (feature)") in d.explain()


def test_a_plugin_rewriting_its_own_value_is_no_conflict():
    d = Domain()
    with d.writer("a", "feature"):
        d.ensure("clock").set(offset="utc")
        d.ensure("clock").set(offset="localtime")
    assert d.conflicts() == []
    assert d.find("clock").get("offset") == "localtime"
    assert [value for value, _ in d.find("clock").writes["offset"]] == ["localtime"]


# -- order and determinism --------------------------------------------------------------------


def test_children_follow_libvirt_order_whatever_the_insertion_order():
    tags = ["devices", "launchSecurity", "clock", "cpu", "features", "os", "vcpu", "memory",
            "name", "on_crash", "memoryBacking", "description"]
    for order in (tags, tags[::-1], sorted(tags)):
        d = Domain()
        for tag in order:
            d.ensure(tag)
        root, _ = d.render()
        got = [c.tag for c in root]
        assert got == sorted(tags, key=ORDER["domain"].index)
        assert got.index("os") < got.index("devices")
        assert got[0] == "name"


def test_nested_children_follow_libvirt_order_and_unknown_tags_keep_insertion_order():
    d = Domain()
    os_ = d.ensure("os")
    os_.add("boot", dev="hd")
    os_.ensure("loader")
    os_.ensure("type").text("hvm")
    devices = d.ensure("devices")
    devices.add("zzz-unknown", n=1)
    devices.add("interface", type="network")
    devices.add("aaa-unknown", n=2)
    devices.add("disk", device="disk", n=1)
    devices.add("emulator")
    devices.add("disk", device="cdrom", n=2)
    root, _ = d.render()
    assert [c.tag for c in root.find("os")] == ["type", "loader", "boot"]
    got = [(c.tag, c.get("n")) for c in root.find("devices")]
    assert got == [("emulator", None), ("disk", "1"), ("disk", "2"), ("interface", None),
                   ("zzz-unknown", "1"), ("aaa-unknown", "2")]


def _full_build() -> bytes:
    d = Domain()
    with d.writer("f1", "feature"):
        d.ensure("devices").add("disk", type="file", device="disk").ensure("driver").set(name="qemu", type="raw")
        d.ensure("features/acpi")
        d.ensure("cpu").set(mode="host-passthrough").ensure("topology").set(sockets=1, cores=2, threads=1)
    with d.writer("s1", "scenario"):
        d.ensure("memory").set(unit="KiB").text(4194304)
        d.ensure("os/type").set(arch="x86_64").text("hvm")
    with d.writer("vscen", "default"):
        d.ensure("name").text("vm")
    root, _ = d.render()
    return etree.tostring(root, pretty_print=True)


def test_two_builds_are_byte_identical():
    first, second = _full_build(), _full_build()
    assert first == second
    assert first.index(b"<name>") < first.index(b"<memory") < first.index(b"<os>") < first.index(b"<devices>")


# -- namespaced elements (another application's data in <metadata>) ----------------------------


def test_a_namespaced_element_is_serialised_with_its_declared_prefix():
    d = Domain()
    with d.writer("meta", "feature"):
        app = d.ensure("metadata").child("app:app").namespace("app", "http://example.org/app/1.0")
        app.child("app:os", id="http://example.org/os/1")
        assert d.ensure("metadata").child("app:app") is app
    assert xml(d) == ('<domain><metadata><app:app xmlns:app="http://example.org/app/1.0">'
                      '<app:os id="http://example.org/os/1"/></app:app></metadata></domain>')
    assert rows(d)["/domain/metadata/app:app/app:os/@id"] == ("http://example.org/os/1", "meta (feature)")


def test_an_undeclared_or_redeclared_prefix_is_refused():
    d = Domain()
    d.ensure("metadata").child("app:app")
    with pytest.raises(ValueError, match="no namespace declared for prefix 'app'"):
        d.render()
    app = d.find("metadata/app:app").namespace("app", "http://example.org/a")
    with pytest.raises(ValueError, match="declared already"):
        app.namespace("app", "http://example.org/b")
