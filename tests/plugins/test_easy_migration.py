"""The easy-migration scenario (vscen_easy_migration): the CPU every host runs, computed from
recorded hosts (the domain capabilities' choice) and by libvirt's baseline on qemu:///system;
the rules that keep host-bound things out; its checks; a TCG guest started on qemu:///system."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import vscen_easy_migration as em
from conftest import RECORDED_HOSTS, host_facts, host_files, render_for
from lxml import etree

from vscen.context import Context
from vscen.errors import HostError, InvalidDomainError, RulesError, UsageError
from vscen.host.local import LocalFacts, Mount
from vscen.pipeline import Request, load
from vscen.resolve import Resolution
from vscen.settings import build_settings
from vscen.validate import Support

LIBVIRT_9 = Support({"launchSecurity/@type": frozenset({"sev"})}, schema=True)
IMAGES = Path("/var/lib/libvirt/images")


def peer(name: str) -> str:
    """--peer for recorded host *name*: its files joined by ','."""
    return ",".join(str(f) for f in host_files(name))


def render(host="amd-sev", peers=(), **options):
    options = {"name": "em", "peers": [peer(p) for p in peers], **options}
    return render_for(["easy-migration"], host=host, support=LIBVIRT_9, options=options)


def cpu_of(xml: str):
    cpu = etree.fromstring(xml.encode()).find("cpu")
    return (cpu.get("mode"), cpu.get("match"), cpu.get("check"), cpu.findtext("model"),
            cpu.find("model").get("fallback"), [(f.get("policy"), f.get("name")) for f in cpu.iterfind("feature")])


def usable(host, model: str) -> bool:
    return any(m.name == model and m.usable == "yes" for m in host.cpu_models)


@pytest.fixture(scope="module")
def registry():
    _pm, reg = load(Request(scenarios=[]))
    return reg


# -- declarations and rules -----------------------------------------------------------------


def test_registered_by_the_plugin(registry):
    scenario = registry.scenarios["easy-migration"]
    assert registry.plugin_of("easy-migration", "scenarios") == "easy-migration"
    assert registry.plugin_of("cpu-baseline") == "easy-migration"
    assert "cpu-baseline" in scenario.features and "storage" in scenario.features
    assert scenario.defaults["disk"]["cache"] == "none"
    assert {c.name for c in scenario.conflicts} == {"vcpu-pinning", "host-filesystem", "host-hardware", "launch-security"}
    assert {c.name for c in registry.features["cpu-baseline"].conflicts} == {"cpu-passthrough", "cpu-migratable"}
    assert registry.validators["live-migration"].kind == "host"
    assert {registry.validators[n].kind for n in ("migration-safe", "shared-storage")} == {"domain"}


@pytest.mark.parametrize("scenarios, add, reason", [
    (["easy-migration", "computation"], [], "the host's own CPU may not exist on the other hosts"),
    (["easy-migration", "computation"], [], "pinned host CPUs are this host's"),
    (["easy-migration", "secure-vm"], [], "libvirt cannot live-migrate a confidential"),
    (["easy-migration", "desktop"], [], "a passed-through CPU, even migratable"),
    (["easy-migration"], ["host-filesystem"], "a shared host directory cannot follow the guest"),
    (["easy-migration"], ["host-hardware"], "an assigned host device cannot follow the guest"),
    (["easy-migration"], ["cpu-passthrough"], "the host's own CPU may not exist"),
])
def test_host_bound_things_are_refused(scenarios, add, reason):
    with pytest.raises(RulesError) as exc:
        render_for(scenarios, add=add, support=LIBVIRT_9, options={"name": "em"})
    assert reason in str(exc.value)


# -- the CPU from the domain capabilities (recorded hosts: deterministic) ---------------------


def test_two_amd_hosts_share_the_generic_model_with_x86_64_v2():
    """amd-sev (EPYC-Genoa) and kvm (EPYC-Turin whose EPYC models are all unusable): their only
    common AMD model is Opteron_G3, below what current distributions need; both run IvyBridge,
    so kvm64 with the x86-64-v2 features."""
    a, b = host_facts("amd-sev"), host_facts("kvm")
    choice = em.domcaps_choice([a, b])
    assert choice.model == "kvm64" and choice.vendor == ""
    assert {f for _, f in choice.features} == set(em.LEVEL_FEATURES[2])
    assert {p for p, _ in choice.features} == {"require"}
    assert "x86-64-v2" in choice.how and choice.notes == ()
    assert usable(a, "Opteron_G3") and usable(b, "Opteron_G3")  # what a vendor-only rule would give
    assert em.domcaps_choice([b, a]) == choice  # the order of the hosts does not matter


def test_amd_and_intel_hosts_get_a_generic_model_and_a_warning():
    a, b = host_facts("amd-sev"), host_facts("intel-tdx")
    choice = em.domcaps_choice([a, b])
    assert choice.model == "kvm64"
    want = {f for level in (2, 3, 4) for f in em.LEVEL_FEATURES[level]}
    assert {f for _, f in choice.features} == want
    assert "Icelake-Server-noTSX" in choice.how  # the model both run that carries AVX-512
    assert usable(a, "Icelake-Server-noTSX") and usable(b, "Icelake-Server-noTSX")
    assert any("different CPU vendors (AMD, Intel)" in n for n in choice.notes)


@pytest.mark.parametrize("host, model", [
    ("amd-sev", "EPYC-Genoa"), ("intel-tdx", "SapphireRapids"),
])
def test_one_host_gets_its_newest_usable_vendor_model(host, model):
    facts = host_facts(host)
    choice = em.domcaps_choice([facts])
    assert (choice.model, choice.features) == (model, ())
    newer = [n for n, _ in em.MODELS[facts.host_model_vendor]][: [n for n, _ in em.MODELS[facts.host_model_vendor]].index(model)]
    assert not any(usable(facts, n) for n in newer)


@pytest.mark.parametrize("hosts", [
    ("amd-sev", "kvm"), ("amd-sev", "intel-tdx"), ("kvm", "intel-tdx"), ("amd-sev", "kvm", "intel-tdx"),
    ("local-tcg", "tcg"), ("tcg",),
])
def test_the_chosen_model_is_usable_on_every_host(hosts):
    facts = [host_facts(h) for h in hosts]
    choice = em.domcaps_choice(facts)
    assert all(usable(f, choice.model) for f in facts), (choice, hosts)


def test_no_common_model_is_an_error_naming_the_hosts():
    # the recorded local KVM host runs only 32-bit models (pentium, 486)
    with pytest.raises(em.NoCommonCpu, match="no named CPU model is usable on every host"):
        em.domcaps_choice([host_facts("local-kvm")])
    caps_only = replace(host_facts("kvm"), cpu_models=(), source="caps-only.xml")
    with pytest.raises(em.NoCommonCpu, match="caps-only.xml"):
        em.domcaps_choice([host_facts("amd-sev"), caps_only])


def test_golden_case_renders_the_baseline_with_the_peer():
    result = render(peers=["kvm"])
    mode, match, check, model, fallback, features = cpu_of(result.xml)
    assert (mode, match, check, model, fallback) == ("custom", "exact", "partial", "kvm64", "forbid")
    assert {f for _, f in features} == set(em.LEVEL_FEATURES[2])
    assert [c.status for c in result.checks if c.validator == "live-migration"] == ["pass"]
    assert any("kvm64" in n and "domcaps-kvm-q35.xml" in n for n in result.ctx.notes)
    # no peer: this host's own newest model
    alone = render()
    assert cpu_of(alone.xml)[3] == "EPYC-Genoa"
    assert [c.status for c in alone.checks if c.validator == "live-migration"] == ["warn", "pass"]


def test_disk_cache_none_and_no_host_passthrough():
    xml = etree.fromstring(render(peers=["kvm"]).xml.encode())
    assert [d.get("cache") for d in xml.iterfind("devices/disk/driver")] == ["none"]
    assert xml.find("devices/hostdev") is None and xml.find("cputune") is None


# -- peers ----------------------------------------------------------------------------------


def test_a_peer_file_that_does_not_exist_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="nowhere.xml' is neither a libvirt URI"):
        render_for(["easy-migration"], support=LIBVIRT_9,
                   options={"name": "em", "peers": [str(tmp_path / "nowhere.xml")]})


def test_a_peer_snapshot_and_a_test_uri_are_read(tmp_path):
    from vscen.host.facts import snapshot

    caps, domcaps = (Path(p).read_text() for p in host_files("kvm"))
    path = tmp_path / "kvm7.xml"
    path.write_text(snapshot(caps, domcaps, uri="qemu+ssh://kvm7/system"))
    result = render_for(["easy-migration"], support=LIBVIRT_9, options={"name": "em", "peers": [str(path)]})
    assert [p.source for p in em.peers_of(result.ctx)] == [f"{path} (snapshot of qemu+ssh://kvm7/system)"]
    assert cpu_of(result.xml)[3] == "kvm64"
    # the embedded driver's reference host (EPYC, EPYC-Rome, EPYC-Milan) and amd-sev share EPYC-Milan
    result = render_for(["easy-migration"], support=LIBVIRT_9, options={"name": "em", "peers": ["test:///default"]})
    assert [p.source for p in em.peers_of(result.ctx)] == ["test:///default"]
    assert cpu_of(result.xml)[3] == "EPYC-Milan"


def test_peer_checks(registry):
    from vscen.host.providers import read_provided

    def check(host="amd-sev", peers=(), hostdevs=()):
        settings, _ = build_settings([], [("default", {"name": "t", "peers": list(peers), "hostdev": list(hostdevs)})],
                                     declared=registry.settings)
        facts = read_provided(host_facts(host), registry, settings=settings)  # the facts stage
        ctx = Context(settings=settings, host=facts, resolution=Resolution(), support=LIBVIRT_9)
        return [(c.status, c.message) for c in registry.validators["live-migration"].check(ctx)]

    got = check(peers=[str(RECORDED_HOSTS / "domcaps-aarch64-virt.xml")])
    assert got[0][0] == "fail" and "is aarch64, the guest x86_64" in got[0][1]
    got = check(peers=[str(RECORDED_HOSTS / "caps-numa2-hmat.xml")])
    assert got[0][0] == "fail" and "no domain capabilities" in got[0][1]
    got = check(peers=[peer("tcg")])
    assert got[0][0] == "fail" and "offers qemu guests, this one is kvm" in got[0][1]
    got = check(hostdevs=["0000:03:00.0"])
    assert ("fail" in {s for s, _ in got}) and any("--hostdev 0000:03:00.0" in m for _, m in got)
    got = check(peers=[peer("kvm")])
    assert got == [("pass", got[0][1])] and "kvm64" in got[0][1]


def test_a_recorded_baseline_is_used_only_for_what_it_was_read_for():
    """libvirt's baseline is a fact: replayed from a snapshot where it was read for this guest's
    arch, machine, domain type and hosts; otherwise the domain capabilities' choice, with a note."""
    settings, _ = build_settings([], [("default", {"name": "t", "machine": "q35"})])
    host = host_facts("amd-sev")
    inputs = em.baseline_inputs(settings, host, [host])
    assert inputs["machine"] == host.machine_aliases["q35"]  # the alias and its type agree
    cpu = "<cpu mode='custom' match='exact'><model fallback='forbid'>EPYC-Milan</model><vendor>AMD</vendor>" \
          "<feature policy='require' name='x2apic'/></cpu>"
    recorded = replace(host, extra={em.BASELINE: {**inputs, "uri": "qemu+ssh://far/system", "cpu": cpu}})
    ctx = Context(settings=settings, host=recorded, resolution=Resolution(), support=LIBVIRT_9)
    choice = em.choose_cpu(ctx)
    assert (choice.model, choice.vendor, choice.features) == ("EPYC-Milan", "AMD", (("require", "x2apic"),))
    assert choice.how == "libvirt's baseline on qemu+ssh://far/system"
    # read for the host alone (a snapshot), used with a peer: the domcaps' choice, with a note
    from vscen.host.providers import read_provided

    _pm, reg = load(Request(scenarios=[]))
    settings, _ = build_settings([], [("default", {"name": "t", "machine": "q35", "peers": [peer("kvm")]})],
                                 declared=reg.settings)
    ctx = Context(settings=settings, host=read_provided(recorded, reg, settings=settings),
                  resolution=Resolution(), support=LIBVIRT_9)
    choice = em.choose_cpu(ctx)
    assert choice.model == "kvm64"
    assert choice.notes[0] == ("easy-migration: libvirt's baseline in the host facts was read for other "
                               "hosts or settings: using the domain capabilities instead")


