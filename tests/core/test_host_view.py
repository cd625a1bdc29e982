"""The host view: new host facts on recorded hosts, local facts on a fake sysfs tree, the
``<hostFacts>`` snapshot round trip, and ``vscen host`` / ``host check`` / ``host snapshot``
on the real command line (recorded hosts, and qemu:///system where a daemon runs).

``vscen host check`` runs the built-in scenarios' host validators, so those tests use the
built-in plugins (unlike the other core tests)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from coresupport import cli_env, error_lines, load_tests_conftest, vscen

from vscen.host import local as hl
from vscen.host.facts import Machine, load_files, parse, reference, snapshot
from vscen.host.local import FirmwareDescriptor, LocalFacts, NodePages

conftest = load_tests_conftest()
host_files = conftest.host_files

OVMF = ("/usr/share/OVMF/OVMF_CODE_4M.ms.fd", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "/usr/share/OVMF/OVMF_CODE_4M.fd")


def facts_of(host: str):
    return load_files(host_files(host))


def builtins_env(**extra) -> dict:
    return cli_env(disable_builtins=False, **extra)


def files_args(host: str) -> list[str]:
    return [arg for f in host_files(host) for arg in ("--host-facts", str(f))]


def daemon_or_skip():
    conn = conftest.qemu_system()
    if conn is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run libvirtd (scripts/setup.sh --daemons), but qemu:///system is unreachable")
        pytest.skip("no libvirt daemon at qemu:///system")
    conn.close()


# -- new facts on recorded hosts ----------------------------------------------------------------


def test_machine_types_with_their_canonical_aliases():
    local = facts_of("local-kvm")
    assert local.machine_aliases == {"pc": "pc-i440fx-7.2", "q35": "pc-q35-7.2"}
    names = [m.name for m in local.machines]
    assert len(names) == len(set(names)) == 60
    assert names.index("pc-q35-2.9") < names.index("pc-q35-2.10")  # in version order
    assert Machine("q35", "pc-q35-7.2", 288) in local.machines
    assert next(m for m in local.machines if m.name == "pc-i440fx-1.5").deprecated
    # the caps' x86_64 guest, not the many other arches of that host
    sev = facts_of("amd-sev")
    assert sev.machine_aliases["q35"] == "pc-q35-11.0" and "virt" not in sev.machine_aliases
    assert facts_of("tcg").machines == ()  # domcaps only: no capabilities, no machine list
    assert reference().machines == (Machine("pc-q35-8.2", "", 288), Machine("q35", "pc-q35-8.2", 288))


@pytest.mark.parametrize("host, images", [
    ("local-kvm", OVMF),
    ("amd-sev", ("/obviously/fake/firmware1.fd", "/obviously/fake/firmware2.fd")),
])
def test_firmware_images_from_domain_capabilities(host, images):
    assert facts_of(host).firmware_images == images


@pytest.mark.parametrize("host", sorted(conftest.HOSTS))
def test_recorded_hosts_have_no_local_facts_nor_versions(host):
    facts = facts_of(host)
    assert facts.local is None
    assert (facts.libvirt_version, facts.hypervisor_version) == ("", "")


# -- local facts on a fake tree -----------------------------------------------------------------


def write(root: Path, rel: str, text: str = "") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """An empty fake root that vscen.host.local reads from."""
    monkeypatch.setattr(hl, "SYSFS_ROOT", tmp_path)
    return tmp_path


def amd_host(root: Path, sev="Y", sev_es="Y", sev_snp="N", dev_sev=True):
    write(root, "dev/kvm")
    (root / "sys/module/kvm").mkdir(parents=True)
    for name, value in (("sev", sev), ("sev_es", sev_es), ("sev_snp", sev_snp)):
        write(root, f"sys/module/kvm_amd/parameters/{name}", value + "\n")
    if dev_sev:
        write(root, "dev/sev")
    write(root, "proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 mem_encrypt=on quiet\n")


def test_an_empty_tree_knows_nothing(tree):
    facts = hl.read()
    assert facts == LocalFacts()
    assert facts.ksm == "unavailable"


def test_kvm_modules_and_the_kernel_command_line(tree):
    # the launch-security module parameters and /dev/sev are the launch-security plugin's to
    # read (tests/plugins/test_launch_security_facts.py)
    amd_host(tree)
    facts = hl.read()
    assert facts.modules == ("kvm", "kvm_amd")
    assert facts.kvm_device and facts.kvm_usable
    assert facts.cmdline_has("mem_encrypt=on") and not facts.cmdline_has("mem_encrypt")
    assert hl.host_path("/dev/sev") == tree / "dev/sev"


def test_an_intel_host(tree):
    write(tree, "sys/module/kvm_intel/parameters/nested", "Y\n")
    facts = hl.read()
    assert facts.modules == ("kvm_intel",)
    assert not facts.kvm_device and not facts.kvm_usable


@pytest.mark.parametrize("enabled, defrag, want", [
    ("always [madvise] never", "always defer defer+madvise [madvise] never", ("madvise", "madvise")),
    ("[always] madvise never", "[always] defer defer+madvise madvise never", ("always", "always")),
    ("always madvise [never]", "always defer [defer+madvise] madvise never", ("never", "defer+madvise")),
])
def test_transparent_hugepages(tree, enabled, defrag, want):
    write(tree, "sys/kernel/mm/transparent_hugepage/enabled", enabled + "\n")
    write(tree, "sys/kernel/mm/transparent_hugepage/defrag", defrag + "\n")
    facts = hl.read()
    assert (facts.thp_enabled, facts.thp_defrag) == want


@pytest.mark.parametrize("run, state", [("0", "stopped"), ("1", "running"), ("2", "unmerging")])
def test_ksm(tree, run, state):
    write(tree, "sys/kernel/mm/ksm/run", run + "\n")
    facts = hl.read()
    assert facts.ksm_run == int(run) and facts.ksm == state


def test_hugepages_per_node_and_size(tree):
    for node, size, total, free in ((0, 2048, 512, 100), (0, 1048576, 0, 0), (1, 2048, 512, 512),
                                    (1, 1048576, 4, 3)):
        base = f"sys/devices/system/node/node{node}/hugepages/hugepages-{size}kB"
        write(tree, f"{base}/nr_hugepages", f"{total}\n")
        write(tree, f"{base}/free_hugepages", f"{free}\n")
    write(tree, "sys/devices/system/node/possible", "0-1\n")  # not a node directory
    assert hl.read().hugepages == (NodePages(0, 2048, 512, 100), NodePages(0, 1048576, 0, 0),
                                   NodePages(1, 2048, 512, 512), NodePages(1, 1048576, 4, 3))


def test_iommu_groups_programs_and_firmware_descriptors(tree):
    for group in ("0", "1", "2"):
        (tree / "sys/kernel/iommu_groups" / group).mkdir(parents=True)
    for rel in ("usr/bin/swtpm", "usr/libexec/virtiofsd"):
        os.chmod(write(tree, rel, "#!/bin/sh\n"), 0o755)
    sev = {"description": "OVMF with SEV", "interface-types": ["uefi"],
           "mapping": {"device": "flash", "executable": {"filename": "/usr/share/OVMF/OVMF_CODE.sev.fd"},
                       "nvram-template": {"filename": "/usr/share/OVMF/OVMF_VARS.fd"}},
           "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
           "features": ["amd-sev", "amd-sev-es", "acpi-s3"]}
    snp = {"interface-types": ["uefi"], "mapping": {"device": "memory", "filename": "/usr/share/OVMF/OVMF.amdsev.fd"},
           "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}], "features": ["amd-sev-snp"]}
    write(tree, "usr/share/qemu/firmware/30-sev.json", json.dumps(sev))
    write(tree, "usr/share/qemu/firmware/20-snp.json", json.dumps(snp))
    write(tree, "usr/share/qemu/firmware/60-hidden.json", json.dumps(snp))
    write(tree, "etc/qemu/firmware/60-hidden.json", "")  # an empty file in /etc masks it
    write(tree, "usr/share/qemu/firmware/README", "not a descriptor")
    facts = hl.read()
    assert facts.iommu_groups == 3
    assert (facts.swtpm, facts.virtiofsd) == ("/usr/bin/swtpm", "/usr/libexec/virtiofsd")
    assert [Path(f.file).name for f in facts.firmware] == ["20-snp.json", "30-sev.json"]
    assert facts.firmware[0].executable == "/usr/share/OVMF/OVMF.amdsev.fd"
    assert facts.firmware[1] == FirmwareDescriptor(
        file="/usr/share/qemu/firmware/30-sev.json", executable="/usr/share/OVMF/OVMF_CODE.sev.fd",
        nvram_template="/usr/share/OVMF/OVMF_VARS.fd", description="OVMF with SEV", device="flash",
        interfaces=("uefi",), architectures=("x86_64",), machines=("pc-q35-*",),
        features=("amd-sev", "amd-sev-es", "acpi-s3"))


def test_a_program_that_is_not_executable_is_not_found(tree):
    write(tree, "usr/bin/swtpm", "")
    assert hl.read().swtpm == ""


# -- snapshot round trip ------------------------------------------------------------------------


def full_local_facts(tree) -> LocalFacts:
    amd_host(tree)
    write(tree, "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    write(tree, "sys/kernel/mm/ksm/run", "1\n")
    base = "sys/devices/system/node/node0/hugepages/hugepages-2048kB"
    write(tree, f"{base}/nr_hugepages", "1024\n")
    write(tree, f"{base}/free_hugepages", "1000\n")
    os.chmod(write(tree, "usr/bin/swtpm", ""), 0o755)
    write(tree, "usr/share/qemu/firmware/50-x.json", json.dumps(
        {"mapping": {"device": "flash", "executable": {"filename": "/x.fd"}}, "features": ["secure-boot"]}))
    return hl.read()


def test_local_facts_round_trip_through_xml(tree):
    facts = full_local_facts(tree)
    assert facts.modules and facts.hugepages and facts.firmware and facts.swtpm
    assert hl.from_xml(hl.to_xml(facts)) == facts
    assert hl.from_xml(hl.to_xml(LocalFacts())) == LocalFacts()


def test_snapshot_round_trip(tree, tmp_path):
    local = full_local_facts(tree)
    caps, domcaps = (Path(p).read_text() for p in host_files("amd-sev"))
    free = {0: {4: 100, 2048: 7, 1048576: 0}}
    live = parse(caps, domcaps, "qemu:///system", free_pages=free, libvirt_version="9.0.0",
                 hypervisor_version="7.2.22", local=local)
    path = tmp_path / "snapshot.xml"
    path.write_text(snapshot(caps, domcaps, uri="qemu:///system", libvirt_version="9.0.0",
                             hypervisor_version="7.2.22", free_pages=free, local=local))
    back = load_files([path])
    assert back.source == f"{path} (snapshot of qemu:///system)"
    assert back == replace(live, source=back.source)
    assert back.local == local and back.enums == live.enums
    assert back.cells[0].free_pages == free[0] and back.cells[0].free(2048) == 7
    # without local facts or versions (a remote host) it reads back as well
    path.write_text(snapshot(caps, domcaps, uri="qemu+ssh://far/system"))
    assert load_files([path]) == replace(facts_of("amd-sev"), source=f"{path} (snapshot of qemu+ssh://far/system)")


# -- the command line: vscen host ---------------------------------------------------------------


def test_host_json_on_a_recorded_sev_host():
    proc = vscen("host", "--json", *files_args("amd-sev"), env=builtins_env())
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["connection"] is None and data["local"] is False
    assert (data["arch"], data["domain_type"], data["machine"]) == ("x86_64", "kvm", "pc-q35-10.0")
    flags = data["cpu"].pop("flags")  # with the named model's where libvirt's cpu_map knows it
    assert data["cpu"] == {"vendor": "AMD", "model": "Opteron_G3-v1", "host_model": "EPYC-Genoa",
                           "sockets": 1, "dies": 1, "cores": 16, "threads": 2, "count": 32}
    assert flags == sorted(flags) and {"arch-capabilities", "flushbyasid", "gds-no"} <= set(flags)
    assert data["numa"][0]["hugepages"] == [{"size_kib": 2048, "total": 0, "free": None},
                                            {"size_kib": 1048576, "total": 0, "free": None}]
    # confidential computing is the launch-security plugin's fact, shown as the plugins' facts are
    assert data["facts"]["launch-security.host"] == {
        "offered": ["sev-snp", "sev-es", "sev"],
        "sev": {"cbitpos": 51, "reduced_phys_bits": 1, "max_guests": 59, "max_es_guests": 450},
        "kernel": None, "sev_device": None}  # recorded: the kernel's side is unknown
    assert data["iommu"] == {"capabilities": True, "groups": None}
    assert data["firmware"]["images"] == ["/obviously/fake/firmware1.fd", "/obviously/fake/firmware2.fd"]
    assert {"name": "q35", "canonical": "pc-q35-11.0", "max_cpus": 4096, "deprecated": False} in data["machines"]
    assert data["thp"] is None and data["ksm"] is None and data["programs"] is None
    assert data["libvirt_version"] is None


def test_host_table_on_a_recorded_tcg_host():
    proc = vscen("host", *files_args("local-tcg"), env=builtins_env())
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^host +\S+caps-local-libvirt9.xml", out, re.M)
    assert re.search(r"^kvm +not offered by libvirt \(TCG only\)$", out, re.M)
    assert re.search(r"^AMD SEV +not offered$", out, re.M)
    assert re.search(r"^launch security +offered: none;", out, re.M)
    assert re.search(r"^machine types +pc = pc-i440fx-7.2, q35 = pc-q35-7.2; 58 types:", out, re.M)
    assert re.search(r"^firmware image +/usr/share/OVMF/OVMF_CODE_4M.secboot.fd$", out, re.M)
    assert re.search(r"^swtpm +unknown \(recorded facts\)$", out, re.M)
    assert re.search(r"^numa cell 0 +4.3 GiB, CPUs 0-1; 2 MiB pages: 0 total, free unknown", out, re.M)


def test_host_on_the_embedded_driver_shows_the_reference_host():
    proc = vscen("host", "--json", "--connect", "test:///default", env=builtins_env())
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["source"].startswith("reference host") and data["connection"] == "test:///default"
    assert data["facts"]["launch-security.host"]["offered"] == ["sev-es", "sev"]


def test_host_options_belong_after_the_subcommand():
    proc = vscen("host", "--json", "snapshot", env=builtins_env())
    assert proc.returncode == 2
    assert "after the subcommand" in error_lines(proc.stderr)[0]


def test_host_on_qemu_system():
    daemon_or_skip()
    proc = vscen("host", "--json", "--connect", "qemu:///system", env=builtins_env())
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["connection"] == data["source"] == "qemu:///system" and data["local"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", data["libvirt_version"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", data["hypervisor_version"])
    assert data["kvm"]["device"] is not None and data["kvm"]["modules"] is not None
    assert data["thp"] is not None and data["ksm"]["state"]
    assert data["firmware"]["descriptors"] is not None
    assert data["machine"]  # q35's versioned type on x86
    table = vscen("host", "--connect", "qemu:///system", env=builtins_env())
    assert table.returncode == 0, table.stderr
    assert re.search(r"^host +qemu:///system, live$", table.stdout, re.M)
    assert re.search(r"^libvirt +\d+\.\d+\.\d+, QEMU \d+\.\d+\.\d+$", table.stdout, re.M)
    assert re.search(r"^transparent hugepages +enabled \S+, defrag \S+$", table.stdout, re.M)


# -- vscen host check ---------------------------------------------------------------------------


def test_host_check_secure_vm_on_a_sev_host_passes():
    proc = vscen("host", "check", "secure-vm", *files_args("amd-sev"), env=builtins_env())
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^ok   confidential-computing: the host offers sev-snp, sev-es, sev", proc.stdout, re.M)
    assert re.search(r"^ok   uefi-firmware:", proc.stdout, re.M)
    assert "FAIL" not in proc.stdout and proc.stdout.rstrip().splitlines()[-1].startswith("ready:")


def test_host_check_secure_vm_on_tcg_fails_naming_the_check_and_the_fix():
    proc = vscen("host", "check", "secure-vm", *files_args("tcg"), env=builtins_env())
    assert proc.returncode == 4, proc.stderr
    assert re.search(r"^FAIL confidential-computing: the host offers no launch security", proc.stdout, re.M)
    assert re.search(r"^     fix: Confidential guests need KVM", proc.stdout, re.M)
    assert re.search(r"^WARN kvm: ", proc.stdout, re.M)
    assert error_lines(proc.stderr) == ["error: the host is not ready for secure-vm: confidential-computing failed"]


def test_host_check_json_and_features():
    proc = vscen("host", "check", "secure-vm", "--json", "--feature", "-tpm", *files_args("tcg"),
                 env=builtins_env())
    assert proc.returncode == 4
    data = json.loads(proc.stdout)
    assert not data["ready"] and "tpm-emulator" not in data["validators"]
    fail = next(c for c in data["checks"] if c["status"] == "fail")
    assert fail["validator"] == "confidential-computing" and "KVM" in fail["fix"]


def test_host_check_hugepages_fix_names_vscen_run():
    proc = vscen("host", "check", "--feature", "+hugepages", "--memory", "8GiB", *files_args("local-kvm"),
                 env=builtins_env())
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^WARN hugepages: .*8192 MiB", proc.stdout, re.M)
    assert "echo 4096 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages" in proc.stdout
    assert "vscen run --hugepages reserve" in proc.stdout


def test_host_check_needs_a_scenario_and_knows_them():
    assert vscen("host", "check", env=builtins_env()).returncode == 2
    proc = vscen("host", "check", "secure-vn", *files_args("tcg"), env=builtins_env())
    assert proc.returncode == 2 and "did you mean 'secure-vm'" in proc.stderr


def test_host_check_on_qemu_system_reads_the_kernel_side():
    daemon_or_skip()
    proc = vscen("host", "check", "secure-vm", "--json", "--connect", "qemu:///system", env=builtins_env())
    data = json.loads(proc.stdout)
    cc = [c for c in data["checks"] if c["validator"] == "confidential-computing"]
    # the domain capabilities' verdict, then the kernel's side (local facts are known here)
    assert len(cc) == 2 and cc[1]["message"].startswith("kernel: ")
    assert proc.returncode == (4 if any(c["status"] == "fail" for c in data["checks"]) else 0)


# -- vscen host snapshot ------------------------------------------------------------------------


def test_snapshot_of_the_embedded_driver_is_the_reference_host(tmp_path):
    proc = vscen("host", "snapshot", "--connect", "test:///default", env=builtins_env())
    assert proc.returncode == 0 and "reference host" in proc.stderr
    path = tmp_path / "ref.xml"
    path.write_text(proc.stdout)
    back = load_files([path])
    assert replace(back, extra={}) == replace(reference(), source=str(path))
    # and the built-in plugins' facts, as a run on the embedded driver reads them
    assert back.extra == provided(reference(), "test:///default").extra
    assert back.fact("host-hardware.devices") == {"uri": "test:///default", "pci": [], "usb": []}


def provided(facts, uri: str):
    """*facts* with the built-in plugins' facts read on *uri*, as the facts stage does."""
    from vscen.host.connect import open_connection
    from vscen.host.providers import read_provided
    from vscen.pipeline import Request, load

    _pm, reg = load(Request(scenarios=[]))
    conn = open_connection(uri)
    try:
        return read_provided(facts, reg, connection=conn)
    finally:
        conn.close()


