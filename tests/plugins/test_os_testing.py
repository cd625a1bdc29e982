"""The os-testing scenario, its first-boot snapshot, ``vscen snapshot`` and transient guests.

Rendering and rules on recorded hosts; plans and the snapshot commands on libvirt's in-process
``test:///default`` driver (a connection held open keeps its state between calls); the real
thing on ``qemu:///system``: a TCG guest on an overlay of a small base image, snapshotted
before its first boot, written to, reverted twice (disks, NVRAM and TPM state), destroyed
leaving nothing; and a transient guest that runs and is gone after ``vscen destroy``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import render_for
from lxml import etree
from typer.testing import CliRunner

from vscen.errors import ExistsError, LibvirtError, RulesError, UsageError
from vscen.model import Feature, HostAction, Step

TEST_URI = "test:///default"
IMAGES = Path("/var/lib/libvirt/images")
NVRAM_DIR = Path("/var/lib/libvirt/qemu/nvram")
SWTPM_DIR = Path("/var/lib/libvirt/swtpm")
SNAPSHOT = "vscen-first-boot"


def xml_of(result):
    return etree.fromstring(result.xml.encode())


def render_test(name="ostest", scenarios=("os-testing",), disks=None, plugins=(), **options):
    """Render on test:///default (its reference host), the guest to be defined there."""
    from vscen.pipeline import Request, render

    return render(Request(scenarios=list(scenarios), connect=TEST_URI, disks=disks, plugins=plugins,
                          remove=options.pop("remove", []), add=options.pop("add", []),
                          options={"name": name, "network": "none", **options}))


@pytest.fixture
def test_conn():
    """A connection that keeps test:///default's state alive for the test."""
    import libvirt

    conn = libvirt.open(TEST_URI)
    yield conn
    conn.close()


def apply_plan(result, plan):
    from vscen.apply import apply
    from vscen.journal import Journal

    journal = Journal.open(plan.out_dir, result.settings.name, result.ctx.uri)
    apply(plan, journal, result.connection, result.ctx.registry)
    return journal


def tag() -> str:
    return uuid.uuid4().hex[:8]


# -- the scenario --------------------------------------------------------------------------------


def test_defaults_meet_windows_11_minimums():
    result = render_for(["os-testing"], host="kvm")
    root = xml_of(result)
    assert root.findtext("memory") == str(4 * 1024**2) and root.find("memory").get("unit") == "KiB"
    assert root.findtext("vcpu") == "2"
    assert root.find("os/type").get("machine") == "q35"
    assert root.find("os").get("firmware") == "efi"
    assert {f.get("name"): f.get("enabled") for f in root.iterfind("os/firmware/feature")} == {
        "secure-boot": "yes", "enrolled-keys": "yes"}
    assert root.find("features/smm").get("state") == "on"
    tpm = root.find("devices/tpm")
    assert tpm.get("model") == "tpm-crb" and tpm.find("backend").attrib == {"type": "emulator", "version": "2.0"}
    assert root.find("cpu").get("mode") == "host-passthrough"  # the installer's CPU checks see the host's
    assert [d.find("driver").get("type") for d in root.iterfind("devices/disk[@device='disk']")] == ["qcow2"]
    assert result.settings.disks[0].size == 64 * 1024**3
    assert root.find("devices/serial") is not None and root.find("devices/graphics") is not None
    assert not [n for n in result.ctx.notes if "Windows 11" in n]


def test_what_is_below_windows_11_is_noted():
    result = render_for(["os-testing"], host="kvm", remove=["secure-boot"],
                        options={"memory": "1GiB", "vcpu": 1}, disks=["size=20G"])
    assert xml_of(result).find("os/firmware") is None and xml_of(result).find("features/smm") is None
    assert xml_of(result).find("os").get("firmware") == "efi"  # UEFI stays without Secure Boot
    assert ("os-testing: below Windows 11's minimums (fine for other systems): memory 1GiB < 4GiB, "
            "1 vCPU < 2, disk 20GiB < 64GiB, no Secure Boot") in result.ctx.notes


