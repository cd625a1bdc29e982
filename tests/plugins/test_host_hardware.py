"""The host-hardware feature, its host check and the hostdev-feature domain check.

Devices are looked up in the node devices of the libvirt connection the guest is for. The
deterministic host is tests/data/host-devices.xml, opened with libvirt's own test driver
(test:///<path>): PCI devices with IOMMU groups (a GPU sharing group 1 with its HDMI audio and
a bridge, a lone NVMe, two identical NICs) and USB devices (two identical sticks). libvirt's test
driver drops <driver> when it parses node devices, so the vfio-pci rule is checked on node
device XML as a real host reports it. Where the daemon runs, qemu:///system's real listing is
read too; no device is ever detached or assigned.
"""

from __future__ import annotations

import pytest
from conftest import DATA, define_on_test_driver, host_files
from lxml import etree

from vscen.errors import HostError, InvalidDomainError, RulesError

DEVICES_HOST = f"test://{DATA / 'host-devices.xml'}"
RECORDED = host_files("kvm")[0].parent


def render(hostdevs, connect=DEVICES_HOST, host=None, scenarios=(), add=("host-hardware",), files=None):
    """Render for *hostdevs* with the devices of *connect*, on recorded *host* (or *files*;
    neither: the facts of the connection, the reference host for a test driver)."""
    from vscen.pipeline import Request
    from vscen.pipeline import render as run

    files = files if files is not None else host_files(host) if host else []
    result = run(Request(scenarios=list(scenarios), host_facts=files, connect=connect, add=list(add),
                         options={"name": "hh", "network": "user", "hostdev": list(hostdevs)}), keep_connection=False)
    return result, etree.fromstring(result.xml.encode())


def hostdevs(root) -> list[str]:
    return [etree.tostring(h, encoding="unicode").strip() for h in root.iterfind("devices/hostdev")]


def checks(result, status=None):
    return [c.message for c in result.checks if c.validator == "host-hardware" and status in (None, c.status)]


def host_error(*args, **kw) -> HostError:
    with pytest.raises(HostError) as exc:
        render(*args, **kw)
    return exc.value



NVME = ('<hostdev mode="subsystem" type="pci" managed="yes">\n      <source>\n        '
        '<address domain="0x0000" bus="0x03" slot="0x00" function="0x0"/>\n      </source>\n    </hostdev>')


# -- found in the host's device list ----------------------------------------------------------


def test_pci_by_address_usb_by_vendor_product():
    result, root = render(["0000:03:00.0", "usb:046d:c52b"])

    assert hostdevs(root) == [
        NVME,
        '<hostdev mode="subsystem" type="usb">\n      <source>\n        <vendor id="0x046d"/>\n        '
        '<product id="0xc52b"/>\n      </source>\n    </hostdev>',
    ]
    assert checks(result) == [
        "the host's IOMMU is on and libvirt offers VFIO",
        "assigning PCI 0000:03:00.0 (144d:a808) in IOMMU group 12, USB 046d:c52b at bus 1 device 2 (usb_1_2)"]
    define_on_test_driver(result.xml)


def test_pci_by_vendor_product_and_short_address_give_one_device():
    _, root = render(["pci:144d:a808"])
    assert hostdevs(root) == [NVME]
    # the same device twice (03:00.0 is 0000:03:00.0) is assigned once
    _, root = render(["03:00.0", "pci:144D:A808"])
    assert hostdevs(root) == [NVME]


def test_ambiguous_vendor_product_lists_the_devices():
    err = host_error(["pci:8086:1533"])
    assert err.problems == [
        "host-hardware: --hostdev pci:8086:1533 matches 2 PCI devices: 0000:05:00.0, 0000:06:00.0 "
        "(fix: give the address of the one to assign: --hostdev 0000:05:00.0 or --hostdev 0000:06:00.0)"]
    err = host_error(["usb:0781:5581"])
    assert "matches 2 USB devices: bus 2 device 3 (usb_2_3), bus 2 device 4 (usb_2_4)" in str(err)