def test_hostdev_stops_the_run():
    with pytest.raises(HostError, match="an assigned host device ties the guest to this host"):
        render(peers=["kvm"], hostdev=["0000:03:00.0"])


def test_peers_given_to_a_scenario_that_ignores_them_are_noted():
    result = render_for(["computation"], support=LIBVIRT_9, options={"name": "c", "peers": [peer("kvm")]})
    assert "--peer: no chosen scenario or feature looks at other hosts; ignored" in result.ctx.notes


# -- domain checks ----------------------------------------------------------------------------


def domain_ctx(xml: str, local=None):
    settings, _ = build_settings([], [("default", {"name": "t"})])
    facts = replace(host_facts("amd-sev"), local=local)
    return Context(settings=settings, host=facts, resolution=Resolution(),
                   support=LIBVIRT_9, xml=etree.fromstring(xml.encode()))


def run_check(registry, name, ctx):
    return [(c.status, c.message, c.element) for c in registry.validators[name].check(ctx)]


GOOD = """<domain type='kvm'><cpu mode='custom'><model>kvm64</model></cpu><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
    <source file='/var/lib/libvirt/images/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <disk type='network' device='disk'><driver name='qemu' type='raw' cache='directsync'/>
    <source protocol='rbd' name='pool/b'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>"""
