"""The device features: storage, iothreads, network, network-multiqueue (their own plugins),
graphics, video-virtio, audio, usb-xhci, usb-tablet (desktop_devices), serial-console,
guest-agent, headless, watchdog, rng (console).

Each test runs the whole pipeline on a recorded host (which also validates against libvirt's
RelaxNG schema) and asserts on the XML produced; results are also defined on libvirt's
``test:///default`` driver with VIR_DOMAIN_DEFINE_VALIDATE.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import host_files, render_for
from lxml import etree

from vscen.errors import InvalidDomainError, RulesError

SCHEMA = Path("/usr/share/libvirt/schemas/domaincommon.rng")

DISKS = [
    "path=/vm/root.qcow2,size=20G,format=qcow2,bus=virtio,cache=none,io=native",
    "size=5G,format=raw,bus=scsi,discard=unmap",
    "size=1G,format=qcow2,bus=sata,cache=writeback,io=threads",
    "size=1G,format=qcow2,bus=virtio",
    "size=1G,format=raw,bus=usb",
]


def render(add, host="amd-sev", options=None, disks=None, **kw):
    result = render_for([], host=host, add=add, options={"name": "t1", **(options or {})}, disks=disks, **kw)
    return result, etree.fromstring(result.xml.encode())


def targets(root, device="disk"):
    return [(d.find("target").get("dev"), d.find("target").get("bus"))
            for d in root.iterfind(f"devices/disk[@device='{device}']")]


def driver_attrs(root):
    return [dict(d.find("driver").attrib) for d in root.iterfind("devices/disk")]


def libvirt_knows_nvme_disks() -> bool:
    rng = etree.parse(str(SCHEMA))
    ns = {"r": "http://relaxng.org/ns/structure/1.0"}
    buses = rng.xpath("//r:define[@name='diskTarget']//r:attribute[@name='bus']//r:value/text()", namespaces=ns)
    return "nvme" in buses


def host_without(tmp_path, host: str, enum: str, value: str) -> list[Path]:
    """Copies of recorded *host*'s files whose domain capabilities lack *value* in *enum*
    ("video.modelType"), for fallbacks no recorded host needs."""
    device, name = enum.split(".")
    out, removed = [], 0
    for path in host_files(host):
        tree = etree.parse(str(path))
        for el in tree.xpath(f"//devices/{device}/enum[@name='{name}']/value[text()='{value}']"):
            el.getparent().remove(el)
            removed += 1
        copy = tmp_path / path.name
        tree.write(str(copy))
        out.append(copy)
    assert removed, f"{host} does not offer {enum} {value} in the first place"
    return out


# -- storage ------------------------------------------------------------------------------------


def test_disk_targets_per_bus_share_one_sd_sequence_and_cdrom_comes_after(define):
    _, root = render(["storage"], options={"cdrom": "/iso/install.iso"}, disks=DISKS)

    assert targets(root) == [("vda", "virtio"), ("sda", "scsi"), ("sdb", "sata"),
                             ("vdb", "virtio"), ("sdc", "usb")]
    assert targets(root, "cdrom") == [("sdd", "sata")]
    define(etree.tostring(root, encoding="unicode"))


def test_disk_driver_source_and_cdrom_attributes(define):
    _, root = render(["storage"], options={"cdrom": "/iso/install.iso"}, disks=DISKS)

    assert driver_attrs(root) == [
        {"name": "qemu", "type": "qcow2", "cache": "none", "io": "native"},
        {"name": "qemu", "type": "raw", "discard": "unmap"},
        {"name": "qemu", "type": "qcow2", "cache": "writeback", "io": "threads"},
        {"name": "qemu", "type": "qcow2"},  # cache/io "default": left to QEMU
        {"name": "qemu", "type": "raw"},
        {"name": "qemu", "type": "raw"},  # the cdrom
    ]
    sources = [d.find("source").get("file") for d in root.iterfind("devices/disk")]
    assert sources == ["/vm/root.qcow2", "/var/lib/libvirt/images/t1-1.raw",
                       "/var/lib/libvirt/images/t1-2.qcow2", "/var/lib/libvirt/images/t1-3.qcow2",
                       "/var/lib/libvirt/images/t1-4.raw", "/iso/install.iso"]
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom.get("type") == "file"
    assert cdrom.find("readonly") is not None
    assert [d for d in root.iterfind("devices/disk[@device='disk']") if d.find("readonly") is not None] == []
    # boot order is the core's (os/boot), never per device
    assert root.findall("devices/disk/boot") == []
    assert [b.get("dev") for b in root.iterfind("os/boot")] == ["cdrom", "hd"]
    controllers = root.findall("devices/controller[@type='scsi']")
    assert [c.attrib for c in controllers] == [{"type": "scsi", "model": "virtio-scsi"}]

    defined = define(etree.tostring(root, encoding="unicode"))
    assert sorted(targets(defined) + targets(defined, "cdrom")) == [
        ("sda", "scsi"), ("sdb", "sata"), ("sdc", "usb"), ("sdd", "sata"), ("vda", "virtio"), ("vdb", "virtio")]
    assert defined.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"


def test_no_scsi_controller_and_cdrom_is_sda_without_sd_disks(define):
    _, root = render(["storage"], options={"cdrom": "/iso/install.iso"},
                     disks=["size=2G,bus=virtio", "size=2G,bus=virtio"])

    assert targets(root) == [("vda", "virtio"), ("vdb", "virtio")]
    assert targets(root, "cdrom") == [("sda", "sata")]
    assert root.find("devices/controller[@type='scsi']") is None
    define(etree.tostring(root, encoding="unicode"))


def test_no_disk_no_cdrom_writes_no_disk(define):
    _, root = render(["storage"], disks=["none"])

    assert root.findall("devices/disk") == []
    define(etree.tostring(root, encoding="unicode"))


def test_nvme_disks_are_named_per_namespace():
    # rendered for a newer libvirt: 9.0's schema knows no nvme disk bus (the next test covers
    # what the installed libvirt says about it)
    _, root = render(["storage"], disks=["size=2G,bus=virtio", "size=2G,bus=nvme",
                                         "size=2G,bus=scsi", "size=2G,bus=nvme"], schema=False)

    assert targets(root) == [("vda", "virtio"), ("nvme0n1", "nvme"), ("sda", "scsi"),
                             ("nvme0n2", "nvme")]


def test_nvme_disks_against_the_installed_libvirt(define):
    disks = ["size=2G,bus=virtio", "size=2G,bus=nvme"]
    if libvirt_knows_nvme_disks():
        _, root = render(["storage"], disks=disks)
        assert targets(root) == [("vda", "virtio"), ("nvme0n1", "nvme")]
        define(etree.tostring(root, encoding="unicode"))
    else:
        with pytest.raises(InvalidDomainError) as err:
            render(["storage"], disks=disks)
        assert "storage" in str(err.value)


# -- iothreads ----------------------------------------------------------------------------------


def test_iothreads_bind_every_virtio_disk_and_nothing_else(define):
    _, root = render(["storage", "iothreads"], options={"cdrom": "/iso/install.iso"}, disks=DISKS)

    assert root.findtext("iothreads") == "1"
    bound = {d.find("target").get("dev"): d.find("driver").get("iothread")
             for d in root.iterfind("devices/disk")}
    assert bound == {"vda": "1", "sda": None, "sdb": None, "vdb": "1", "sdc": None, "sdd": None}
    defined = define(etree.tostring(root, encoding="unicode"))
    assert defined.findtext("iothreads") == "1"
    assert defined.find("devices/disk/target[@dev='vdb']/../driver").get("iothread") == "1"


def test_without_iothreads_no_disk_is_bound():
    _, root = render(["storage"], disks=DISKS)

    assert root.find("iothreads") is None
    assert root.xpath("devices/disk/driver[@iothread]") == []


def test_iothreads_requires_storage():
    with pytest.raises(RulesError) as err:
        render_for([], add=["iothreads"], options={"name": "t1"})
    assert "iothreads" in str(err.value) and "storage" in str(err.value)


# -- network ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "source", "model"),
    [
        ("network=default", "network", {"network": "default"}, "virtio"),
        ("bridge=br0", "bridge", {"bridge": "br0"}, "virtio"),
        ("network=default,model=e1000e", "network", {"network": "default"}, "e1000e"),
        ("user", "user", None, "virtio"),
    ],
)
def test_network_kinds(define, spec, kind, source, model):
    _, root = render(["storage", "network"], options={"network": spec})

    ifaces = root.findall("devices/interface")
    assert [i.get("type") for i in ifaces] == [kind]
    src = ifaces[0].find("source")
    assert (None if src is None else dict(src.attrib)) == source
    assert ifaces[0].find("model").get("type") == model
    assert ifaces[0].find("mac") is None  # deterministic output: libvirt picks the MAC
    defined = define(etree.tostring(root, encoding="unicode"))
    assert defined.find("devices/interface").get("type") == kind


def test_network_none_adds_no_interface(define):
    _, root = render(["storage", "network"], options={"network": "none"})

    assert root.findall("devices/interface") == []
    define(etree.tostring(root, encoding="unicode"))


@pytest.mark.parametrize("spec", ["network=default", "bridge=br0"])
def test_multiqueue_one_queue_per_vcpu(define, spec):
    _, root = render(["storage", "network", "network-multiqueue"], options={"network": spec, "vcpu": 6})

    driver = root.find("devices/interface/driver")
    assert dict(driver.attrib) == {"name": "vhost", "queues": "6"}
    defined = define(etree.tostring(root, encoding="unicode"))
    assert defined.find("devices/interface/driver").get("queues") == "6"


def test_multiqueue_skips_one_vcpu_non_virtio_and_user_networking(define):
    _, root = render(["storage", "network", "network-multiqueue"], options={"vcpu": 1})
    assert root.find("devices/interface/driver") is None

    _, root = render(["storage", "network", "network-multiqueue"],
                     options={"vcpu": 4, "network": "network=default,model=e1000e"})
    assert root.find("devices/interface/driver") is None

    result, root = render(["storage", "network", "network-multiqueue"],
                          options={"vcpu": 4, "network": "user"})
    assert root.find("devices/interface/driver") is None
    assert any("user-mode networking" in n for n in result.ctx.notes)
    define(etree.tostring(root, encoding="unicode"))


def test_multiqueue_requires_network():
    with pytest.raises(RulesError) as err:
        render_for([], add=["storage", "network-multiqueue"], options={"name": "t1"})
    assert "network-multiqueue" in str(err.value) and "'network'" in str(err.value)


# -- graphics, video, audio, usb ------------------------------------------------------------------

DESKTOP = ["storage", "network", "graphics", "video-virtio", "audio", "usb-tablet"]


def test_switching_the_display_to_vnc_with_set_gives_a_valid_domain(define):
    """The issue's own example: vscen run desktop --feature -audio --set ./devices/graphics/@type=vnc"""
    result = render_for(["desktop"], host="amd-sev", remove=["audio"], options={"name": "t1"},
                        sets=["./devices/graphics/@type=vnc"])
    root = etree.fromstring(result.xml.encode())
    assert [g.get("type") for g in root.findall("devices/graphics")] == ["vnc"]
    assert root.findall("devices/sound") == [] and root.findall("devices/audio") == []
    define(result.xml)