def test_snapshot_of_qemu_system_round_trips(tmp_path):
    daemon_or_skip()
    proc = vscen("host", "snapshot", "--connect", "qemu:///system", env=builtins_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("<hostFacts uri=\"qemu:///system\"") and "<local>" in proc.stdout
    path = tmp_path / "snap.xml"
    path.write_text(proc.stdout)
    from vscen.host.connect import open_connection
    from vscen.host.probe import probe_default

    conn = open_connection("qemu:///system")
    try:
        live = probe_default(conn)
    finally:
        conn.close()
    back = load_files([path])
    assert back.local is not None and back.libvirt_version == live.libvirt_version
    now = provided(live, "qemu:///system")
    # free memory moves between two reads: the fleet plugin's fact is compared by its total
    moving = {"fleet.memory"}
    assert back.extra["fleet.memory"]["total_kib"] == now.extra["fleet.memory"]["total_kib"]
    assert replace(back, extra={k: v for k, v in back.extra.items() if k not in moving}) == replace(
        now, source=back.source, extra={k: v for k, v in now.extra.items() if k not in moving})
    assert {"host-hardware.devices", "performance.qemu-display-modules", "easy-migration.baseline"} <= set(back.extra)
    # and the command line shows the same host from the file as from the daemon
    recorded = json.loads(vscen("host", "--json", "--host-facts", str(path), env=builtins_env()).stdout)
    shown = json.loads(vscen("host", "--json", "--connect", "qemu:///system", env=builtins_env()).stdout)
    for d in (recorded, shown):
        d.pop("source"), d.pop("connection")
        for name in moving:
            d["facts"].pop(name)
    assert recorded == shown


def test_host_check_runs_and_lists_host_checks_only():
    # easy-migration names two domain checks beside its host check: those wait for the XML
    proc = vscen("host", "check", "easy-migration", "--json", *files_args("tcg"), env=builtins_env())
    data = json.loads(proc.stdout)
    assert data["validators"] == ["live-migration"], proc.stderr
    assert {c["validator"] for c in data["checks"]} == {"live-migration"}