BAD = """<domain type='kvm'><cpu mode='host-passthrough'/><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='writeback'/>
    <source file='/srv/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <filesystem type='mount'><source dir='/srv'/><target dir='srv'/></filesystem>
  <hostdev mode='subsystem' type='pci'/>
</devices></domain>"""


def test_migration_safe(registry):
    assert run_check(registry, "migration-safe", domain_ctx(GOOD)) == [
        ("pass", "kvm64 CPU, no host devices, uncached disks", "")]
    bad = run_check(registry, "migration-safe", domain_ctx(BAD))
    assert {s for s, _, _ in bad} == {"fail"}
    assert [e for _, _, e in bad] == ["/domain/cpu", "/domain/devices/hostdev", "/domain/devices/filesystem",
                                      "/domain/devices/disk/driver"]
    assert "disk cache 'writeback'" in bad[-1][1]


def test_the_domain_checks_run_only_for_easy_migration(registry):
    from vscen.resolve import resolve
    from vscen.validate import domain_validators

    def chosen(*scenarios):
        return {v.name for v in domain_validators(registry, resolve(registry, list(scenarios), [], []))}

    assert {"migration-safe", "shared-storage"} <= chosen("easy-migration")
    assert not {"migration-safe", "shared-storage"} & chosen("secure-vm")
    assert "launch-security-iommu" in chosen("secure-vm") & chosen("easy-migration")  # named by none: on every result


