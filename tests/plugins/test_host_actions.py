"""The host actions of the built-in plugins: ``network`` (vscen_networks), ``hugepages``
(vscen_hugepages) and ``host-tuning`` (vscen_host_tuning).

On the real daemon (qemu:///system) the tests use only what they create, under unique names:
isolated networks without ``<ip>`` (no DHCP, no NAT, no addresses), a few 2 MiB huge pages
whose counts are restored afterwards. Skipped where no daemon runs, except in CI. Host tuning
is tested against a fake sysfs tree, plus one real round trip where /sys/kernel/mm/ksm/run is
writable, restored afterwards.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import vscen_host_tuning
import vscen_hugepages
import vscen_networks
from conftest import host_files, system_or_skip
from lxml import etree

from vscen import host_identity
from vscen.apply import apply, rollback
from vscen.errors import ExistsError, HostError, RulesError, UsageError, VscenError
from vscen.journal import Journal
from vscen.plan import make_plan

SYSTEM = "qemu:///system"


def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def system_conn():
    conn = system_or_skip()
    yield conn
    conn.close()


def on_system(results, add, name=None, **options):
    """Render features *add* for qemu:///system (TCG), a small guest."""
    opts = {"name": name or f"vst-{uid()}", "virt_type": "qemu", "memory": "64MiB", "vcpu": 1,
            "network": "none", **options}
    return results(scenarios=[], add=list(add), connect=SYSTEM, options=opts)


def on_recorded(results, host, scenarios=(), add=(), **options):
    """Render on a recorded host (the guest goes to the embedded test driver)."""
    return results(scenarios=list(scenarios), add=list(add), host_facts=host_files(host),
                   options={"name": f"vst-{uid()}", **options})


def actions(result):
    return result.ctx.registry.host_actions


# -- network -----------------------------------------------------------------------------------


def lookup_network(conn, name):
    import libvirt

    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        assert exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK
        return None


def remove_network(conn, name) -> None:
    net = lookup_network(conn, name)
    if net is None:
        return
    if net.isActive():
        net.destroy()
    if net.isPersistent():
        net.undefine()


@pytest.fixture
def net_names(system_conn):
    """Unique network names; whatever exists under them is removed afterwards."""
    names = []

    def make():
        names.append(f"vst{uid()}")
        return names[-1]

    yield make
    for name in names:
        remove_network(system_conn, name)


def test_network_missing_is_defined_isolated_then_unchanged_then_started(system_conn, results, net_names):
    name = net_names()
    action = None
    result = on_system(results, ["network"], network=f"network={name}")
    action = actions(result)["network"]
    assert lookup_network(system_conn, name) is None
    steps = action.plan(result.ctx)
    assert lookup_network(system_conn, name) is None, "planning defined the network"
    assert [s.description for s in steps] == [
        f"define and start network {name} on {SYSTEM} (isolated: no DHCP, no NAT)"]
    assert any(f"'{name}' does not exist" in n and "isolated" in n and "net-edit" in n
               for n in result.ctx.notes)

    defined = steps[0].do()
    net = lookup_network(system_conn, name)
    assert net is not None and net.isActive() and net.isPersistent() and net.autostart()
    xml = etree.fromstring(net.XMLDesc(0).encode())
    assert xml.find("ip") is None and xml.find("forward") is None  # isolated: no addresses, no NAT
    assert defined == {"kind": "network", "name": name, "uuid": net.UUIDString(), "defined": True,
                       "started": True, "autostart": True}

    # a second run changes nothing
    again = on_system(results, ["network"], network=f"network={name}")
    assert action.plan(again.ctx) == []
    assert f"network {name} on {SYSTEM} exists and is active: unchanged" in again.ctx.notes

    # stopped: the next run only starts it, and undoing that stops it again
    net.destroy()
    third = on_system(results, ["network"], network=f"network={name}")
    steps = action.plan(third.ctx)
    assert [s.description for s in steps] == [f"start network {name} on {SYSTEM}"]
    started = steps[0].do()
    assert started == {"kind": "network-started", "name": name, "uuid": net.UUIDString()}
    assert net.isActive()
    action.undo(result.connection, started)
    assert not net.isActive() and lookup_network(system_conn, name) is not None  # still defined
    action.undo(result.connection, started)  # already stopped: fine

    # undoing the definition removes it, also when it is running
    net.create()
    action.undo(result.connection, defined)
    assert lookup_network(system_conn, name) is None
    action.undo(result.connection, defined)  # gone already: fine


