"""Plan and apply on libvirt's embedded test driver (per process, in memory): atomic writes,
idempotence, refusal without --force, rollback of everything a failed run did."""

from __future__ import annotations

import uuid

import libvirt
import pytest
from coresupport import Plug

from vscen import Feature, HostAction, Scenario
from vscen.apply import apply as apply_steps
from vscen.apply import rollback, write_file
from vscen.errors import ExistsError, VscenError
from vscen.journal import Journal
from vscen.model import Step
from vscen.pipeline import Request, render
from vscen.plan import METADATA_NS, digest, make_plan


def plugins(description: str, actions=()):
    feat = Feature(name="describe", summary="d",
                   apply=lambda d, ctx: d.ensure("description").text(description),
                   host_actions=tuple(a.name for a in actions))
    return (("plan-test", Plug(features=[feat], actions=actions,
                               scenarios=[Scenario(name="plan-demo", summary="s", features=("describe",))])),)


@pytest.fixture
def results():
    """render(name, description) on test:///default; undefines the guests and closes the
    connections afterwards (the test driver's state lives as long as a connection does)."""
    made = []

    def make(name: str, description: str = "first", actions=()):
        result = render(Request(scenarios=["plan-demo"], plugins=plugins(description, actions),
                                entry_points=False, connect="test:///default", options={"name": name}))
        made.append(result)
        return result

    yield make
    for result in made:
        conn = result.connection.conn
        try:
            dom = conn.lookupByName(result.settings.name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass
        result.connection.close()


@pytest.fixture
def name():
    return f"plan-{uuid.uuid4().hex[:8]}"


def lookup(result):
    try:
        return result.connection.conn.lookupByName(result.settings.name)
    except libvirt.libvirtError as exc:
        assert exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
        return None


def apply(plan, result=None):
    """Apply *plan* with its journal, as ``vscen run`` does; returns the journal."""
    journal = Journal.open(plan.out_dir, "t", "test:///default")
    conn = result.connection if result is not None else None
    reg = result.ctx.registry if result is not None else None
    apply_steps(plan, journal, conn, reg)
    return journal


def stored_digest(dom):
    from lxml import etree

    meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    return etree.fromstring(meta.encode()).get("digest")


def test_plan_changes_nothing_and_apply_writes_and_defines(results, name, tmp_path):
    result = results(name)
    assert result.schema_checked  # (the define step: libvirt is asked to validate off this machine only)
    out = tmp_path / "out"
    plan = make_plan(result, out)
    assert [s.description for s in plan.steps] == [
        f"create {out / name}", f"write {out / name / 'domain.xml'}", "define domain on test:///default"]
    assert plan.xml_path == out / name / "domain.xml"
    assert not out.exists() and lookup(result) is None  # planning changed nothing
    journal = apply(plan, result)
    assert [e["record"]["kind"] for e in journal.entries] == ["dirs", "file", "domain"]
    path = out / name / "domain.xml"
    assert path.read_text() == result.xml
    assert path.stat().st_mode & 0o777 == 0o644
    assert journal.path.stat().st_mode & 0o777 == 0o600
    # no temporary left
    assert sorted(p.name for p in path.parent.iterdir()) == ["domain.xml", "journal.json"]
    dom = lookup(result)
    assert dom is not None and not dom.isActive()
    assert stored_digest(dom) == digest(result.xml)
    assert "<description>first</description>" in dom.XMLDesc(0)


def test_a_second_plan_is_all_unchanged(results, name, tmp_path):
    result = results(name)
    apply(make_plan(result, tmp_path), result)
    again = make_plan(result, tmp_path)
    assert again.steps == []
    assert again.unchanged == [f"{tmp_path / name / 'domain.xml'} is up to date",
                               f"domain {name} on test:///default is up to date"]
    # a fresh render of the same request is the same XML: unchanged as well
    assert make_plan(results(name), tmp_path).steps == []


def test_different_xml_for_the_same_name_is_refused_and_nothing_is_written(results, name, tmp_path):
    first = results(name, "first")
    apply(make_plan(first, tmp_path), first)
    path = tmp_path / name / "domain.xml"
    second = results(name, "second")
    assert second.xml != first.xml
    with pytest.raises(ExistsError) as exc:
        make_plan(second, tmp_path)
    assert len(exc.value.problems) == 2
    assert f"output: {path} exists with other content (use --force" in exc.value.problems[0]
    assert f"domain: '{name}' exists on test:///default with another definition" in exc.value.problems[1]
    assert path.read_text() == first.xml
    assert stored_digest(lookup(first)) == digest(first.xml)


def test_force_replaces_the_file_and_redefines_the_domain(results, name, tmp_path):
    first = results(name, "first")
    apply(make_plan(first, tmp_path), first)
    uuid_before = lookup(first).UUIDString()
    second = results(name, "second")
    plan = make_plan(second, tmp_path, force=True)
    assert [s.description for s in plan.steps] == [
        f"write {tmp_path / name / 'domain.xml'}", "redefine domain on test:///default"]
    apply(plan, second)
    assert (tmp_path / name / "domain.xml").read_text() == second.xml
    dom = lookup(second)
    assert stored_digest(dom) == digest(second.xml)
    assert "<description>second</description>" in dom.XMLDesc(0)
    assert dom.UUIDString() == uuid_before  # redefined, not a new domain
    assert make_plan(second, tmp_path).steps == []  # and now up to date


def explode(seen: dict, result):
    def do():
        dom = lookup(result)
        seen["defined"] = dom is not None
        seen["active"] = dom is not None and dom.isActive()
        raise RuntimeError("disk full")

    return Step("explode", do, owner="test")


def test_a_failure_rolls_back_the_file_the_directories_and_the_domain(results, name, tmp_path):
    result = results(name)
    out = tmp_path / "deep" / "out"
    plan = make_plan(result, out)
    seen: dict = {}
    plan.steps.append(explode(seen, result))
    with pytest.raises(VscenError) as exc:
        apply(plan, result)
    assert str(exc.value) == "explode: RuntimeError: disk full; rolled back what this run did"
    assert seen == {"defined": True, "active": False}  # it was there before the failure
    assert not (tmp_path / "deep").exists()
    assert lookup(result) is None


def test_start_starts_the_guest_and_rollback_destroys_and_undefines_it(results, name, tmp_path):
    result = results(name)
    plan = make_plan(result, tmp_path, start=True)
    assert plan.steps[-1].description == f"start domain {name}"
    seen: dict = {}
    plan.steps.append(explode(seen, result))
    with pytest.raises(VscenError):
        apply(plan, result)
    assert seen == {"defined": True, "active": True}
    assert lookup(result) is None
    assert not (tmp_path / name).exists()


def test_start_without_failure_leaves_it_running_and_a_second_run_changes_nothing(results, name, tmp_path):
    result = results(name)
    apply(make_plan(result, tmp_path, start=True), result)
    assert lookup(result).isActive()
    again = make_plan(result, tmp_path, start=True)
    assert again.steps == []
    assert f"domain {name} is running" in again.unchanged


def test_a_failed_forced_run_puts_back_the_old_file_and_definition(results, name, tmp_path):
    first = results(name, "first")
    apply(make_plan(first, tmp_path), first)
    second = results(name, "second")
    plan = make_plan(second, tmp_path, force=True)
    plan.steps.append(explode({}, second))
    with pytest.raises(VscenError, match="rolled back"):
        apply(plan, second)
    assert (tmp_path / name / "domain.xml").read_text() == first.xml
    dom = lookup(first)
    assert "<description>first</description>" in dom.XMLDesc(0)
    assert stored_digest(dom) == digest(first.xml)


def test_host_actions_are_planned_first_and_undone_on_failure(results, name, tmp_path):
    marker = tmp_path / "prepared"

    def plan_action(ctx):
        def do():
            marker.touch()
            return {"kind": "marker", "path": str(marker)}
        return [Step(f"prepare for {ctx.settings.name}", do)]

    undone = []
    action = HostAction(name="prepare", summary="p", plan=plan_action,
                        undo=lambda conn, record: (undone.append(record), marker.unlink()))
    result = results(name, actions=[action])
    plan = make_plan(result, tmp_path / "out")
    assert plan.steps[1].description == f"prepare for {name}" and plan.steps[1].owner == "prepare"
    assert not marker.exists()  # planning does nothing
    plan.steps.append(explode({}, result))
    with pytest.raises(VscenError):
        apply(plan, result)
    assert undone == [{"kind": "marker", "path": str(marker)}]
    assert not marker.exists() and lookup(result) is None
    assert not (tmp_path / "out").exists()


def test_rollback_takes_back_every_record_and_reports_what_it_could_not(tmp_path):
    log = []

    def undo(conn, record):
        if record["n"] == 2:
            raise OSError("busy")
        log.append(record["n"])

    registry = type("R", (), {"host_actions": {"a": HostAction(name="a", summary="a", plan=list, undo=undo)}})()
    journal = Journal(tmp_path / "journal.json", "t", "test:///default")
    entries = [journal.add("a", {"n": n}) for n in (1, 2, 3)]
    problems = rollback(entries, journal, None, registry)
    assert log == [3, 1]
    assert problems == ["a : busy"]
    assert [e["record"]["n"] for e in journal.entries] == [2]  # what stays is still recorded


def test_a_failing_step_of_a_host_action_rolls_back_the_earlier_ones(tmp_path):
    done, undone = [], []
    steps = [Step("one", lambda: done.append(1) or {"n": 1}, owner="a"),
             Step("two", lambda: done.append(2) or {"n": 2}, owner="a"),
             Step("three", lambda: (_ for _ in ()).throw(OSError("no space")), owner="a")]
    registry = type("R", (), {"host_actions": {"a": HostAction(
        name="a", summary="a", plan=list, undo=lambda conn, r: undone.append(r["n"]))}})()

    class P:
        pass

    plan = P()
    plan.steps = steps
    journal = Journal(tmp_path / "journal.json", "t", "test:///default")
    with pytest.raises(VscenError) as exc:
        apply_steps(plan, journal, None, registry)
    assert done == [1, 2] and undone == [2, 1]
    assert str(exc.value) == "three: OSError: no space; rolled back what this run did"
    assert journal.entries == [] and not journal.path.exists()


def test_write_file_record_restores_previous_content(tmp_path):
    from vscen.apply import UNDO

    path = tmp_path / "a" / "b.xml"
    path.parent.mkdir()
    path.write_text("old")
    inode = path.stat().st_ino
    record = write_file(path, "new").do()
    assert path.read_text() == "new" and "old" not in str(record)  # never text from the journal
    UNDO["file"](None, record, path.parent)
    # the very file that was there comes back (a hard link kept it), and nothing else stays
    assert path.read_text() == "old" and path.stat().st_ino == inode
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.xml"]


def test_libvirt_validates_what_vscen_did_not(tmp_path, name):
    """An XML that libvirt's schema refuses, rendered without vscen's own schema check (as for
    another libvirt), is refused by libvirt itself at define (VIR_DOMAIN_DEFINE_VALIDATE), and
    the run rolls back; where vscen checked it against this machine's schema files, libvirtd
    here is not asked to check it again."""
    from vscen import steps
    from vscen.errors import LibvirtError
    from vscen.host.connect import open_connection

    feat = Feature(name="odd", summary="d", apply=lambda d, ctx: d.ensure("devices").child("no-such-device"))
    plug = ("odd-test", Plug(features=[feat], scenarios=[Scenario(name="odd-demo", summary="s", features=("odd",))]))
    result = render(Request(scenarios=["odd-demo"], plugins=(plug,), entry_points=False, connect="test:///default",
                            options={"name": name}, schema=False))
    try:
        assert not result.schema_checked
        plan = make_plan(result, tmp_path / "out")
        with pytest.raises(VscenError, match="libvirt refused the domain"):
            apply(plan, result)
        assert lookup(result) is None and not (tmp_path / "out" / name).exists()
    finally:
        result.connection.close()
    conn = open_connection("test:///default")
    try:
        with pytest.raises(LibvirtError):
            steps.define(conn, result.xml, None).do()
        record = steps.define(conn, result.xml, None, validated=True).do()  # libvirt's parser alone
        assert record["name"] == name
    finally:
        conn.close()