def test_shared_storage_from_the_hosts_mounts(registry):
    shared = LocalFacts(mounts=(Mount("/", "ext4"), Mount("/var/lib/libvirt/images", "nfs4")))
    got = run_check(registry, "shared-storage", domain_ctx(GOOD, shared))
    assert [(s, m) for s, m, _ in got] == [
        ("pass", "/var/lib/libvirt/images/a.qcow2 is on nfs4 (/var/lib/libvirt/images)"),
        ("pass", "rbd disk: every host reaches it")]
    local = LocalFacts(mounts=(Mount("/", "ext4"), Mount("/var/lib/libvirt/images/x", "nfs4")))
    got = run_check(registry, "shared-storage", domain_ctx(GOOD, local))
    assert got[0][0] == "warn" and "local file system (ext4 at /)" in got[0][1]
    assert "--copy-storage-all" in registry.validators["shared-storage"].check(domain_ctx(GOOD, local))[0].fix
    unknown = run_check(registry, "shared-storage", domain_ctx(GOOD))
    assert unknown[0][0] == "warn" and "cannot tell" in unknown[0][1]


def test_a_cached_disk_fails_the_render():
    with pytest.raises(InvalidDomainError, match="disk cache 'writeback'"):
        render_for(["easy-migration"], support=LIBVIRT_9, disks=["cache=writeback,io=threads"],
                   options={"name": "em"})