def test_network_step_journalled_and_rolled_back_with_the_run(system_conn, results, net_names, tmp_path):
    name = net_names()
    result = on_system(results, ["network"], network=f"network={name}")
    plan = make_plan(result, tmp_path, define=False)
    journal = Journal.open(plan.out_dir, result.settings.name, SYSTEM)
    apply(plan, journal, result.connection, result.ctx.registry)
    assert [e["owner"] for e in journal.entries] == ["vscen", "network", "vscen"]
    assert lookup_network(system_conn, name).isActive()
    assert rollback(list(journal.entries), journal, result.connection, result.ctx.registry) == []
    assert lookup_network(system_conn, name) is None
    assert not plan.out_dir.exists()


def test_network_undo_leaves_a_network_another_record_names_by_uuid(system_conn, results, net_names):
    """A record names the network by UUID: a new network of the same name is not touched."""
    name = net_names()
    result = on_system(results, ["network"], network=f"network={name}")
    record = actions(result)["network"].plan(result.ctx)[0].do()
    remove_network(system_conn, name)
    other = system_conn.networkDefineXML(f"<network><name>{name}</name></network>")
    actions(result)["network"].undo(result.connection, record)
    assert lookup_network(system_conn, name) is not None
    other.undefine()


def test_network_whose_bridge_another_network_uses_is_refused(system_conn, results, net_names,
                                                             tmp_path, monkeypatch):
    holder, wanted = net_names(), net_names()
    bridge = f"vs{uid()}"
    system_conn.networkDefineXML(f"<network><name>{holder}</name><bridge name='{bridge}'/></network>")
    stock = tmp_path / f"{wanted}.xml"
    stock.write_text(f"<network><name>{wanted}</name><bridge name='{bridge}'/></network>\n")
    monkeypatch.setitem(vscen_networks.STOCK_DEFINITIONS, wanted, str(stock))
    result = on_system(results, ["network"], network=f"network={wanted}")
    with pytest.raises(HostError) as err:
        actions(result)["network"].plan(result.ctx)
    assert str(err.value) == (
        f"network {wanted}: its definition uses bridge '{bridge}', which network '{holder}' on "
        f"{SYSTEM} already uses; give one of them another bridge name (virsh net-edit {holder}) "
        f"or use --network network={holder}")
    assert lookup_network(system_conn, wanted) is None


def test_network_from_a_stock_definition(system_conn, results, net_names, tmp_path, monkeypatch):
    name = net_names()
    stock = tmp_path / f"{name}.xml"
    stock.write_text(f"<network><name>{name}</name><bridge name='vs{uid()}'/></network>\n")
    monkeypatch.setitem(vscen_networks.STOCK_DEFINITIONS, name, str(stock))
    result = on_system(results, ["network"], network=f"network={name}")
    steps = actions(result)["network"].plan(result.ctx)
    assert [s.description for s in steps] == [
        f"define and start network {name} on {SYSTEM} (libvirt's stock definition {stock})"]
    steps[0].do()
    assert lookup_network(system_conn, name).isActive()


def test_network_stock_definition_missing_or_remote(results, net_names, tmp_path, monkeypatch):
    name = f"vst{uid()}"
    monkeypatch.setitem(vscen_networks.STOCK_DEFINITIONS, name, str(tmp_path / "absent.xml"))
    result = on_recorded(results, "amd-sev", add=["network"], network=f"network={name}")
    action = actions(result)["network"]
    with pytest.raises(HostError, match=f"'{name}' does not exist on test:///default and libvirt's "
                                        "stock definition .*absent.xml cannot be read"):
        action.plan(result.ctx)
    # remote: vscen cannot read the host's files, and says how to define it there
    result.ctx.connection = replace_uri(result.connection, "qemu+ssh://host.invalid/system")
    with pytest.raises(HostError, match="on a remote host; define it there \\(virsh net-define"):
        action.plan(result.ctx)