def test_spice_graphics_with_agent_channel_and_spice_audio(define):
    result, root = render(DESKTOP, host="amd-sev")

    gfx = root.findall("devices/graphics")
    assert [dict(g.attrib) for g in gfx] == [{"type": "spice", "autoport": "yes"}]
    assert gfx[0].find("listen").get("type") == "address"
    assert [c.tag for c in gfx[0]] == ["listen"]  # nothing spice-only: --set type=vnc stays valid
    channels = root.findall("devices/channel[@type='spicevmc']")
    assert [c.find("target").attrib for c in channels] == [{"type": "virtio", "name": "com.redhat.spice.0"}]
    assert [a.attrib for a in root.findall("devices/audio")] == [{"id": "1", "type": "spice"}]
    sound = root.find("devices/sound")
    assert sound.get("model") == "ich9" and sound.find("audio").get("id") == "1"
    assert not any("graphics" in n for n in result.ctx.notes)
    defined = define(result.xml)
    assert defined.find("devices/graphics").get("type") == "spice"
    assert defined.find("devices/audio").get("type") == "spice"


def test_spice_falls_back_to_vnc_on_the_intel_tdx_host(define):
    result, root = render(DESKTOP, host="intel-tdx")

    gfx = root.findall("devices/graphics")
    assert [dict(g.attrib) for g in gfx] == [{"type": "vnc", "autoport": "yes"}]
    assert gfx[0].find("listen").get("type") == "address"
    assert gfx[0].find("image") is None
    assert root.find("devices/channel[@type='spicevmc']") is None
    assert root.findall("devices/audio") == [] and root.find("devices/sound") is None  # sound goes to spice only
    assert any("spice" in n and "vnc" in n for n in result.ctx.notes)
    define(result.xml)