def test_unknown_devices_are_refused_all_at_once():
    err = host_error(["0000:09:00.0", "usb:dead:beef", "pci:dead:beef"])
    assert [p.split(" (fix:")[0] for p in err.problems] == [
        f"host-hardware: --hostdev 0000:09:00.0: no PCI device 0000:09:00.0 on {DEVICES_HOST}",
        f"host-hardware: --hostdev usb:dead:beef: no USB device dead:beef on {DEVICES_HOST}",
        f"host-hardware: --hostdev pci:dead:beef: no PCI device dead:beef on {DEVICES_HOST}"]


# -- IOMMU --------------------------------------------------------------------------------------


def test_a_group_not_fully_assigned_names_the_rest_and_the_fix():
    err = host_error(["0000:01:00.0"])
    assert err.problems == [
        "host-hardware: 0000:01:00.0 shares IOMMU group 1 with devices that are neither assigned nor held "
        "by vfio-pci: 0000:01:00.1 (no driver: a host driver may claim it); VFIO gives a guest whole IOMMU "
        "groups only (fix: assign them too (--hostdev 0000:01:00.1), or take them from the host (virsh "
        "nodedev-detach pci_0000_01_00_1; virsh nodedev-reattach gives them back))"]


def test_the_whole_group_is_assigned_its_bridge_stays_with_the_host():
    result, root = render(["0000:01:00.0", "0000:01:00.1"])
    assert [h.find("source/address").get("function") for h in root.iterfind("devices/hostdev")] == ["0x0", "0x1"]
    assert checks(result, "fail") == []
    define_on_test_driver(result.xml)


REAL_HOST = """<device><name>pci_0000_0{bus}_00_{fn}</name><driver><name>{driver}</name></driver>
  <capability type='pci'><class>{cls}</class><domain>0</domain><bus>{bus}</bus><slot>0</slot><function>{fn}</function>
    <product id='0x10f0'/><vendor id='0x10de'/>
    <iommuGroup number='7'><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      <address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>
      <address domain='0x0000' bus='0x02' slot='0x00' function='0x0'/></iommuGroup></capability></device>"""


def devices_of(*members):
    import vscen_host_hardware as hh

    return hh.HostDevices(pci=tuple(hh.parse_device(REAL_HOST.format(bus=b, fn=f, driver=d, cls=c))
                                    for b, f, d, c in members), listed=True)


def test_group_members_held_by_vfio_pci_or_bridges_let_a_device_go():
    import vscen_host_hardware as hh

    gpu = ("1", "0", "nouveau", "0x030000")
    choose_gpu = [hh.Choice("0000:01:00.0", "pci", address="0000:01:00.0",
                            device=devices_of(gpu).pci[0])]
    ok = devices_of(gpu, ("1", "1", "vfio-pci", "0x040300"), ("2", "0", "pcieport", "0x060400"))
    assert hh.group_checks(choose_gpu, ok) == []
    bad = devices_of(gpu, ("1", "1", "snd_hda_intel", "0x040300"), ("2", "0", "pcieport", "0x060400"))
    [check] = hh.group_checks(choose_gpu, bad)
    assert check.status == "fail"
    assert "0000:01:00.1 (driver snd_hda_intel)" in check.message and "0000:02:00.0" not in check.message
    assert "virsh nodedev-detach pci_0000_01_00_1" in check.fix


def test_iommu_off():
    files = [RECORDED / "caps-numa2-hmat.xml", RECORDED / "domcaps-kvm-q35.xml"]
    err = host_error(["0000:03:00.0"], files=files)
    assert err.problems[0].startswith("host-hardware: the host's IOMMU is off (libvirt capabilities: "
                                      "<iommu support='no'/>): PCI devices cannot be assigned (fix: enable AMD-Vi")
    # USB devices need no IOMMU
    result, root = render(["usb:046d:c52b"], files=files)
    assert len(hostdevs(root)) == 1 and checks(result, "fail") == []


def test_no_vfio_backend():
    # IOMMU on, but a libvirt whose domain capabilities list no VFIO backend (no vfio-pci module)
    files = [RECORDED / "caps-amd-zen5.xml", RECORDED / "domcaps-local-libvirt9-q35.xml"]
    err = host_error(["0000:03:00.0"], files=files)
    assert "libvirt offers no VFIO backend" in err.problems[0] and "modprobe vfio-pci" in err.problems[0]