def replace_uri(connection, uri):
    from vscen.host.connect import Connection

    return Connection(uri, connection.conn, embedded=False)


def test_network_default_on_the_test_driver_is_unchanged(results):
    result = on_recorded(results, "amd-sev", ["desktop"])
    assert actions(result)["network"].plan(result.ctx) == []
    assert "network default on test:///default exists and is active: unchanged" in result.ctx.notes


@pytest.mark.parametrize("spec", ["user", "none"])
def test_network_user_and_none_need_nothing(results, spec):
    result = on_recorded(results, "amd-sev", add=["network"], network=spec)
    assert actions(result)["network"].plan(result.ctx) == []
    assert not [n for n in result.ctx.notes if n.startswith("network")]


def test_bridge_checks(system_conn, results, net_names):
    missing = f"vs{uid()}"
    result = on_system(results, ["network"], network=f"bridge={missing}")
    with pytest.raises(HostError, match=f"bridge '{missing}' does not exist on {SYSTEM}"):
        actions(result)["network"].plan(result.ctx)
    result = on_system(results, ["network"], network="bridge=lo")
    with pytest.raises(HostError, match="'lo' on qemu:///system is an interface of type ethernet, not a bridge"):
        actions(result)["network"].plan(result.ctx)
    # the bridge of a running libvirt network exists: unchanged, with a hint
    name = net_names()
    net = system_conn.networkDefineXML(f"<network><name>{name}</name></network>")
    net.create()
    result = on_system(results, ["network"], network=f"bridge={net.bridgeName()}")
    assert actions(result)["network"].plan(result.ctx) == []
    assert (f"network: bridge {net.bridgeName()} belongs to libvirt network '{name}': "
            f"--network network={name} is the usual way to attach to it") in result.ctx.notes


# -- hugepages ---------------------------------------------------------------------------------


def page_size(result):
    page = etree.fromstring(result.xml.encode()).find("memoryBacking/hugepages/page")
    return None if page is None else int(page.get("size"))


def test_hugepages_auto_reserves_nothing(results):
    result = on_recorded(results, "amd-sev", ["computation"])
    assert page_size(result) is None
    assert actions(result)["hugepages"].plan(result.ctx) == []


def test_hugepages_reserve_counts_on_the_pinned_cell(results):
    result = on_recorded(results, "amd-sev", ["computation"], hugepages="reserve")
    assert page_size(result) == 2048  # written although none is free
    n = vscen_hugepages.need(result.ctx)
    assert (n.size, n.pages, n.cells, n.free, n.missing) == (2048, 2048, (0,), 0, 2048)
    assert n.targets() == [(0, 2048)]
    # the embedded driver has no memory: counted, noted, not reserved
    assert actions(result)["hugepages"].plan(result.ctx) == []
    assert ("hugepages: test:///default has no real memory: the 2048 missing pages of 2048 KiB "
            "in NUMA cell 0 are not reserved") in result.ctx.notes


def test_hugepages_reserve_uses_free_1g_pages_first(results):
    result = on_recorded(results, "numa4-hugepages", ["computation"], hugepages="reserve")
    n = vscen_hugepages.need(result.ctx)
    assert (n.size, n.pages, n.cells, n.missing) == (1048576, 4, (3,), 0)
    assert actions(result)["hugepages"].plan(result.ctx) == []
    assert any("nothing to reserve" in note for note in result.ctx.notes)