def test_vnc_when_asked(define):
    result, root = render(DESKTOP, host="amd-sev", options={"graphics": "vnc"})

    assert [g.get("type") for g in root.findall("devices/graphics")] == ["vnc"]
    assert root.find("devices/channel[@type='spicevmc']") is None
    assert root.findall("devices/audio") == [] and root.find("devices/sound") is None
    assert result.ctx.notes == ["audio: no sound device: a vnc display carries no sound (spice does: --graphics spice)"]
    define(result.xml)


def test_graphics_none_writes_no_display(define):
    _, root = render(DESKTOP, host="amd-sev", options={"graphics": "none"})

    assert root.findall("devices/graphics") == []
    assert root.find("devices/channel[@type='spicevmc']") is None
    assert root.findall("devices/audio") == [] and root.find("devices/sound") is None
    define(etree.tostring(root, encoding="unicode"))


def test_audio_without_graphics_adds_no_card_that_plays_nowhere(define):
    result, root = render(["storage", "audio"], host="amd-sev")

    assert root.findall("devices/graphics") == []
    assert root.findall("devices/audio") == [] and root.find("devices/sound") is None
    assert "audio: no sound device: a guest without a display carries no sound (spice does: --graphics spice)" \
        in result.ctx.notes
    define(etree.tostring(root, encoding="unicode"))