def test_a_host_without_secure_boot_firmware_is_noted_too():
    result = render_for(["os-testing"], host="tcg")
    assert any(n.endswith("no Secure Boot") and "Windows 11" in n for n in result.ctx.notes)


def test_boots_an_iso_or_the_network():
    root = xml_of(render_for(["os-testing"], host="kvm", options={"cdrom": "/isos/installer.iso"}))
    assert [b.get("dev") for b in root.iterfind("os/boot")] == ["cdrom", "hd"]
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("file") == "/isos/installer.iso" and cdrom.find("readonly") is not None
    root = xml_of(render_for(["os-testing"], host="kvm", options={"boot": "network,hd"}))
    assert [b.get("dev") for b in root.iterfind("os/boot")] == ["network", "hd"]
    assert root.find("devices/interface/model").get("type") == "virtio"


def test_an_overlay_on_a_base_image():
    result = render_for(["os-testing"], host="kvm", disks=["path=/vms/try.qcow2,backing=/base/debian.qcow2"])
    assert result.settings.disks[0].backing == "/base/debian.qcow2"
    disk = xml_of(result).find("devices/disk[@device='disk']")
    assert disk.find("source").get("file") == "/vms/try.qcow2" and disk.find("driver").get("type") == "qcow2"


# -- rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("other, reasons", [
    ("secure-vm", ["installers reboot the guest", "cannot live-migrate"]),
    ("computation", ["headless", "disk.format: scenario 'os-testing' wants 'qcow2'"]),
])
def test_scenarios_it_cannot_be_combined_with(other, reasons):
    with pytest.raises(RulesError) as exc:
        render_for(["os-testing", other], host="amd-sev")
    for reason in reasons:
        assert reason in str(exc.value)


def test_destroy_on_events_is_refused_with_the_reason():
    with pytest.raises(RulesError, match="installers reboot the guest, and destroy-on-events would stop it"):
        render_for(["os-testing"], host="kvm", add=["destroy-on-events"])


def test_it_composes_with_desktop():
    root = xml_of(render_for(["os-testing", "desktop"], host="kvm"))
    assert root.find("devices/sound") is not None and root.find("devices/tpm") is not None


def test_first_boot_snapshot_requires_storage():
    with pytest.raises(RulesError, match="'first-boot-snapshot' requires 'storage'"):
        render_for(["os-testing"], host="kvm", remove=["storage"])


@pytest.mark.parametrize("disks, options, message", [
    (None, {"transient": "yes"}, "transient: first-boot-snapshot needs a defined guest"),
    (["format=raw"], {}, "disk.format: 'raw' for /var/lib/libvirt/images/ostest.raw: the first-boot snapshot "
                         "lives inside the disks, which needs qcow2"),
    (["encrypt=yes"], {}, "disk.encrypt: /var/lib/libvirt/images/ostest.qcow2 is encrypted, and libvirt 9.0 "
                          "cannot snapshot"),
])
def test_what_the_snapshot_cannot_do_is_refused_by_its_plan(disks, options, message):
    result = render_test(disks=disks, **options)
    action = result.ctx.registry.host_actions["first-boot-snapshot"]
    assert action.after_define
    with pytest.raises(UsageError, match=message) as exc:
        action.plan(result.ctx)
    assert "--feature -first-boot-snapshot" in str(exc.value)
    result.connection.close()


def test_transient_refusal_exits_2_on_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vscen.cli", "run", "os-testing", "--transient", "--connect", TEST_URI,
                           "--network", "none", "--output", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: transient: first-boot-snapshot needs a defined guest")
    # refused by the plan: nothing made (but conftest's XDG directories, where the caches live)
    assert not [p for p in tmp_path.iterdir() if p.name not in ("config", "data", "cache")]


# -- plans on test:///default ----------------------------------------------------------------------


def test_snapshot_comes_after_define_and_before_start(test_conn, tmp_path):
    from vscen.plan import make_plan

    result = render_test(name=f"vscen-test-{tag()}")
    descriptions = [s.description for s in make_plan(result, tmp_path, start=True).steps]
    define = descriptions.index(f"define domain on {TEST_URI}")
    snap = descriptions.index(f"take snapshot {SNAPSHOT} of {result.settings.name}'s disks before its first boot")
    start = descriptions.index(f"start domain {result.settings.name}")
    assert define < snap < start == len(descriptions) - 1