def test_hugepages_reserve_unpinned_counts_the_whole_host(results):
    # 24 GiB + 2 MiB: no cell holds it, and no 1 GiB page size divides it
    result = on_recorded(results, "kvm", add=["hugepages"], hugepages="reserve", memory="24578MiB")
    n = vscen_hugepages.need(result.ctx)
    assert (n.size, n.pages, n.cells, n.free, n.total) == (2048, 12289, (), 4096 + 6144, 4096 + 6144)
    assert n.targets() == [(-1, 2049)]


def test_hugepages_targets_share_several_cells():
    n = vscen_hugepages.Need(size=2048, pages=10, cells=(0, 1), free=3, total=3)
    assert n.missing == 7 and n.targets() == [(0, 4), (1, 3)]
    assert vscen_hugepages.guest._nodeset("0,2-3") == (0, 2, 3)
    assert vscen_hugepages.guest._nodeset("^1") == ()


def test_hugepages_reserve_refuses_memory_that_is_not_whole_pages(results):
    result = on_recorded(results, "amd-sev", add=["hugepages"], hugepages="reserve", memory="1023MiB")
    with pytest.raises(UsageError, match="guest memory \\(1047552 KiB\\) is not a whole number of huge "
                                         "pages .* multiple of 2 MiB, or --hugepages auto"):
        actions(result)["hugepages"].plan(result.ctx)


def test_hugepages_persistent_1g_pages_only_reported(results):
    result = on_recorded(results, "numa4-hugepages", ["computation"], hugepages="persistent")
    result.ctx.connection = replace_uri(result.connection, SYSTEM)  # plan only: nothing is done
    assert actions(result)["hugepages"].plan(result.ctx) == []
    assert any("1048576 KiB pages can only be reserved across reboots by the kernel: add the "
               "kernel parameters 'hugepagesz=1G hugepages=" in n for n in result.ctx.notes)


def node_file(name="nr_hugepages", size=2048):
    return Path(f"/sys/devices/system/node/node0/hugepages/hugepages-{size}kB/{name}")


def read_int(path) -> int:
    return int(Path(path).read_text())


@pytest.fixture
def restore_hugepages(system_conn):
    """Whatever a test does, node 0's 2 MiB pool is set back to its count."""
    before = read_int(node_file())
    yield before
    if read_int(node_file()) != before:
        node_file().write_text(str(before))
    assert read_int(node_file()) == before


@pytest.mark.parametrize("mode", ["reserve", "persistent"])
def test_hugepages_really_reserved_and_given_back(system_conn, results, restore_hugepages, tmp_path,
                                                  monkeypatch, mode):
    conf = tmp_path / "sysctl.d" / "90-vscen-hugepages.conf"
    conf.parent.mkdir()
    monkeypatch.setattr(vscen_hugepages.boot, "SYSCTL_CONF", conf)
    before = restore_hugepages
    free = read_int(node_file("free_hugepages"))
    pages = free + 8  # 8 more than are free (a guest of at least 16 MiB): the action must add exactly 8
    result = on_system(results, ["hugepages", "vcpu-pinning"], hugepages=mode, memory=f"{pages * 2}MiB")
    assert page_size(result) == 2048
    plan = make_plan(result, tmp_path / "out", define=False)
    assert read_int(node_file()) == before, "planning changed the pool"
    descriptions = [s.description for s in plan.steps]
    assert (f"reserve 8 huge pages of 2048 KiB in NUMA cell 0 on {SYSTEM} (the guest needs "
            f"{pages}, {free} are free)") in descriptions
    assert (f"write {conf}: vm.nr_hugepages = {before + 8} (keeps the huge pages across reboots)"
            in descriptions) == (mode == "persistent")

    journal = Journal.open(plan.out_dir, result.settings.name, SYSTEM)
    apply(plan, journal, result.connection, result.ctx.registry)
    assert read_int(node_file()) == before + 8
    assert read_int(node_file("free_hugepages")) >= pages
    records = [e["record"] for e in journal.entries if e["owner"] == "hugepages"]
    assert records[0] == {"kind": "hugepages", "size_kib": 2048, "via": "libvirt", "cells": [0],
                          "previous": {"0": before}, "added": {"0": 8},
                          "host": host_identity(result.connection)}
    if mode == "persistent":
        assert conf.read_text().endswith(f"\nvm.nr_hugepages = {before + 8}\n")
        assert records[1]["kind"] == "hugepages-sysctl" and records[1]["previous"] is None

    # a second run: the pages are there, nothing to do
    again = make_plan(on_system(results, ["hugepages", "vcpu-pinning"], hugepages=mode,
                                memory=f"{pages * 2}MiB", name=result.settings.name),
                      tmp_path / "out", define=False)
    assert [s for s in again.steps if s.owner == "hugepages"] == []

    # what vscen destroy does
    assert rollback(list(journal.entries), journal, result.connection, result.ctx.registry) == []
    assert read_int(node_file()) == before
    assert not conf.exists()