def test_mount_of_takes_the_longest_mount_point():
    facts = LocalFacts(mounts=(Mount("/", "ext4"), Mount("/srv", "xfs"), Mount("/srv/nfs", "nfs4")))
    assert facts.mount_of("/srv/nfs/a.qcow2").fstype == "nfs4"
    assert facts.mount_of("/srv/nfsx/a.qcow2").fstype == "xfs"
    assert facts.mount_of("/var/a.qcow2").fstype == "ext4"
    assert LocalFacts().mount_of("/a") is None


# -- on qemu:///system: libvirt's baseline, and a TCG guest started ---------------------------


def test_libvirt_baseline_on_the_live_host(system_conn):
    """The live host (TCG) with a recorded TCG peer: libvirt's baseline where the local
    libvirt knows the peer's CPU, else the domcaps' choice with a note; either way a model
    both hosts' domain capabilities list."""
    from vscen.pipeline import render as render_request

    for peer_name in ("local-tcg", "tcg"):
        result = render_request(Request(
            scenarios=["easy-migration"], connect="qemu:///system", support=LIBVIRT_9,
            options={"name": "em", "virt_type": "qemu", "network": "none", "peers": [peer(peer_name)]}))
        result.connection.close()
        baseline = result.ctx.host.fact(em.BASELINE)  # read at the facts stage, with the peer
        assert baseline["uri"] == "qemu:///system" and len(baseline["cpus"]) == 2
        model = cpu_of(result.xml)[3]
        hosts = [result.ctx.host, *em.peers_of(result.ctx)]
        assert all(model in {m.name for m in h.cpu_models} for h in hosts), (peer_name, model)
        if any("using the domain capabilities instead" in n for n in result.ctx.notes):
            assert all(usable(h, model) for h in hosts)
        else:
            assert "libvirt's baseline on qemu:///system" in " ".join(result.ctx.notes)


@pytest.fixture
def workdir():
    path = IMAGES / f"vscen-test-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_tcg_guest_starts_on_qemu_system(system_conn, workdir, tmp_path):
    import libvirt

    from vscen.apply import apply, rollback
    from vscen.journal import Journal
    from vscen.pipeline import render as render_request
    from vscen.plan import make_plan

    name = f"vscen-test-{uuid.uuid4().hex[:8]}-em"
    disk = workdir / f"{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    request = Request(scenarios=["easy-migration"], connect="qemu:///system", disks=[f"path={disk}"],
                      options={"name": name, "virt_type": "qemu", "network": "none", "memory": "256MiB",
                               "vcpu": 1, "peers": ["qemu:///system"]})
    result = render_request(request)
    try:
        assert [c.status for c in result.checks if c.validator == "live-migration"] == ["pass"]
        mode, _, check, model, _, _ = cpu_of(result.xml)
        assert (mode, check) == ("custom", "partial")
        assert "libvirt's baseline on qemu:///system" in " ".join(result.ctx.notes)
        plan = make_plan(result, tmp_path, start=True)
        journal = Journal.open(plan.out_dir, name, "qemu:///system")
        apply(plan, journal, result.connection, result.ctx.registry)
        dom = system_conn.lookupByName(name)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        live = etree.fromstring(dom.XMLDesc(0).encode()).find("cpu")
        assert live.get("mode") == "custom" and live.findtext("model") == model
        assert rollback(list(journal.entries), journal, result.connection, result.ctx.registry) == []
    finally:
        try:
            dom = system_conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError:
            pass
        if result.connection is not None:
            result.connection.close()
    with pytest.raises(libvirt.libvirtError):
        system_conn.lookupByName(name)