def after_define_plugin(log: list):
    """An inline plugin with an after-define host action, to see where make_plan puts it."""
    import vscen

    class Plugin:
        @vscen.hookimpl
        def vscen_register_features(self, register):
            register(Feature(name="late", summary="s", details="d", host_actions=("late-action",)))

        @vscen.hookimpl
        def vscen_register_host_actions(self, register):
            register(HostAction(name="late-action", summary="s", after_define=True, undo=lambda c, r: None,
                                plan=lambda ctx: [Step("late step", lambda: log.append("late"))]))

    return ("late-plugin", Plugin())


def test_after_define_is_general_and_comes_before_a_transient_create(test_conn, tmp_path):
    from vscen.plan import make_plan

    plugin = after_define_plugin([])
    result = render_test(name=f"vscen-test-{tag()}", scenarios=(), add=["late", "storage"], plugins=(plugin,))
    steps = make_plan(result, tmp_path, start=True).steps
    assert [s.owner for s in steps][-3:] == ["vscen", "late-action", "vscen"]  # define, late, start
    result = render_test(name=f"vscen-test-{tag()}", scenarios=(), add=["late", "storage"], plugins=(plugin,),
                         transient="yes")
    steps = make_plan(result, tmp_path, start=True).steps
    assert [s.description for s in steps][-2:] == [
        "late step", f"create and start transient domain on {TEST_URI} (never defined; gone when it stops)"]
    assert not [s for s in steps if s.description.startswith(("define domain", "start domain"))]


def test_run_again_changes_nothing_and_an_existing_domain_gets_no_snapshot(test_conn, tmp_path):
    from vscen.plan import make_plan

    name = f"vscen-test-{tag()}"
    result = render_test(name=name)
    apply_plan(result, make_plan(result, tmp_path))
    assert [s.getName() for s in test_conn.lookupByName(name).listAllSnapshots()] == [SNAPSHOT]
    again = render_test(name=name)
    assert make_plan(again, tmp_path).steps == []
    assert f"first-boot-snapshot: {name} has its snapshot {SNAPSHOT}: unchanged" in again.ctx.notes
    test_conn.lookupByName(name).snapshotLookupByName(SNAPSHOT).delete()
    other = render_test(name=name)
    assert make_plan(other, tmp_path).steps == []
    assert any(n.startswith(f"first-boot-snapshot: domain {name} exists already and may have booted: no snapshot")
               for n in other.ctx.notes)


def test_an_existing_image_gets_an_overlay_recommended(test_conn):
    pool = test_conn.storagePoolLookupByName("default-pool")
    name = f"vscen-test-{tag()}.qcow2"
    vol = pool.createXML(f"<volume><name>{name}</name><capacity>1048576</capacity>"
                         "<target><format type='qcow2'/></target></volume>", 0)
    try:
        from vscen.plan import make_plan

        result = render_test(disks=[f"path={vol.path()}"])
        make_plan(result, Path("/nonexistent-output"))
        assert any(n.startswith(f"os-testing: disk {vol.path()} exists: the guest writes into it")
                   and f"backing={vol.path()}" in n for n in result.ctx.notes)
        fresh = render_test(disks=[f"path=/default-pool/vscen-test-{tag()}.qcow2"])
        make_plan(fresh, Path("/nonexistent-output"))
        assert not [n for n in fresh.ctx.notes if "os-testing: disk" in n]
    finally:
        vol.delete()