def test_hugepages_too_few_fails_and_the_run_is_rolled_back(system_conn, results, restore_hugepages, tmp_path):
    before = restore_hugepages
    host_mib = system_conn.getInfo()[1]
    result = on_system(results, ["hugepages"], hugepages="reserve", memory=f"{host_mib * 2}MiB")
    plan = make_plan(result, tmp_path / "out", define=False)
    assert [s.owner for s in plan.steps] == ["vscen", "hugepages", "vscen"]
    journal = Journal.open(plan.out_dir, result.settings.name, SYSTEM)
    with pytest.raises(HostError) as err:
        apply(plan, journal, result.connection, result.ctx.registry)
    assert "too few free huge pages: the guest needs" in str(err.value)
    assert "nothing was reserved" in str(err.value) and "rolled back what this run did" in str(err.value)
    assert read_int(node_file()) == before
    assert not plan.out_dir.exists()  # the directory made before it was taken back


def fake_sysfs(root: Path, nr=2, free=2, memfree_kib=10 * 1024**2):
    base = root / "devices/system/node/node0"
    pool = base / "hugepages/hugepages-2048kB"
    pool.mkdir(parents=True)
    (pool / "nr_hugepages").write_text(f"{nr}\n")
    (pool / "free_hugepages").write_text(f"{free}\n")
    (base / "meminfo").write_text(f"Node 0 MemTotal: {2 * memfree_kib} kB\nNode 0 MemFree: {memfree_kib} kB\n")
    return pool


def test_hugepages_sysfs_fallback_restores_when_the_kernel_gives_fewer(results, tmp_path, monkeypatch):
    """A driver without virNodeAllocPages (the test driver, presented as this machine) falls
    back to sysfs; a fake tree stands in for a kernel that found no page: the count written is
    set back and the error says so."""
    pool = fake_sysfs(tmp_path)
    monkeypatch.setattr(vscen_hugepages.pools, "SYSFS", tmp_path)
    result = on_recorded(results, "amd-sev", add=["hugepages", "vcpu-pinning"], hugepages="reserve",
                         memory="16MiB")
    result.ctx.connection = replace_uri(result.connection, "qemu:///system")
    steps = actions(result)["hugepages"].plan(result.ctx)
    assert len(steps) == 1
    with pytest.raises(HostError) as err:
        steps[0].do()
    assert str(err.value).startswith("too few free huge pages: asked for 6 more pages of 2048 KiB in "
                                     "NUMA cell 0, the kernel found 0")
    assert "restored the counts to NUMA cell 0: 2" in str(err.value)
    assert (pool / "nr_hugepages").read_text() == "2\n"


def test_hugepages_sysfs_undo_takes_back_only_what_was_added(tmp_path, monkeypatch):
    pool = fake_sysfs(tmp_path, nr=10)
    monkeypatch.setattr(vscen_hugepages.pools, "SYSFS", tmp_path)
    local = SimpleNamespace(uri="qemu:///system", is_local=True, is_test=False,
                            conn=SimpleNamespace(getCapabilities=lambda: "<capabilities/>"))
    record = {"kind": "hugepages", "size_kib": 2048, "via": "sysfs", "cells": [0],
              "previous": {"0": 4}, "added": {"0": 6}, "host": host_identity(local)}
    vscen_hugepages.undo(local, record)
    assert (pool / "nr_hugepages").read_text() == "4\n"
    (pool / "nr_hugepages").write_text("9\n")  # someone else added 5 since
    vscen_hugepages.undo(local, {**record, "previous": {"0": 2}, "added": {"0": 2}})
    assert (pool / "nr_hugepages").read_text() == "7\n"