def test_video_virtio_and_its_vga_fallback(tmp_path, define):
    _, root = render(["storage", "video-virtio"], host="amd-sev")
    assert [m.attrib for m in root.findall("devices/video/model")] == [
        {"type": "virtio", "heads": "1", "primary": "yes"}]
    define(etree.tostring(root, encoding="unicode"))

    from vscen.pipeline import Request
    from vscen.pipeline import render as run

    files = host_without(tmp_path, "amd-sev", "video.modelType", "virtio")
    result = run(Request(scenarios=[], add=["storage", "video-virtio"], options={"name": "t1"},
                         host_facts=files), keep_connection=False)
    root = etree.fromstring(result.xml.encode())
    assert [m.get("type") for m in root.findall("devices/video/model")] == ["vga"]
    assert any("vga" in n for n in result.ctx.notes)
    define(result.xml)


def test_usb_tablet_brings_the_xhci_controller(define):
    result, root = render(["storage", "usb-tablet"])

    assert result.resolution.has("usb-xhci")
    assert [c.attrib for c in root.findall("devices/controller[@type='usb']")] == [
        {"type": "usb", "model": "qemu-xhci", "ports": "15"}]
    assert [i.attrib for i in root.findall("devices/input")] == [{"type": "tablet", "bus": "usb"}]
    defined = define(result.xml)
    assert defined.find("devices/controller[@type='usb']").get("model") == "qemu-xhci"