def test_transient_guest_on_the_test_driver(test_conn, tmp_path):
    from vscen.apply import rollback
    from vscen.plan import make_plan

    name = f"vscen-test-{tag()}"
    result = render_test(name=name, transient="yes", remove=["first-boot-snapshot"])
    journal = apply_plan(result, make_plan(result, tmp_path))
    dom = test_conn.lookupByName(name)
    assert dom.isActive() and not dom.isPersistent()
    again = make_plan(render_test(name=name, transient="yes", remove=["first-boot-snapshot"]), tmp_path)
    assert again.steps == [] and f"transient domain {name} on {TEST_URI} is running and up to date" in again.unchanged
    other = render_test(name=name, transient="yes", remove=["first-boot-snapshot"], memory="3GiB")
    with pytest.raises(ExistsError, match="runs with another definition"):
        make_plan(other, tmp_path)
    assert rollback(list(journal.entries), journal, result.connection, result.ctx.registry) == []
    assert name not in [d.name() for d in test_conn.listAllDomains()]


# -- vscen snapshot on test:///default -------------------------------------------------------------


def cli(*args):
    from vscen.cli import app

    return CliRunner().invoke(app, list(args))


def test_snapshot_commands_refuse_a_guest_vscen_did_not_make(test_conn, tmp_path):
    for command in ("list", "revert"):
        res = cli("snapshot", command, "test", "--output", str(tmp_path))
        assert isinstance(res.exception, UsageError)
        assert str(res.exception) == (f"snapshot: vscen made no guest 'test' here (no {tmp_path}/test/journal.json); "
                                      "it touches only its own guests")
    assert test_conn.lookupByName("test").isActive()  # the test driver's own guest: untouched


def test_snapshot_list_and_revert_on_the_test_driver(test_conn, tmp_path):
    name = f"vscen-test-{tag()}"
    out = str(tmp_path)
    res = cli("run", "os-testing", "--name", name, "--connect", TEST_URI, "--network", "none", "--output", out,
              "--start", "--disk", f"path=/default-pool/{name}.qcow2,size=1G")
    assert res.exit_code == 0, res.output
    rows = json.loads(cli("snapshot", "list", name, "--output", out, "--json").output)
    assert [(r["name"], r["state"], r["vscen"], r["before_first_boot"]) for r in rows] == [
        (SNAPSHOT, "shutoff", True, True)]
    for _ in range(2):
        res = cli("snapshot", "revert", name, "--output", out, "--start")
        assert res.exit_code == 0, res.output
        assert res.output.splitlines()[0] == f"stopped {name} (it was running)"
        assert f"{TEST_URI} keeps no firmware variables or TPM state" in res.output
        assert test_conn.lookupByName(name).isActive()
    test_conn.lookupByName(name).snapshotLookupByName(SNAPSHOT).delete()
    res = cli("snapshot", "revert", name, "--output", out)
    assert isinstance(res.exception, LibvirtError) and "is gone" in str(res.exception)
    assert cli("destroy", name, "--output", out).exit_code == 0
    assert name not in [d.name() for d in test_conn.listAllDomains()]


def test_revert_refuses_a_guest_without_a_snapshot(test_conn, tmp_path):
    name = f"vscen-test-{tag()}"
    res = cli("run", "os-testing", "--name", name, "--connect", TEST_URI, "--network", "none", "--output", str(tmp_path),
              "--feature", "-first-boot-snapshot", "--disk", f"path=/default-pool/{name}.qcow2,size=1G")
    assert res.exit_code == 0, res.output
    res = cli("snapshot", "revert", name, "--output", str(tmp_path))
    assert isinstance(res.exception, UsageError)
    assert str(res.exception) == (f"snapshot: vscen took no snapshot of '{name}' (none of its features asked for one): "
                                  "nothing to revert to")
    assert cli("snapshot", "list", name, "--output", str(tmp_path)).output == f"{name} has no snapshots\n"
    assert cli("destroy", name, "--output", str(tmp_path)).exit_code == 0


def test_revert_leaves_another_domain_of_the_same_name_alone(test_conn, tmp_path):
    import libvirt

    name = f"vscen-test-{tag()}"
    res = cli("run", "os-testing", "--name", name, "--connect", TEST_URI, "--network", "none", "--output", str(tmp_path),
              "--disk", f"path=/default-pool/{name}.qcow2,size=1G")
    assert res.exit_code == 0, res.output
    ours = test_conn.lookupByName(name)
    xml = ours.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace(f"<uuid>{ours.UUIDString()}</uuid>", "")
    ours.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    other = test_conn.defineXML(xml)
    res = cli("snapshot", "revert", name, "--output", str(tmp_path))
    assert isinstance(res.exception, UsageError) and "is not the one vscen made" in str(res.exception)
    assert test_conn.lookupByName(name).UUIDString() == other.UUIDString()
    other.undefine()
    assert cli("destroy", name, "--output", str(tmp_path)).exit_code == 0