def test_hugepages_sysctl_file_of_someone_else_is_refused(results, tmp_path, monkeypatch):
    conf = tmp_path / "90-vscen-hugepages.conf"
    conf.write_text("vm.nr_hugepages = 7\n")
    monkeypatch.setattr(vscen_hugepages.boot, "SYSCTL_CONF", conf)
    result = on_recorded(results, "amd-sev", ["computation"], hugepages="persistent")
    result.ctx.connection = replace_uri(result.connection, SYSTEM)  # plan only
    with pytest.raises(ExistsError, match="was not written by vscen \\(use --force to replace it\\)"):
        actions(result)["hugepages"].plan(result.ctx)
    result.ctx.force = True
    descriptions = [s.description for s in actions(result)["hugepages"].plan(result.ctx)]
    assert descriptions[-1] == f"write {conf}: vm.nr_hugepages = 2048 (keeps the huge pages across reboots)"
    assert conf.read_text() == "vm.nr_hugepages = 7\n"


# -- host tuning -------------------------------------------------------------------------------


@pytest.fixture
def sysfs(tmp_path, monkeypatch):
    root = tmp_path / "mm"
    (root / "ksm").mkdir(parents=True)
    (root / "transparent_hugepage").mkdir()
    (root / "ksm/run").write_text("1\n")
    (root / "transparent_hugepage/enabled").write_text("[always] madvise never\n")
    monkeypatch.setattr(vscen_host_tuning, "SYSFS_ROOT", root)
    return root


LOCAL = SimpleNamespace(uri="qemu:///system", is_local=True, is_test=False)


def tuning_ctx(results, add, connection=LOCAL, tune_host=True):
    result = on_recorded(results, "amd-sev", add=add)
    result.ctx.connection = connection
    result.ctx.settings = replace(result.ctx.settings, extras={**result.ctx.settings.extras, "tune_host": tune_host})
    return result.ctx


def test_tuning_applied_and_undone(results, sysfs):
    ctx = tuning_ctx(results, ["ksm-off", "thp-madvise"])
    steps = vscen_host_tuning.plan(ctx)
    assert [s.description for s in steps] == [
        f"set {sysfs / 'ksm/run'} to 0 (now 1) for ksm-off",
        f"set {sysfs / 'transparent_hugepage/enabled'} to madvise (now always) for thp-madvise"]
    assert (sysfs / "ksm/run").read_text() == "1\n"  # planning wrote nothing
    records = [s.do() for s in steps]
    assert (sysfs / "ksm/run").read_text() == "0"
    assert (sysfs / "transparent_hugepage/enabled").read_text() == "madvise"
    assert records[0] == {"kind": "sysfs", "setting": "ksm/run", "path": str(sysfs / "ksm/run"),
                          "value": "0", "previous": "1", "feature": "ksm-off", "host": host_identity(LOCAL)}
    assert vscen_host_tuning.plan(tuning_ctx(results, ["ksm-off", "thp-madvise"])) == []
    for record in reversed(records):
        vscen_host_tuning.undo(LOCAL, record)
    assert (sysfs / "ksm/run").read_text() == "1"
    assert vscen_host_tuning.read_setting(sysfs / "transparent_hugepage/enabled") == "always"


