"""The fleet plugin (``vscen fleet``) and named hosts (``[hosts.NAME]``, ``vscen run --host``,
``vscen hosts``): placement against the recorded hosts of tests/data/hosts (decisions and
refusal texts), determinism, and apply, re-apply and destroy for real on test:///default and
on qemu:///system (TCG guests)."""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import host_files
from typer.testing import CliRunner

from vscen import HostError, UsageError

#: fleet host name -> recorded host of tests/conftest.py
RECORDED = {"amd1": "amd-sev", "tdx1": "intel-tdx", "kvm1": "kvm", "tcg1": "local-tcg", "arm1": "aarch64",
            "numa1": "numa4-hugepages"}


def cli(*args):
    from vscen.cli import build_app

    return CliRunner().invoke(build_app(), list(args))


def hosts_toml(names=RECORDED, extra: dict | None = None) -> str:
    lines = []
    for name in names:
        files = ", ".join(f'"{f}"' for f in host_files(RECORDED[name]))
        lines += [f"[hosts.{name}]", f'uri = "qemu+ssh://root@{name}/system"', f"facts = [{files}]"]
        for key, value in (extra or {}).get(name, {}).items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def write(tmp_path, text: str, name: str = "fleet.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def plan_of(path, output=None):
    from vscen_fleet.placement import make_plan
    from vscen_fleet.spec import load

    from vscen import named_hosts

    return make_plan(load(path, named_hosts()), output=output)


def placed(plan) -> dict[str, str | None]:
    return {p.name: p.host for p in plan.placements}


GUESTS = """
[[guests]]
name = "vault-{n:02}"
count = 3
scenario = "secure-vm"
[guests.settings]
memory = "8GiB"
network = "none"

[[guests]]
name = "calc-{n}"
count = 4
scenario = "computation"
hosts = ["kvm1", "tcg1", "arm1"]
[guests.settings]
memory = "1GiB"
network = "none"
"""


# -- placement on recorded hosts ----------------------------------------------------------------


def test_confidential_guests_go_only_where_launch_security_is_offered(tmp_path):
    plan = plan_of(write(tmp_path, hosts_toml() + GUESTS))
    assert plan.refused == []
    where = placed(plan)
    assert {where[f"vault-0{n}"] for n in (1, 2, 3)} == {"amd1"}
    # spread: the host with the most memory left; computation takes huge pages where they are
    # free, and kvm1 has thousands (tcg1 has 4.3 GiB and none, arm1 no capabilities at all)
    assert {where[f"calc-{n}"] for n in range(1, 5)} == {"kvm1"}
    p = next(p for p in plan.placements if p.name == "calc-1")
    assert p.need.hugepages == (1024**2, 1)
    # the hosts that could not take it say why, as for a refused guest
    assert p.reasons == {"arm1": 'no room: its memory is unknown (no capabilities recorded): give memory = "SIZE" '
                                 "for it in the fleet file"}
    assert p.why.startswith("spread: 14.0 TiB left there after it (1 other host could take it)")
    amd = plan.state("amd1")
    assert (amd.used_memory, amd.used_vcpus, amd.memory_from) == (3 * 8 * 1024**2, 6, "NUMA memory less huge pages")


def test_every_refusal_names_each_host_and_why(tmp_path):
    text = hosts_toml() + """
[[guests]]
name = "big-{n}"
count = 2
scenario = "secure-vm"
[guests.settings]
memory = "64GiB"
network = "none"
"""
    plan = plan_of(write(tmp_path, text))
    assert [p.name for p in plan.refused] == ["big-1", "big-2"]
    reasons = plan.refused[0].reasons
    assert list(reasons) == list(RECORDED)
    assert reasons["amd1"] == ("no room: 60.5 GiB of memory left (x1 of 60.5 GiB, NUMA memory less huge pages), "
                               "it needs 64 GiB")
    assert reasons["tcg1"].startswith("confidential-computing: the host offers no launch security")
    assert reasons["arm1"].startswith("confidential-computing: the host offers no launch security")
    assert reasons["tdx1"].startswith("confidential-computing:")
    from vscen_fleet.view import plan_text

    out = plan_text(plan)
    assert ("refused: big-1 ... big-2 (2 guests) (secure-vm, 64 GiB, 2 vCPUs): no host can take them "
            "(amd1 passes their checks but lacks room; tdx1, kvm1, tcg1, arm1, numa1 cannot have them):") in out
    res = cli("fleet", "plan", str(tmp_path / "fleet.toml"))
    assert res.exit_code != 0 and isinstance(res.exception, HostError)
    assert str(res.exception) == "2 guests cannot be placed (big-1 ... big-2): see 'refused' in the plan"
    # twice the memory: it fits
    plan = plan_of(write(tmp_path, "[placement]\nmemory_ratio = 2.0\n" + text))
    assert placed(plan) == {"big-1": "amd1", "big-2": None}
    assert plan.refused[0].reasons["amd1"].startswith("no room: 56.9 GiB of memory left (x2 of 60.5 GiB")


def test_vcpus_are_not_overcommitted_beyond_the_ratio(tmp_path):
    text = "[placement]\nvcpu_ratio = 1.0\n" + hosts_toml(["amd1"]) + """
[[guests]]
name = "wide-{n}"
count = 2
scenario = "computation"
[guests.settings]
memory = "1GiB"
vcpu = 20
network = "none"
"""
    plan = plan_of(write(tmp_path, text))
    assert placed(plan) == {"wide-1": "amd1", "wide-2": None}
    assert plan.refused[0].reasons == {"amd1": "no room: 12 vCPUs left (x1 of 32 CPUs), it needs 20"}


def test_huge_pages_are_counted_where_they_are_free(tmp_path):
    text = hosts_toml(["amd1", "numa1"]) + """
[[guests]]
name = "huge-{n}"
count = 40
scenario = "computation"
features = ["+hugepages"]
[guests.settings]
memory = "1GiB"
network = "none"
"""
    plan = plan_of(write(tmp_path, text))
    numa = plan.state("numa1")
    # amd1 has no huge pages: its guests would not be backed by them; numa1 has 36864 pages of 1 GiB
    assert set(placed(plan).values()) <= {"amd1", "numa1"}
    on_numa = [p for p in plan.placements if p.host == "numa1"]
    assert on_numa and all(p.need.hugepages == (1024**2, 1) for p in on_numa)
    assert numa.used_pages == {1024**2: len(on_numa)} and numa.used_memory == 0


def test_a_migration_pool_shares_a_cpu_every_host_of_it_runs(tmp_path):
    from vscen.testing import DATA

    text = hosts_toml(["kvm1", "tcg1"]) + f"""
[hosts.kvm3]
uri = "qemu+ssh://root@kvm3/system"
facts = "{DATA / 'host-kvm.xml'}"
memory = "64GiB"

[[guests]]
name = "mig-{{n}}"
count = 2
scenario = "easy-migration"
hosts = ["kvm1", "kvm3"]
migration_pool = true
[guests.settings]
memory = "1GiB"
network = "none"

[[guests]]
name = "bad-{{n}}"
count = 1
scenario = "easy-migration"
hosts = ["kvm3", "tcg1"]
migration_pool = true
[guests.settings]
memory = "1GiB"
network = "none"
"""
    plan = plan_of(write(tmp_path, text))
    assert placed(plan) == {"mig-1": "kvm3", "mig-2": "kvm3", "bad-1": None}
    from vscen_fleet.placement import guest_settings

    group = plan.placements[0].group
    assert guest_settings(group, "mig-1", plan.fleet.host("kvm3"), plan.fleet)["peers"] == [
        ",".join(str(f) for f in host_files("kvm"))]
    reasons = plan.refused[0].reasons
    assert set(reasons) == {"kvm3", "tcg1"} and all(r.startswith("live-migration: ") for r in reasons.values())


def test_the_plan_is_deterministic(tmp_path):
    from vscen_fleet.view import plan_data

    path = write(tmp_path, "[placement]\nstrategy = \"pack\"\n" + hosts_toml() + GUESTS)
    first, second = plan_data(plan_of(path)), plan_data(plan_of(path))
    assert first == second
    res = cli("fleet", "plan", "--json", str(path))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == first


def test_pack_fills_the_fullest_host_that_fits(tmp_path):
    text = hosts_toml(["amd1", "tcg1"]) + """
[[guests]]
name = "calc-{n}"
count = 3
scenario = "computation"
[guests.settings]
memory = "1GiB"
network = "none"
"""
    assert set(placed(plan_of(write(tmp_path, text))).values()) == {"amd1"}  # spread: most left
    assert set(placed(plan_of(write(tmp_path, '[placement]\nstrategy = "pack"\n' + text))).values()) == {"tcg1"}


# -- the fleet file: one-line errors --------------------------------------------------------------


@pytest.mark.parametrize("text,message", [
    ("[placement]\nspeed = 1\n", "placement.speed: in {path} is not a key here; known keys are memory_ratio, vcpu_ratio, strategy"),
    ("[placement]\nmemory_ratio = 0\n", "placement.memory_ratio: 0 in {path} must be a number above 0 and at most 100"),
    ("[placement]\nstrategy = \"random\"\n", "placement.strategy: 'random' in {path} is not one of spread, pack"),
    ("[hosts.x]\n", "hosts.x: in {path} has no uri and is not a named host of vscen's config (named: none); "
                    "give uri = \"...\" or add [hosts.x] to the config"),
    ("[hosts.x]\nuri = \"test:///default\"\nram = 1\n",
     "hosts.x.ram: in {path} is not a key here; known keys are uri, facts, memory, cpus"),
    ("[hosts.x]\nuri = \"test:///default\"\n[[guests]]\nname = \"a\"\ncount = 2\nscenario = \"computation\"\n",
     "guests[0].name: 'a' in {path} names 2 guests alike; put {{n}} in it (vault-{{n:02}})"),
    ("[hosts.x]\nuri = \"test:///default\"\n[[guests]]\nname = \"a-{i}\"\nscenario = \"computation\"\n",
     "guests[0].name: 'a-{{i}}' in {path}: the only field of a name pattern is {{n}} (the guest's number: {{n}}, {{n:02}})"),
    ("[hosts.x]\nuri = \"test:///default\"\n[[guests]]\nname = \"a-{n}\"\ncount = 2\nscenario = \"computation\"\n"
     "[[guests]]\nname = \"a-2\"\nscenario = \"computation\"\n",
     "guests[1].name: 'a-2' in {path} makes 'a-2', which guests[0] makes too"),
    ("[hosts.x]\nuri = \"test:///default\"\n[[guests]]\nname = \"a\"\nscenario = \"computation\"\nhosts = [\"y\"]\n",
     "guests[0].hosts: 'y' in {path} is not a host of the fleet (its hosts: x)"),
    ("[hosts.x]\nuri = \"test:///default\"\n[[guests]]\nname = \"a-{n}\"\ncount = 2\nscenario = \"computation\"\n"
     "disks = [\"path=/var/lib/libvirt/images/a.raw\"]\n",
     "guests[0].disks: in {path}: 2 guests would share one disk path; put {{name}} in it "
     "(path=/var/lib/libvirt/images/{{name}}.qcow2)"),
])
def test_fleet_file_mistakes_are_one_line_errors(tmp_path, text, message):
    path = write(tmp_path, text)
    res = cli("fleet", "plan", str(path))
    assert isinstance(res.exception, UsageError), res.output
    assert str(res.exception) == message.format(path=path)


def test_a_settings_mistake_names_the_group(tmp_path):
    path = write(tmp_path, hosts_toml(["amd1"]) + "[[guests]]\nname = \"a\"\nscenario = \"computation\"\n"
                 "[guests.settings]\nmemory = \"lots\"\n")
    res = cli("fleet", "plan", str(path))
    assert isinstance(res.exception, UsageError)
    assert str(res.exception).startswith("guests[0] (a): memory: 'lots'")


# -- named hosts -----------------------------------------------------------------------------------


def config(tmp_path, text: str):
    path = tmp_path / "config" / "vscen" / "config.toml"  # XDG_CONFIG_HOME is tmp_path/config
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_named_hosts_come_from_the_config_files(tmp_path):
    from vscen import named_hosts

    amd = host_files("amd-sev")
    config(tmp_path, f'[hosts.lab]\nuri = "test:///default"\n[hosts.amd]\nuri = "qemu:///system"\n'
                     f'facts = "{amd[1]}"\n')
    hosts = named_hosts()
    assert list(hosts) == ["amd", "lab"]
    assert hosts["amd"].uri == "qemu:///system" and hosts["amd"].facts == (amd[1],)
    from vscen.cli.common import complete

    assert complete("hosts", "l") == ["lab"]
    # a fleet names them without a uri
    plan = plan_of(write(tmp_path, "[hosts.amd]\nmemory = \"16GiB\"\ncpus = 8\n[[guests]]\nname = \"v\"\n"
                                   "scenario = \"secure-vm\"\n[guests.settings]\nnetwork = \"none\"\n"))
    assert placed(plan) == {"v": "amd"} and plan.fleet.hosts[0].origin == "named"


@pytest.mark.parametrize("text,message", [
    ('[hosts.a]\nfacts = "x.xml"\n', "hosts.a: in config {path} has no uri (uri = \"qemu+ssh://root@a/system\")"),
    ('[hosts.a]\nuri = "test:///default"\nport = 1\n', "hosts.a.port: in config {path} is not a host key; known keys are uri, facts"),
    ('[hosts."a b"]\nuri = "test:///default"\n', "hosts.a b: in config {path}: a host name is 1-64 letters, digits, '.', '_' "
                                                 "or '-', starting with a letter or digit"),
    ('[hosts.a]\nuri = 7\n', "hosts.a.uri: 7 in config {path} must be a non-empty string"),
    ('hosts = "a"\n', "hosts: 'a' in config {path} must be tables [hosts.NAME] with a uri"),
])
def test_named_host_mistakes_are_one_line_errors(tmp_path, text, message):
    from vscen import named_hosts

    path = config(tmp_path, text)
    with pytest.raises(UsageError) as exc:
        named_hosts()
    assert str(exc.value) == message.format(path=path)


def test_run_host_plans_from_the_named_hosts_facts(tmp_path):
    files = host_files("amd-sev")
    config(tmp_path, f'[hosts.amd]\nuri = "test:///default"\nfacts = "{files[1]}"\n')
    res = cli("run", "secure-vm", "--host", "amd", "--dry-run", "--json", "--network", "none",
              "--output", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["connection"] == "test:///default" and data["host"] == str(files[1])
    res = cli("run", "secure-vm", "--host", "amd", "--connect", "test:///default", "--dry-run")
    assert str(res.exception) == ("--host: give either --host NAME or --connect/--host-facts, not both "
                                  "(a named host has its uri and facts)")
    res = cli("run", "secure-vm", "--host", "nope", "--dry-run")
    assert str(res.exception).startswith("--host: 'nope' is not a named host of the config files (named: amd)")


def test_vscen_hosts_lists_what_each_offers(tmp_path):
    files = host_files("amd-sev")
    config(tmp_path, f'[hosts.amd]\nuri = "test:///default"\nfacts = "{files[1]}"\n'
                     '[hosts.lab]\nuri = "test:///default"\n[hosts.gone]\nuri = "test:///nonexistent-file.xml"\n')
    res = cli("hosts", "--json")
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert list(rows) == ["amd", "gone", "lab"]
    assert rows["amd"]["reachable"] is True and rows["amd"]["offers"]["kvm"] is True
    assert ["AMD SEV-SNP", "offered"] in rows["amd"]["offers"]["rows"]
    assert rows["lab"]["offers"]["numa_cells"] == 2
    assert rows["gone"]["reachable"] is False and rows["gone"]["offers"] is None
    assert "cannot open 'test:///nonexistent-file.xml'" in rows["gone"]["error"]
    res = cli("hosts")
    import re

    assert "AMD SEV-SNP" in res.stdout and re.search(r"reachable +no: connect: cannot open", res.stdout)


# -- apply, re-apply, destroy ----------------------------------------------------------------------


def test_apply_reapply_destroy_on_the_test_driver(tmp_path):
    import libvirt

    keep = libvirt.open("test:///default")  # the embedded driver's state lives while one is open
    tag = uuid.uuid4().hex[:6]
    out = str(tmp_path / "out")
    path = write(tmp_path, f"""
[hosts.t1]
uri = "test:///default"
[hosts.t2]
uri = "test:///default"

[[guests]]
name = "fleet-{tag}-{{n}}"
count = 3
scenario = "computation"
disks = ["none"]
[guests.settings]
memory = "128MiB"
network = "none"
""")
    try:
        # a domain of that name that vscen did not make: that guest fails, the others are made
        keep.defineXML(f"<domain type='test'><name>fleet-{tag}-2</name><memory>65536</memory>"
                       "<os><type>hvm</type></os></domain>")
        res = cli("fleet", "apply", str(path), "--output", out, "--json")
        rows = json.loads(res.stdout)
        assert [(r["name"], r["status"]) for r in rows] == [
            (f"fleet-{tag}-1", "made"), (f"fleet-{tag}-2", "failed"), (f"fleet-{tag}-3", "made")]
        assert "exists on test:///default with another definition" in rows[1]["error"]
        assert str(res.exception).startswith(f"fleet apply: 1 of 3 guests failed (each rolled back): fleet-{tag}-2 on ")
        assert not (tmp_path / "out" / f"fleet-{tag}-2").exists()
        keep.lookupByName(f"fleet-{tag}-2").undefine()
        res = cli("fleet", "apply", str(path), "--output", out, "--json")
        assert res.exit_code == 0, res.output
        assert [r["status"] for r in json.loads(res.stdout)] == ["unchanged", "made", "unchanged"]
        res = cli("fleet", "apply", str(path), "--output", out)
        assert res.exit_code == 0, res.output
        assert "fleet: 0 made, 3 unchanged, 0 failed" in res.stdout
        plan = plan_of(path, output=tmp_path / "out")
        assert {p.state for p in plan.placements} == {"exists"}
        names = {d.name() for d in keep.listAllDomains()}
        assert {f"fleet-{tag}-{n}" for n in (1, 2, 3)} <= names
        res = cli("fleet", "destroy", str(path), "--output", out)
        assert res.exit_code == 0, res.output
        assert "fleet: 3 destroyed, 0 not made, 0 failed" in res.stdout
        assert not {f"fleet-{tag}-{n}" for n in (1, 2, 3)} & {d.name() for d in keep.listAllDomains()}
        res = cli("fleet", "destroy", str(path), "--output", out)
        assert "fleet: 0 destroyed, 3 not made, 0 failed" in res.stdout
    finally:
        keep.close()


def test_apply_reapply_destroy_on_qemu_system(system_conn, tmp_path):
    """Three TCG guests on qemu:///system (two fleet hosts, one daemon), started, with their
    disks in a directory of their own; applied again, nothing changes; destroyed, nothing is
    left."""
    import libvirt

    tag = uuid.uuid4().hex[:6]
    images = f"/var/lib/libvirt/images/fleet-{tag}"
    out = str(tmp_path / "out")
    names = [f"fleet-{tag}-{n}" for n in (1, 2, 3)]
    path = write(tmp_path, f"""
[placement]
strategy = "spread"

[hosts.sys-a]
uri = "qemu:///system"
[hosts.sys-b]
uri = "qemu:///system"

[[guests]]
name = "fleet-{tag}-{{n}}"
count = 3
scenario = "computation"
start = true
disks = ["path={images}/{{name}}/disk.raw,size=16MiB,format=raw"]
[guests.settings]
memory = "128MiB"
vcpu = 1
virt_type = "qemu"
network = "none"
""")
    try:
        res = cli("fleet", "apply", str(path), "--output", out, "--parallel", "2", "--json")
        assert res.exit_code == 0, (res.output, res.exception)
        rows = json.loads(res.stdout)
        assert [r["status"] for r in rows] == ["made"] * 3
        assert {r["host"] for r in rows} == {"sys-a", "sys-b"}
        for name in names:
            assert system_conn.lookupByName(name).isActive()
        res = cli("fleet", "apply", str(path), "--output", out, "--json")
        assert res.exit_code == 0, res.output
        assert [(r["status"], r["steps"]) for r in json.loads(res.stdout)] == [("unchanged", [])] * 3
        res = cli("fleet", "destroy", str(path), "--output", out)
        assert res.exit_code == 0, res.output
        assert "fleet: 3 destroyed" in res.stdout
        for name in names:
            with pytest.raises(libvirt.libvirtError):
                system_conn.lookupByName(name)
        assert not any(images in p.XMLDesc() for p in system_conn.listAllStoragePools())
        import os

        assert not os.path.exists(images) or not os.listdir(images)
    finally:
        for name in names:
            try:
                dom = system_conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError:
                pass
        for pool in system_conn.listAllStoragePools():
            if f"<path>{images}" in pool.XMLDesc():
                for vol in pool.listAllVolumes() if pool.isActive() else ():
                    vol.delete()
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
        import shutil

        shutil.rmtree(images, ignore_errors=True)


def test_the_example_fleet_plans_and_is_the_one_the_docs_show(tmp_path):
    from conftest import ROOT

    example = ROOT / "examples" / "fleet" / "fleet.toml"
    assert "```toml\n" + example.read_text() + "```\n" in (ROOT / "docs" / "fleet.md").read_text()
    plan = plan_of(example)
    assert plan.refused == []
    where = placed(plan)
    assert {where[f"vault-0{n}"] for n in range(1, 5)} == {"epyc1"}
    assert {where[f"calc-0{n}"] for n in range(1, 7)} == {"numa1"}
    assert [where[f"web-{n}"] for n in (1, 2, 3)] == ["kvm1", "kvm2", "kvm1"]


def test_an_unreachable_host_is_a_reason_for_every_guest(tmp_path):
    text = hosts_toml(["amd1"]) + """
[hosts.gone]
uri = "test:///nonexistent-fleet-host.xml"

[[guests]]
name = "v"
scenario = "computation"
hosts = ["gone"]
[guests.settings]
network = "none"
"""
    plan = plan_of(write(tmp_path, text))
    assert placed(plan) == {"v": None}
    assert plan.refused[0].reasons["gone"].startswith(
        "its facts cannot be read: connect: cannot open 'test:///nonexistent-fleet-host.xml'")


def test_a_live_host_tells_its_memory(system_conn):
    from vscen import read_host

    memory = read_host("qemu:///system").fact("fleet.memory")
    assert 0 < memory["free_kib"] <= memory["available_kib"] <= memory["total_kib"]
    assert read_host("test:///default").fact("fleet.memory") is None  # made-up figures: not used
