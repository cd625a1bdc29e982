"""The performance features (plugin performance): storage-perf, network-perf, video-perf,
cpu-perf, clock-perf, on their own and with the built-in scenarios.

Each test runs the whole pipeline on a recorded host (which validates against libvirt's
RelaxNG schema and runs the domain checks) and asserts on the XML; results that must work are
defined on libvirt's test:///default driver with VIR_DOMAIN_DEFINE_VALIDATE. 3D acceleration
needs a DRM render node in the host's node devices: tests/data/host-devices.xml is a host for
libvirt's test driver that has one. On qemu:///system, a TCG guest with the storage, network and
clock tuning is started and QEMU's command line checked.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import DATA, host_facts, render_for
from lxml import etree

from vscen.errors import RulesError
from vscen.pipeline import Request, load

DEVICES_HOST = f"test://{DATA / 'host-devices.xml'}"
PERF = ("storage-perf", "network-perf", "video-perf", "cpu-perf", "clock-perf")


def render(scenarios=(), add=(), host="kvm", options=None, **kw):
    result = render_for(list(scenarios), host=host, add=list(add), options={"name": "perf", **(options or {})}, **kw)
    return result, etree.fromstring(result.xml.encode())


def drivers(root, device="disk"):
    return {d.find("target").get("dev"): dict(d.find("driver").attrib)
            for d in root.iterfind(f"devices/disk[@device='{device}']")}


def notes(result, prefix):
    return [n for n in result.ctx.notes if n.startswith(prefix)]


# -- declarations ---------------------------------------------------------------------------


def test_the_features_and_their_rules():
    _, reg = load(Request(scenarios=[]))
    got = {n: reg.features[n] for n in PERF}
    assert {reg.plugin_of(n) for n in PERF} == {"performance"}
    assert got["storage-perf"].requires == ("storage",)
    assert got["network-perf"].requires == ("network",)
    assert got["video-perf"].implies == ("video-virtio",)
    assert [c.name for c in got["video-perf"].conflicts] == ["headless"]
    assert got["cpu-perf"].implies == ("cpu-passthrough",)
    assert [c.name for c in got["cpu-perf"].conflicts] == ["cpu-migratable"]
    assert got["clock-perf"].implies == ("clock",)
    for f in got.values():
        assert len(f.details) > 100, f"{f.name} must say what it sets and why"


# -- storage-perf ----------------------------------------------------------------------------


def test_storage_perf_fills_in_what_no_setting_chose(define):
    disks = ["size=2G,bus=virtio", "size=2G,format=raw,bus=virtio", "size=1G,bus=sata"]
    _, root = render(add=["storage", "storage-perf"], disks=disks, options={"vcpu": 4, "cdrom": "/iso/x.iso"})

    fast = {"cache": "none", "io": "native", "discard": "unmap", "detect_zeroes": "unmap"}
    assert drivers(root) == {
        "vda": {"name": "qemu", "type": "qcow2", **fast, "queues": "4", "iothread": "1"},
        "vdb": {"name": "qemu", "type": "raw", **fast, "queues": "4", "iothread": "2"},
        # not virtio: the host-side tuning only, no queues or I/O thread
        "sda": {"name": "qemu", "type": "qcow2", **fast},
    }
    assert root.findtext("iothreads") == "2"
    assert drivers(root, "cdrom") == {"sdb": {"name": "qemu", "type": "raw"}}
    define(etree.tostring(root, encoding="unicode"))


def test_storage_perf_keeps_the_disk_settings_and_says_so():
    result, root = render(add=["storage", "storage-perf"],
                          disks=["size=2G,cache=writeback,discard=ignore", "size=2G,cache=directsync"])

    assert drivers(root)["vda"] == {"name": "qemu", "type": "qcow2", "cache": "writeback", "discard": "ignore",
                                    "detect_zeroes": "on", "queues": "2", "iothread": "1"}
    # directsync is O_DIRECT too: native AIO fits it
    assert drivers(root)["vdb"]["cache"] == "directsync" and drivers(root)["vdb"]["io"] == "native"
    assert notes(result, "storage-perf") == [
        "storage-perf: vda keeps cache='writeback' io='default' from the disk settings (--disk); "
        "cache=none,io=native is faster where the host's file system supports O_DIRECT "
        "(--disk cache=none,io=native)"]


def test_storage_perf_with_one_vcpu_has_no_queues():
    _, root = render(add=["storage", "storage-perf"], options={"vcpu": 1})
    assert "queues" not in drivers(root)["vda"]


def test_storage_perf_leaves_the_iothreads_feature_its_shared_thread():
    result, root = render(["computation"], add=["storage-perf"], disks=["size=2G", "size=2G"])

    assert root.findtext("iothreads") == "1"
    assert [d["iothread"] for d in drivers(root).values()] == ["1", "1"]
    assert [d["detect_zeroes"] for d in drivers(root).values()] == ["unmap", "unmap"]
    assert any("--feature -iothreads" in n for n in notes(result, "storage-perf"))


def test_storage_perf_needs_storage():
    with pytest.raises(RulesError, match="'storage-perf' requires 'storage'"):
        render(add=["storage-perf"])


# -- network-perf ----------------------------------------------------------------------------


def test_network_perf_vhost_queues_and_receive_ring(define):
    _, root = render(add=["network", "network-perf"], options={"vcpu": 4})

    assert root.find("devices/interface/driver").attrib == {"name": "vhost", "queues": "4", "rx_queue_size": "1024"}
    define(etree.tostring(root, encoding="unicode"))


def test_network_perf_agrees_with_network_multiqueue_beyond_the_tap_limit():
    result, root = render(["computation"], add=["network-perf"], options={"vcpu": 300, "memory": "8GiB"})

    assert root.find("devices/interface/driver").attrib == {"name": "vhost", "queues": "256", "rx_queue_size": "1024"}
    assert any("at most 256 queues" in n for n in result.ctx.notes)


def test_network_perf_on_user_networking_and_other_models():
    result, root = render(add=["network", "network-perf"], options={"network": "user"})
    assert root.find("devices/interface/driver").attrib == {"rx_queue_size": "1024"}
    assert notes(result, "network-perf") == [
        "network-perf: a user interface has no tap device, so no vhost and no multiqueue; only its "
        "receive ring is enlarged"]

    result, root = render(add=["network", "network-perf"], options={"network": "network=default,model=e1000e"})
    assert root.find("devices/interface/driver") is None
    assert "not virtio: left as it is" in notes(result, "network-perf")[0]


# -- video-perf ------------------------------------------------------------------------------


def test_video_perf_3d_where_the_host_has_a_render_node(define):
    result, root = render(["desktop"], add=["video-perf"], host=None, connect=DEVICES_HOST,
                          options={"network": "user"})

    model = root.find("devices/video/model")
    assert model.get("type") == "virtio"
    assert model.find("acceleration").attrib == {"accel3d": "yes"}
    assert [g.get("type") for g in root.iterfind("devices/graphics")] == ["spice", "egl-headless"]
    assert len(root.findall("devices/video")) == 1
    assert notes(result, "video-perf") == []
    define(etree.tostring(root, encoding="unicode"))


def test_video_perf_without_a_render_node_keeps_the_plain_virtio_gpu(define):
    result, root = render(["desktop"], add=["video-perf"])

    assert root.find("devices/video/model").attrib == {"type": "virtio", "heads": "1", "primary": "yes"}
    assert root.find("devices/video/model/acceleration") is None
    assert [g.get("type") for g in root.iterfind("devices/graphics")] == ["spice"]
    assert notes(result, "video-perf") == [
        "video-perf: no 3D acceleration: test:///default lists no DRM render node (a GPU with a render "
        "node is needed); the plain virtio GPU (virtio-gpu has no VRAM to enlarge)"]
    define(etree.tostring(root, encoding="unicode"))


def test_video_perf_without_egl_headless_on_the_host():
    # intel-tdx's QEMU offers vnc, rdp and dbus displays only
    result, root = render(["desktop"], add=["video-perf"], host="intel-tdx", connect=DEVICES_HOST,
                          options={"network": "user"})
    assert root.find("devices/video/model/acceleration") is None
    assert "does not offer egl-headless" in notes(result, "video-perf")[0]


def test_video_perf_alone_brings_its_virtio_gpu_and_refuses_headless():
    _, root = render(add=["video-perf"])
    assert [m.get("type") for m in root.iterfind("devices/video/model")] == ["virtio"]
    with pytest.raises(RulesError, match="'headless' conflicts with feature 'video-perf'"):
        render(["computation"], add=["video-perf"])


def test_missing_virgl_module_is_found_on_a_local_host(tmp_path, monkeypatch):
    """A fact of this machine (read at the facts stage), which the build then reads."""
    from dataclasses import replace

    import vscen_performance as perf

    from vscen import FactProbe

    facts = host_facts("kvm")

    def missing(local: bool):
        value = perf.read_display_modules(FactProbe(host=facts, local=local))

        class Ctx:
            host = replace(facts, extra={perf.DISPLAY_MODULES: value})

        return perf.missing_virgl(Ctx())

    moddir = tmp_path / "qemu"
    moddir.mkdir()
    (moddir / "hw-display-virtio-gpu.so").touch()
    monkeypatch.setattr(perf, "QEMU_MODULE_DIRS", (str(tmp_path / "none"), str(moddir)))
    assert missing(local=True) == str(moddir)
    (moddir / perf.VIRGL_MODULE).touch()
    assert missing(local=True) is None
    # only this machine's files can tell: not for a remote, recorded or test host
    (moddir / perf.VIRGL_MODULE).unlink()
    assert perf.read_display_modules(FactProbe(host=facts, local=False)) is None
    assert missing(local=False) is None


# -- cpu-perf, clock-perf --------------------------------------------------------------------


def test_cpu_perf_passes_the_host_cpu_and_its_caches(define):
    result, root = render(add=["cpu-perf"], host="amd-sev")

    cpu = root.find("cpu")
    assert cpu.attrib == {"mode": "host-passthrough", "check": "none", "migratable": "off"}
    assert cpu.find("cache").attrib == {"mode": "passthrough"}
    assert cpu.find("topology").attrib == {"sockets": "1", "dies": "1", "cores": "1", "threads": "2"}
    assert result.ctx.resolution.why["cpu-passthrough"] == "implied by cpu-perf"
    define(etree.tostring(root, encoding="unicode"))


def test_cpu_perf_without_host_passthrough():
    result, root = render(add=["cpu-perf"], host="tcg")
    assert root.find("cpu").get("mode") == "maximum"
    assert root.find("cpu/cache") is None
    assert notes(result, "cpu-perf") == [
        "cpu-perf: the guest CPU is maximum, not host-passthrough (the host does not offer it): no cache passthrough"]


def test_cpu_perf_refuses_a_migratable_cpu():
    with pytest.raises(RulesError) as exc:
        render(["desktop"], add=["cpu-perf"])
    assert any("'cpu-migratable' conflicts with feature 'cpu-perf'" in p and "can no longer migrate" in p
               for p in exc.value.problems)


def test_clock_perf_adds_kvmclock_on_kvm_only(define):
    result, root = render(add=["clock-perf", "cpu-perf"])
    assert [t.attrib for t in root.iterfind("clock/timer")] == [
        {"name": "rtc", "tickpolicy": "catchup"}, {"name": "pit", "tickpolicy": "delay"},
        {"name": "hpet", "present": "no"}, {"name": "kvmclock", "present": "yes"}]
    assert notes(result, "clock-perf") == []  # the TSC is passed through
    define(etree.tostring(root, encoding="unicode"))

    result, root = render(add=["clock-perf"], host="tcg")
    assert root.find("clock/timer[@name='kvmclock']") is None
    assert notes(result, "clock-perf") == ["clock-perf: no KVM, so no kvm-clock: the guest keeps the emulated clocks"]


def test_clock_perf_on_a_migratable_cpu_says_the_tsc_is_not_passed():
    result, root = render(["desktop"], add=["clock-perf"])
    assert root.find("clock/timer[@name='kvmclock']").get("present") == "yes"
    assert notes(result, "clock-perf") == [
        "clock-perf: the guest CPU is host-passthrough, but migratable, so the host's invariant TSC is "
        "not passed and the guest keeps kvm-clock (cpu-perf passes it, where the guest need not migrate)"]


# -- composition -----------------------------------------------------------------------------

#: the perf features each built-in scenario refuses, and the rule that refuses them
REFUSED = {("desktop", "cpu-perf"): "cpu-migratable", ("computation", "video-perf"): "headless"}


@pytest.mark.parametrize("scenario,host", [("secure-vm", "amd-sev"), ("desktop", "kvm"), ("computation", "kvm")])
@pytest.mark.parametrize("feature", PERF)
def test_each_perf_feature_with_each_scenario(scenario, host, feature, define):
    if (scenario, feature) in REFUSED:
        with pytest.raises(RulesError, match=REFUSED[scenario, feature]):
            render([scenario], add=[feature], host=host)
        return
    result, root = render([scenario], add=[feature], host=host)
    assert feature in result.ctx.resolution.why
    define(etree.tostring(root, encoding="unicode"))


@pytest.mark.parametrize("scenarios,features,host", [
    (["desktop"], ["storage-perf", "network-perf", "video-perf", "clock-perf"], "kvm"),
    (["computation"], ["storage-perf", "network-perf", "cpu-perf", "clock-perf"], "numa4-hugepages"),
    (["secure-vm"], ["storage-perf", "network-perf", "video-perf", "cpu-perf", "clock-perf"], "amd-sev"),
])
def test_all_sensible_perf_features_together(scenarios, features, host, define):
    _, root = render(scenarios, add=features, host=host)
    define(etree.tostring(root, encoding="unicode"))


# -- on a real daemon ------------------------------------------------------------------------


def test_qemu_starts_a_tuned_guest_on_qemu_system(system_conn, tmp_path):
    """storage-perf, network-perf and clock-perf as QEMU takes them: a paused TCG guest on
    qemu:///system (user networking, a disk of its own), its command line read, then gone."""
    import libvirt

    images = Path("/var/lib/libvirt/images") / f"vscen-test-{uuid.uuid4().hex[:8]}"
    name = images.name + "-perf"
    images.mkdir(parents=True)
    dom = None
    try:
        disk = images / "root.raw"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk), "64M"], check=True)
        result = render_for([], host=None, connect="qemu:///system",
                            add=["storage", "storage-perf", "network", "network-perf", "clock-perf"],
                            options={"name": name, "virt_type": "qemu", "network": "user", "memory": "256MiB",
                                     "vcpu": 2},
                            disks=[f"path={disk},format=raw"])
        dom = system_conn.createXML(result.xml, libvirt.VIR_DOMAIN_START_PAUSED)
        pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        assert '"aio":"native"' in cmdline and '"cache":{"direct":true' in cmdline
        assert '"detect-zeroes":"unmap"' in cmdline and '"discard":"unmap"' in cmdline
        assert '"num-queues":2' in cmdline and '"iothread":"iothread1"' in cmdline
        assert '"rx_queue_size":1024' in cmdline
    finally:
        if dom is not None:
            dom.destroy()
        shutil.rmtree(images, ignore_errors=True)
    with pytest.raises(libvirt.libvirtError):
        system_conn.lookupByName(name)