def test_tuning_undo_leaves_a_value_changed_since_and_a_missing_file(results, sysfs):
    ctx = tuning_ctx(results, ["ksm-on"])
    (sysfs / "ksm/run").write_text("0\n")
    record = vscen_host_tuning.plan(ctx)[0].do()
    (sysfs / "ksm/run").write_text("2\n")  # the administrator unmerged everything since
    vscen_host_tuning.undo(LOCAL, record)
    assert (sysfs / "ksm/run").read_text() == "2\n"
    (sysfs / "ksm/run").unlink()
    vscen_host_tuning.undo(LOCAL, record)
    assert not (sysfs / "ksm/run").exists()
    with pytest.raises(VscenError, match="not a setting vscen tunes"):
        vscen_host_tuning.undo(LOCAL, {**record, "setting": "../../../etc/passwd"})


def test_tuning_without_tune_host_is_a_note(results, sysfs):
    ctx = tuning_ctx(results, ["ksm-off"], tune_host=False)
    assert vscen_host_tuning.plan(ctx) == []
    assert (f"host tuning skipped: ksm-off wants {sysfs / 'ksm/run'} = 0, it is 1 "
            "(pass --tune-host to apply)") in ctx.notes
    assert (sysfs / "ksm/run").read_text() == "1\n"


def test_tuning_on_a_remote_host_is_a_note(results, sysfs):
    remote = SimpleNamespace(uri="qemu+ssh://host.invalid/system", is_local=False, is_test=False)
    ctx = tuning_ctx(results, ["ksm-on", "thp-madvise"], connection=remote)
    assert vscen_host_tuning.plan(ctx) == []
    assert (f"remote host qemu+ssh://host.invalid/system: vscen tunes only this machine; for "
            f"thp-madvise set {sysfs / 'transparent_hugepage/enabled'} to madvise there "
            f"(echo madvise > {sysfs / 'transparent_hugepage/enabled'})") in ctx.notes
    assert (sysfs / "transparent_hugepage/enabled").read_text() == "[always] madvise never\n"


def test_tuning_on_the_test_driver_and_without_the_file(results, sysfs):
    result = on_recorded(results, "amd-sev", add=["ksm-off"])
    result.ctx.settings = replace(result.ctx.settings, extras={**result.ctx.settings.extras, "tune_host": True})
    assert vscen_host_tuning.plan(result.ctx) == []
    assert any(n.startswith("host tuning skipped: test:///default is not a real host") for n in result.ctx.notes)
    (sysfs / "ksm/run").unlink()
    ctx = tuning_ctx(results, ["ksm-off"])
    assert vscen_host_tuning.plan(ctx) == []
    assert any("does not exist: the kernel has no KSM" in n for n in ctx.notes)


def test_tuning_features_write_no_xml_and_ksm_is_one_switch(results):
    plain = on_recorded(results, "amd-sev", add=["clock"], name="same")
    tuned = on_recorded(results, "amd-sev", add=["clock", "ksm-off", "thp-madvise"], name="same")
    assert tuned.xml == plain.xml
    with pytest.raises(RulesError, match="KSM is one switch for the whole host"):
        on_recorded(results, "amd-sev", add=["ksm-on", "ksm-off"])


def test_scenarios_name_their_tuning(results):
    assert on_recorded(results, "amd-sev", ["desktop"]).ctx.has("ksm-on")
    comp = on_recorded(results, "amd-sev", ["computation"]).ctx
    assert comp.has("ksm-off") and comp.has("thp-madvise")


REAL_KSM = Path("/sys/kernel/mm/ksm/run")


@pytest.mark.skipif(not os.access(REAL_KSM, os.W_OK), reason="/sys/kernel/mm/ksm/run is not writable here")
def test_tuning_real_round_trip(results):
    before = REAL_KSM.read_text().strip()
    feature, value = ("ksm-on", "1") if before == "0" else ("ksm-off", "0")
    try:
        ctx = tuning_ctx(results, [feature])
        steps = vscen_host_tuning.plan(ctx)
        assert len(steps) == 1
        record = steps[0].do()
        assert REAL_KSM.read_text().strip() == value
        vscen_host_tuning.undo(LOCAL, record)
        assert REAL_KSM.read_text().strip() == before
    finally:
        if REAL_KSM.read_text().strip() != before:
            REAL_KSM.write_text(before)