# -- on qemu:///system ---------------------------------------------------------------------------


def host_state(conn, tag: str) -> dict:
    """The end-to-end tests' view (domains, networks, pools, secrets), narrowed to what names
    *tag*: other tests may make and remove their own things on the same daemon meanwhile."""
    import libvirt
    from test_end_to_end import host_state as libvirt_state

    def usage(uuid_: str) -> str:
        try:
            return conn.secretLookupByUUIDString(uuid_).usageID() or ""
        except libvirt.libvirtError:
            return ""

    state = libvirt_state(conn)
    return {key: [n for n in names if tag in (usage(n) if key == "secrets" else n)] for key, names in state.items()}


class Guest:
    """A test guest with unique names, its own image directory and output directory."""

    def __init__(self, conn, tmp_path: Path):
        t = self.tag = tag()
        self.conn = conn
        self.name = f"vscen-test-{t}-os"
        self.images = IMAGES / f"vscen-test-{t}"
        self.output = tmp_path / "out"
        self.nvram = NVRAM_DIR / f"{self.name}_VARS.fd"

    def vscen(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
        proc = subprocess.run([sys.executable, "-m", "vscen.cli", *args], capture_output=True, text=True, env=env)
        if check:
            assert proc.returncode == 0, f"vscen {' '.join(args)}: {proc.stderr}"
        return proc

    def run_args(self, *extra: str) -> list[str]:
        return ["run", "os-testing", "--name", self.name, "--connect", "qemu:///system", "--virt-type", "qemu",
                "--memory", "256MiB", "--vcpu", "1", "--network", "none", "--output", str(self.output), *extra]

    def cleanup(self) -> None:
        """Whatever a failed test left, by name."""
        import libvirt

        try:
            dom = self.conn.lookupByName(self.name)
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        except libvirt.libvirtError:
            pass
        for pool in self.conn.listAllStoragePools():
            if f"<path>{self.images}</path>" in pool.XMLDesc():
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
        self.nvram.unlink(missing_ok=True)
        shutil.rmtree(self.images, ignore_errors=True)


@pytest.fixture
def guest(system_conn, tmp_path):
    g = Guest(system_conn, tmp_path)
    yield g
    g.cleanup()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_img(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def pristine(overlay: Path, base: Path) -> bool:
    """Nothing written to the overlay: no data of its own, and it reads as its base."""
    extents = json.loads(qemu_img("map", "-U", "--output=json", str(overlay)).stdout)
    own = [e for e in extents if e["depth"] == 0 and e["data"]]
    return not own and qemu_img("compare", "-U", str(base), str(overlay)).returncode == 0


def test_overlay_snapshot_before_first_boot_revert_twice_destroy_leaves_nothing(system_conn, guest):
    before = host_state(system_conn, guest.tag)
    guest.images.mkdir()
    base, overlay = guest.images / "base.qcow2", guest.images / "try.qcow2"
    assert qemu_img("create", "-f", "qcow2", str(base), "16M").returncode == 0
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 2M", str(base)], check=True, capture_output=True)
    base_sum = sha256(base)

    run = guest.vscen(*guest.run_args("--boot", "hd", "--disk", f"path={overlay},backing={base},size=64M", "--start"))
    progress = [line.split("] ", 1)[1] for line in run.stderr.splitlines() if line.startswith("[")]
    assert progress[-3:] == ["define domain on qemu:///system",
                             f"take snapshot {SNAPSHOT} of {guest.name}'s disks before its first boot",
                             f"start domain {guest.name}"]
    dom = system_conn.lookupByName(guest.name)
    assert dom.isActive()
    made = host_state(system_conn, guest.tag)
    assert made["domains"] == [guest.name] and len(made["pools"]) == 1  # the view sees what the run made
    snap = etree.fromstring(dom.snapshotLookupByName(SNAPSHOT).getXMLDesc().encode())
    assert snap.findtext("state") == "shutoff"  # taken of the defined guest, before it ran
    assert [d.get("snapshot") for d in snap.iterfind("disks/disk")] == ["internal"]
    info = json.loads(qemu_img("info", "-U", "--output=json", str(overlay)).stdout)
    assert info["backing-filename"] == str(base) and [s["name"] for s in info["snapshots"]] == [SNAPSHOT]
    assert sha256(base) == base_sum
    uuid_ = dom.UUIDString()
    assert guest.nvram.exists() and (SWTPM_DIR / uuid_).is_dir()  # the first boot made them

    dom.destroy()
    for round_ in range(2):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x{0x5a + round_:x} 0 1M", str(overlay)],
                       check=True, capture_output=True)
        assert not pristine(overlay, base)
        revert = guest.vscen("snapshot", "revert", guest.name, "--output", str(guest.output))
        assert "its firmware variables and TPM state removed" in revert.stdout
        assert pristine(overlay, base), f"round {round_}: the overlay is not as before the first boot"
        assert sha256(base) == base_sum
        dom = system_conn.lookupByName(guest.name)
        assert not dom.isActive() and dom.UUIDString() == uuid_
        assert not guest.nvram.exists() and not (SWTPM_DIR / uuid_).exists()
        rows = json.loads(guest.vscen("snapshot", "list", guest.name, "--output", str(guest.output), "--json").stdout)
        assert [(r["name"], r["current"], r["before_first_boot"]) for r in rows] == [(SNAPSHOT, True, True)]
    # and it boots again from there, with firmware state made afresh
    again = guest.vscen("snapshot", "revert", guest.name, "--output", str(guest.output), "--start")
    assert again.stdout.splitlines()[-1] == f"started {guest.name}"
    assert system_conn.lookupByName(guest.name).isActive() and guest.nvram.exists()
    assert "nothing to do" in guest.vscen(*guest.run_args("--boot", "hd", "--disk",
                                                          f"path={overlay},backing={base},size=64M", "--start")).stdout

    guest.vscen("destroy", guest.name, "--output", str(guest.output))
    assert host_state(system_conn, guest.tag) == before
    assert not guest.nvram.exists() and not (SWTPM_DIR / uuid_).exists()
    assert sorted(p.name for p in guest.images.iterdir()) == ["base.qcow2"] and sha256(base) == base_sum
    assert not (guest.output / guest.name).exists()


def test_transient_guest_runs_and_is_gone_after_destroy(system_conn, guest):
    import libvirt

    before = host_state(system_conn, guest.tag)
    disk = guest.images / "t.qcow2"
    guest.vscen(*guest.run_args("--transient", "--feature", "-first-boot-snapshot", "--disk", f"path={disk},size=16M"))
    dom = system_conn.lookupByName(guest.name)
    assert dom.isActive() and not dom.isPersistent()
    made = host_state(system_conn, guest.tag)
    assert made["domains"] == [guest.name] and len(made["pools"]) == 1
    assert guest.name not in [d.name() for d in system_conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)]
    uuid_ = dom.UUIDString()
    assert guest.nvram.exists() and (SWTPM_DIR / uuid_).is_dir()
    status = json.loads(guest.vscen("status", guest.name, "--output", str(guest.output), "--json").stdout)
    assert [s["state"] for s in status] == ["running"]
    assert "nothing to do" in guest.vscen(*guest.run_args("--transient", "--feature", "-first-boot-snapshot",
                                                          "--disk", f"path={disk},size=16M")).stdout
    guest.vscen("destroy", guest.name, "--output", str(guest.output))
    assert host_state(system_conn, guest.tag) == before  # no domain, pool, network or secret left
    assert not guest.nvram.exists() and not (SWTPM_DIR / uuid_).exists()  # nor firmware or TPM state
    assert not disk.exists() and not (guest.output / guest.name).exists()