# -- without a device list ----------------------------------------------------------------------


def test_recorded_host_renders_addresses_as_given_and_refuses_vendor_product():
    result, root = render(["0000:41:00.0", "usb:046d:c52b"], connect=None, host="amd-sev")

    assert [h.get("type") for h in root.iterfind("devices/hostdev")] == ["pci", "usb"]
    assert root.find("devices/hostdev/source/address").attrib == {
        "domain": "0x0000", "bus": "0x41", "slot": "0x00", "function": "0x0"}
    [warn] = [c for c in result.checks if c.validator == "host-hardware" and c.status == "warn"]
    assert warn.message.startswith("the host facts list no PCI or USB devices (recorded host facts without them")
    assert warn.message.endswith("0000:41:00.0, usb:046d:c52b written as given, not checked to exist, "
                                 "IOMMU groups not checked")
    define_on_test_driver(result.xml)

    with pytest.raises(HostError, match="only the host's device list can turn a vendor:product into a PCI address"):
        render(["pci:10de:1b80"], connect=None, host="amd-sev")
    # the IOMMU is still checked, from the recorded facts
    with pytest.raises(HostError, match="IOMMU is off"):
        render(["0000:41:00.0"], connect=None, host="kvm")


# -- rules --------------------------------------------------------------------------------------


def test_refused_in_a_confidential_guest():
    with pytest.raises(RulesError) as exc:
        render(["0000:03:00.0"], scenarios=["secure-vm"])
    assert any("'host-hardware' conflicts with feature 'launch-security'" in p and "bounce buffers" in p
               for p in exc.value.problems)


def test_hostdev_without_the_feature_is_an_error():
    with pytest.raises(InvalidDomainError) as exc:
        render(["0000:03:00.0"], add=(), scenarios=["computation"])
    assert exc.value.problems == [
        "domain: --hostdev 0000:03:00.0 given, but the feature host-hardware is not chosen: no device "
        "would be assigned [hostdev-feature]"]


def test_the_feature_without_hostdev_warns_and_assigns_nothing():
    result, root = render([], scenarios=["computation"])
    assert root.findall("devices/hostdev") == []
    assert checks(result, "warn") == ["no --hostdev given: no device is assigned"]


def test_with_a_scenario_and_a_balloon():
    result, root = render(["0000:03:00.0"], scenarios=["desktop"])
    assert hostdevs(root) == [NVME]
    assert any(n.startswith("host-hardware: an assigned PCI device pins all guest memory") for n in result.ctx.notes)
    define_on_test_driver(result.xml)


# -- a real host ----------------------------------------------------------------------------------


def test_real_device_listing_on_qemu_system(system_conn):
    import vscen_host_hardware as hh

    from vscen import FactProbe
    from vscen.host.connect import Connection
    from vscen.host.facts import HostFacts

    fact = hh.read_devices(FactProbe(host=HostFacts(source="qemu:///system"),
                                     connection=Connection("qemu:///system", system_conn, embedded=False)))

    class Ctx:
        host = HostFacts(source="qemu:///system", extra={hh.DEVICES: fact})
        uri = "qemu:///system"

    devices = hh.host_devices(Ctx())
    names = system_conn.listDevices("pci", 0)
    if not names:
        pytest.skip("qemu:///system lists no PCI devices")
    assert devices.listed
    assert sorted(d.name for d in devices.pci) == sorted(names)
    for d in devices.pci:
        assert d.name == "pci_" + d.address.replace(":", "_").replace(".", "_")
        assert len(d.vendor) == 4 and len(d.product) == 4

    with pytest.raises(HostError, match="no PCI device 0000:ff:1f.7 on qemu:///system"):
        render(["0000:ff:1f.7"], connect="qemu:///system")
    caps = etree.fromstring(system_conn.getCapabilities().encode())
    if caps.find("host/iommu[@support='yes']") is None:
        with pytest.raises(HostError, match="IOMMU is off"):
            render([devices.pci[0].address], connect="qemu:///system")
    # nothing was detached: every device keeps the driver it had
    for d in devices.pci:
        xml = system_conn.nodeDeviceLookupByName(d.name).XMLDesc(0)
        assert hh.parse_device(xml).driver == d.driver