# -- console, headless, watchdog, rng -------------------------------------------------------------


def test_console_agent_watchdog_rng(define):
    _, root = render(["storage", "serial-console", "guest-agent", "watchdog", "rng"])

    serial = root.findall("devices/serial")
    assert [s.get("type") for s in serial] == ["pty"]
    assert serial[0].find("target").attrib == {"port": "0"}
    console = root.findall("devices/console")
    assert [c.get("type") for c in console] == ["pty"]
    assert console[0].find("target").attrib == {"type": "serial", "port": "0"}
    agent = root.findall("devices/channel")
    assert [(c.get("type"), dict(c.find("target").attrib)) for c in agent] == [
        ("unix", {"type": "virtio", "name": "org.qemu.guest_agent.0"})]
    assert [w.attrib for w in root.findall("devices/watchdog")] == [{"model": "i6300esb", "action": "reset"}]
    rng = root.findall("devices/rng")
    assert [r.get("model") for r in rng] == ["virtio"]
    backend = rng[0].find("backend")
    assert (backend.get("model"), backend.text) == ("random", "/dev/urandom")
    defined = define(etree.tostring(root, encoding="unicode"))
    assert defined.find("devices/console/target").get("type") == "serial"


def test_headless_has_no_display_and_video_none(define):
    _, root = render(["storage", "network", "headless", "serial-console"])

    assert root.findall("devices/graphics") == []
    assert [m.attrib for m in root.findall("devices/video/model")] == [{"type": "none"}]
    defined = define(etree.tostring(root, encoding="unicode"))
    assert defined.findall("devices/graphics") == []
    assert [m.get("type") for m in defined.findall("devices/video/model")] == ["none"]


@pytest.mark.parametrize("other", ["graphics", "video-virtio"])
def test_headless_conflicts_with_a_display(other):
    with pytest.raises(RulesError) as err:
        render(["storage", "headless", other])
    # declared on both sides (each plugin refuses the other whichever is loaded): one
    # problem for the pair, giving both plugins' reasons
    [problem] = err.value.problems
    a, b = sorted(["headless", other])
    assert f"feature '{a}' conflicts with feature '{b}'" in problem
    assert "(rule of plugin 'console')" in problem
    assert "(rule of plugin 'desktop-devices')" in problem


def test_headless_conflicts_with_everything_at_once():
    with pytest.raises(RulesError) as err:
        render(["storage", "headless", "graphics", "video-virtio"])
    problems = err.value.problems
    assert len(problems) == 2
    for other in ("graphics", "video-virtio"):
        a, b = sorted(["headless", other])
        assert any(f"'{a}' conflicts with feature '{b}'" in p for p in problems)


# -- every host ---------------------------------------------------------------------------------

ALL = ["storage", "iothreads", "network", "network-multiqueue", "graphics", "video-virtio",
       "audio", "usb-tablet", "serial-console", "guest-agent", "watchdog", "rng"]


@pytest.mark.parametrize("host", ["amd-sev", "intel-tdx", "kvm", "tcg", "local-kvm", "local-tcg", "aarch64"])
def test_all_device_features_validate_and_define_on_every_recorded_host(define, host):
    result, root = render(ALL, host=host, options={"cdrom": "/iso/install.iso", "vcpu": 4},
                          disks=DISKS[:3])

    assert targets(root) == [("vda", "virtio"), ("sda", "scsi"), ("sdb", "sata")]
    assert root.find("devices/graphics") is not None
    defined = define(result.xml)
    assert len(defined.findall("devices/disk")) == 4
