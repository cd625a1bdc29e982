"""Plugin cloud-init: ``--image`` (a cloud image as the read-only base of a copy-on-write
overlay) and ``--cloud-init`` (a NoCloud seed ISO as a private volume, attached as a read-only
CD-ROM): what the user gives, the seed, the domain XML (goldens), and the host action on
test:///default. Guests on qemu:///system that read the seed: test_cloud_init_guest.py.

What is checked against something independent: the seed ISO with genisoimage's ``isoinfo``
(volume id, Joliet and Rock Ridge names, contents), the YAML with PyYAML, the domain with
libvirt's test driver. Everything a test makes is named ``cloud-...`` and removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import DATA, define_on_test_driver, host_files
from lxml import etree

from vscen.errors import ExistsError, UsageError

TEST_URI = "test:///default"
SYSTEM_URI = "qemu:///system"
IMAGES = Path("/var/lib/libvirt/images")
PASSWORD = "Tr0ub4dor&3-cloud"
GOLDEN = DATA / "golden"
#: the golden cases of this plugin: (file name, scenarios, options); the image is a file the
#: test makes, shown in the XML as /images/debian-12-genericcloud-amd64.qcow2
GOLDEN_CASES = [
    ("cloud-init+image+computation@kvm.xml", ("computation",), {"cloud_init": ["hostname=web1"]}),
    ("cloud-init+image+desktop@local-tcg.xml", ("desktop",), {"cloud_init": ["user-data=@user-data"]}),
]


def tag() -> str:
    return uuid.uuid4().hex[:8]


def isoinfo(*args) -> str:
    return subprocess.run(["isoinfo", *args], capture_output=True, text=True, check=True).stdout


def qemu_img_info(path) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "-U", "--output", "json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def inputs(tmp_path):
    """A qcow2 cloud image, a public key, a private password file and a user-data file."""
    image = tmp_path / "debian-12-genericcloud-amd64.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    key = tmp_path / "id_ed25519.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw2fFh8cloudtestkeyAAAAAAAAAAAAAAAAAAAA user@host\n")
    pw = tmp_path / "root-pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    user = tmp_path / "user-data"
    user.write_text("#cloud-config\nruncmd:\n  - [touch, /run/cloud-seen]\n")
    return {"image": image, "key": key, "pw": pw, "user": user, "dir": tmp_path}


def render(name, scenarios=(), add=("storage",), connect=TEST_URI, disks=None, plugins=(), host=None, **options):
    from vscen.pipeline import Request
    from vscen.pipeline import render as run

    opts = {"name": name, "network": "none", **options}
    return run(Request(scenarios=list(scenarios), add=list(add), connect=None if host else connect,
                       host_facts=host_files(host) if host else [], disks=disks, options=opts, plugins=plugins),
               keep_connection=not host)


# -- what the user gives ------------------------------------------------------------------------


@pytest.mark.parametrize("item, message", [
    ("colour=blue", "cloud_init: 'colour=blue' is not KEY=VALUE with KEY one of user-data, meta-data, network-config, "
                    "ssh-key, root-password-file, hostname"),
    ("ssh-key", "cloud_init: 'ssh-key' is not KEY=VALUE"),
    ("hostname=web_1", "cloud_init: 'hostname=web_1' hostname 'web_1' is not a host name"),
    ("ssh-key=/nonexistent/k.pub", "cloud_init: 'ssh-key=/nonexistent/k.pub' ssh-key: cannot read /nonexistent/k.pub "
                                   "(No such file or directory)"),
])
def test_bad_keys_and_values_name_field_value_and_what_is_allowed(item, message):
    with pytest.raises(UsageError) as err:
        render(f"cloud-{tag()}", cloud_init=[item], host="kvm")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bad_files_are_refused_with_what_to_do(inputs, tmp_path):
    private = tmp_path / "id_ed25519"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA=\n-----END OPENSSH PRIVATE KEY-----\n")
    readable = tmp_path / "pw-readable"
    readable.write_text("x\n")
    readable.chmod(0o644)
    plain = tmp_path / "plain.txt"
    plain.write_text("hello\n")
    cases = {
        f"ssh-key={private}": f"ssh-key: {private} is a private key; give the public one (id_ed25519.pub)",
        f"ssh-key={plain}": f"ssh-key: {plain} is not an OpenSSH public key file",
        f"root-password-file={readable}": f"root-password-file: {readable} can be read by others; chmod 600 it",
        f"user-data={plain}": f"user-data: {plain} starts with none of #cloud-config",
        f"meta-data={tmp_path}": f"meta-data: {tmp_path} is not a regular file",
    }
    for item, message in cases.items():
        with pytest.raises(UsageError, match=f"^cloud_init: '{item}' .*") as err:
            render(f"cloud-{tag()}", cloud_init=[item], host="kvm")
        assert message in str(err.value), item


def test_combinations_that_would_write_one_file_twice_are_refused(inputs):
    with pytest.raises(UsageError, match="^cloud_init: user-data=FILE cannot be combined with ssh-key"):
        render(f"cloud-{tag()}", cloud_init=[f"user-data={inputs['user']}", f"ssh-key={inputs['key']}"], host="kvm")
    with pytest.raises(UsageError, match="^cloud_init: meta-data=FILE cannot be combined with hostname"):
        render(f"cloud-{tag()}", cloud_init=[f"meta-data={inputs['user']},hostname=a"], host="kvm")
    with pytest.raises(UsageError, match="^cloud_init: hostname is given 2 times; give it once"):
        render(f"cloud-{tag()}", cloud_init=["hostname=a", "hostname=b"], host="kvm")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\xfd7zXZ\x00" + bytes(100)), "is xz-compressed; vscen takes a qcow2 or raw image: decompress it first"),
    (lambda p: p.write_bytes(bytes(0x8001) + b"CD001" + bytes(100)), "is an ISO 9660 image (install media); vscen takes a "
                                                                     "qcow2 or raw image: give it with --cdrom"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_text("ssh-ed25519 AAAA user@host\n"), "is no disk image: neither qcow2 nor raw (a raw image is "
                                                              "whole 512-byte sectors, and it has 27 bytes)"),
    (lambda p: p.mkdir(), "is not a regular file"),
    (lambda p: None, "cannot be read (No such file or directory)"),
])
def test_an_image_that_is_not_qcow2_or_raw_is_refused(tmp_path, make, message):
    path = tmp_path / "img"
    make(path)
    with pytest.raises(UsageError) as err:
        render(f"cloud-{tag()}", image=str(path), host="kvm")
    assert str(err.value) == f"image: '{path}' {message}" or str(err.value).startswith(f"image: '{path}' {message}")


def test_an_overlay_as_image_and_image_without_disk_are_refused(inputs, tmp_path):
    overlay = tmp_path / "over.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(inputs["image"]), "-F", "qcow2", str(overlay)],
                   check=True)
    with pytest.raises(UsageError, match="is a qcow2 overlay on another image; give a standalone image"):
        render(f"cloud-{tag()}", image=str(overlay), host="kvm")
    with pytest.raises(UsageError, match="needs a disk to be the overlay on it, and the guest has none"):
        render(f"cloud-{tag()}", image=str(inputs["image"]), host="kvm", disks=["none"])
    with pytest.raises(UsageError, match="disk 1 is format=raw, but the overlay on .* is qcow2"):
        render(f"cloud-{tag()}", image=str(inputs["image"]), host="kvm", disks=["format=raw"])


def test_a_bad_value_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vscen.cli", "run", "computation", "--name", "cloud-cli", "--connect", TEST_URI,
                           "--cloud-init", "password=hunter2", "--dry-run"], capture_output=True, text=True,
                          env={**os.environ, "XDG_DATA_HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: cloud_init: 'password=hunter2' is not KEY=VALUE with KEY one of user-data, meta-data, network-config, "
        "ssh-key, root-password-file, hostname"]


# -- the seed ------------------------------------------------------------------------------------


def test_the_seed_read_back_by_isoinfo(inputs, tmp_path):
    from vscen_cloud_init.seed import build_iso
    from vscen_cloud_init.spec import parse_item, seed_files

    value = (parse_item(f"ssh-key={inputs['key']},hostname=web1"), parse_item(f"root-password-file={inputs['pw']}"),
             parse_item(f"network-config={inputs['user']}"))
    iso = tmp_path / "seed.iso"
    iso.write_bytes(build_iso(seed_files(value, "cloud-g1")))
    assert "Volume id: cidata" in isoinfo("-d", "-i", str(iso)).splitlines()
    joliet = isoinfo("-J", "-f", "-i", str(iso)).split()
    rock = isoinfo("-R", "-f", "-i", str(iso)).split()
    assert sorted(joliet) == sorted(rock) == ["/meta-data", "/network-config", "/user-data"]
    user = isoinfo("-J", "-x", "/user-data", "-i", str(iso))
    assert user == (
        "#cloud-config\n# written by vscen\nhostname: \"web1\"\n"
        f"ssh_authorized_keys:\n  - \"{inputs['key'].read_text().strip()}\"\n"
        "users:\n  - default\n  - name: root\n    ssh_authorized_keys:\n"
        f"      - \"{inputs['key'].read_text().strip()}\"\n"
        "disable_root: false\n"
        f"chpasswd:\n  expire: false\n  users:\n    - name: root\n      password: \"{PASSWORD}\"\n      type: text\n")
    assert isoinfo("-J", "-x", "/meta-data", "-i", str(iso)) == 'instance-id: "vscen-cloud-g1"\nlocal-hostname: "web1"\n'
    assert isoinfo("-R", "-x", "/network-config", "-i", str(iso)) == inputs["user"].read_text()
    yaml = pytest.importorskip("yaml")
    parsed = yaml.safe_load(user)
    assert parsed["chpasswd"]["users"][0]["password"] == PASSWORD and parsed["hostname"] == "web1"


def test_meta_data_defaults_to_the_guest_name_as_host_name():
    from vscen_cloud_init.spec import seed_files

    files = seed_files((), "cloud_g.2+x")
    assert files == {"user-data": b"#cloud-config\n# written by vscen\n",
                     "meta-data": b'instance-id: "vscen-cloud_g.2+x"\nlocal-hostname: "cloud-g-2-x"\n'}


# -- the domain XML ------------------------------------------------------------------------------


def golden_render(name, scenarios, options, inputs):
    host = name.rsplit("@", 1)[1][:-4]
    opts = {k: [v.replace("@user-data", str(inputs["user"])) for v in vs] if isinstance(vs, list) else vs
            for k, vs in options.items()}
    result = render("golden", scenarios=scenarios, add=(), host=host, image=str(inputs["image"]), **opts)
    return result, result.xml.replace(str(inputs["dir"]), "/images")


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda c: c[0])
def test_golden(case, inputs, regen_golden):
    name, scenarios, options = case
    result, xml = golden_render(name, scenarios, options, inputs)
    path = GOLDEN / name
    if regen_golden:
        path.write_text(xml)
    assert xml == path.read_text(), f"{name} differs: review, then --regen-golden"
    root = define_on_test_driver(result.xml)
    disk = root.find("devices/disk[@device='disk']")
    assert disk.find("backingStore/source").get("file") == str(inputs["image"])
    assert disk.find("backingStore/format").get("type") == "qcow2"
    cd = root.find("devices/disk[@device='cdrom']")
    assert cd.find("source").get("file") == "/var/lib/libvirt/images/golden-cidata.iso"
    assert cd.find("readonly") is not None and cd.find("target").get("bus") == "scsi"
    assert root.find("devices/controller[@type='scsi'][@model='virtio-scsi']") is not None


def test_every_cloud_golden_file_is_a_case():
    assert {p.name for p in GOLDEN.glob("cloud-*.xml")} == {c[0] for c in GOLDEN_CASES}


def test_a_raw_image_is_written_as_raw(tmp_path):
    raw = tmp_path / "img.raw"
    raw.write_bytes(bytes(1024 * 1024))
    result = render(f"cloud-{tag()}", image=str(raw), host="kvm")
    store = etree.fromstring(result.xml.encode()).find("devices/disk/backingStore")
    assert store.find("format").get("type") == "raw" and store.find("source").get("file") == str(raw)
    assert result.settings.disks[0].backing == str(raw) and result.settings.disks[0].format == "qcow2"


# -- test:///default: plan, apply, undo ----------------------------------------------------------


class DriverEnv:
    def __init__(self):
        import libvirt

        libvirt.registerErrorHandler(lambda _c, _e: None, None)
        self.conn = libvirt.open(TEST_URI)
        self.tag = tag()
        self.dir = f"/cloud-{self.tag}"
        pool = self.conn.storagePoolDefineXML(
            f"<pool type='dir'><name>cloud-{self.tag}</name><target><path>{self.dir}</path></target></pool>", 0)
        pool.create(0)
        self.pool = pool

    def volumes(self):
        self.pool.refresh(0)
        return sorted(v.name() for v in self.pool.listAllVolumes(0))

    def close(self):
        for v in self.pool.listAllVolumes(0):
            v.delete(0)
        self.pool.destroy()
        self.pool.undefine()
        for d in self.conn.listAllDomains(0):
            if self.tag in d.name():
                d.undefine()
        self.conn.close()


@pytest.fixture
def tdrv():
    env = DriverEnv()
    yield env
    env.close()


def plan_apply(result, out, **kw):
    from vscen.apply import apply
    from vscen.journal import Journal
    from vscen.plan import make_plan

    plan = make_plan(result, out, **kw)
    journal = Journal.open(plan.out_dir, result.settings.name, result.connection.uri)
    apply(plan, journal, result.connection, result.ctx.registry)
    return plan, journal


def rollback(result, journal):
    from vscen.apply import rollback as back

    return back(list(journal.entries), journal, result.connection, result.ctx.registry)


def test_on_the_test_driver_the_seed_is_a_private_volume_taken_back_by_undo(tdrv, inputs, tmp_path):
    from vscen.plan import make_plan

    name = f"cloud-{tdrv.tag}"
    disk = [f"path={tdrv.dir}/{name}.qcow2,size=128M"]
    items = [f"ssh-key={inputs['key']},hostname=web1", f"root-password-file={inputs['pw']}"]
    result = render(name, disks=disk, image=str(inputs["image"]), cloud_init=items)
    plan = make_plan(result, tmp_path, define=True)
    text = "\n".join(s.description for s in plan.steps)
    assert [(s.owner, s.description) for s in plan.steps if s.owner == "cloud-init-seed"] == [(
        "cloud-init-seed", f"create the cloud-init seed {name}-cidata.iso in pool 'cloud-{tdrv.tag}': NoCloud ISO 'cidata' "
        f"with #cloud-config user-data (ssh keys of {inputs['key']}; root's password from {inputs['pw']}; hostname web1), "
        "meta-data (instance-id, local-hostname); mode 600, owner root")]
    assert PASSWORD not in text and tdrv.volumes() == []  # planning made nothing
    plan, journal = plan_apply(result, tmp_path)
    try:
        assert tdrv.volumes() == [f"{name}-cidata.iso", f"{name}.qcow2"]
        vol = etree.fromstring(tdrv.pool.storageVolLookupByName(f"{name}-cidata.iso").XMLDesc(0).encode())
        assert [vol.findtext(f"target/permissions/{k}") for k in ("mode", "owner", "group")] == ["0600", "0", "0"]
        overlay = etree.fromstring(tdrv.pool.storageVolLookupByName(f"{name}.qcow2").XMLDesc(0).encode())
        assert overlay.findtext("backingStore/path") == str(inputs["image"])
        dom = etree.fromstring(tdrv.conn.lookupByName(name).XMLDesc(0).encode())
        assert dom.find("devices/disk[@device='cdrom']/source").get("file") == f"{tdrv.dir}/{name}-cidata.iso"
        assert PASSWORD not in journal.path.read_text()
    finally:
        assert rollback(result, journal) == []
    assert tdrv.volumes() == []


def test_dry_run_on_the_command_line_writes_nothing(tdrv, inputs, tmp_path):
    name = f"cloud-{tdrv.tag}"
    proc = subprocess.run([sys.executable, "-m", "vscen.cli", "run", "computation", "--name", name, "--connect", TEST_URI,
                           "--network", "none", "--disk", f"path={tdrv.dir}/{name}.qcow2",
                           "--image", str(inputs["image"]), "--cloud-init", f"root-password-file={inputs['pw']}",
                           "--dry-run"], capture_output=True, text=True, env={**os.environ, "XDG_DATA_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    # another process: its own test:///default, without the fixture's pool
    assert (f"would: create the cloud-init seed {name}-cidata.iso in the pool storage-volume makes for {tdrv.dir}: "
            "NoCloud ISO 'cidata' with #cloud-config user-data (root's password from ") in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    assert "<readonly/>" in proc.stdout and not (tmp_path / "vscen").exists()


def test_a_seed_that_exists_is_refused_without_force(tdrv, inputs, tmp_path):
    name = f"cloud-{tdrv.tag}"
    tdrv.pool.createXML(f"<volume><name>{name}-cidata.iso</name><capacity>4096</capacity></volume>", 0)
    result = render(name, disks=[f"path={tdrv.dir}/{name}.qcow2"], cloud_init=["hostname=a"])
    from vscen.plan import make_plan

    with pytest.raises(ExistsError, match=f"cloud-init seed {tdrv.dir}/{name}-cidata.iso exists with other content "
                                          r"\(use --force to replace it\)"):
        make_plan(result, tmp_path)
    steps = [s.description for s in make_plan(result, tmp_path, force=True).steps if s.owner == "cloud-init-seed"]
    assert steps[0].startswith(f"replace the cloud-init seed {name}-cidata.iso")


def test_undo_refuses_a_journal_naming_what_vscen_did_not_make(tdrv):
    from vscen_cloud_init.seed import undo

    from vscen import VscenError, open_connection

    name = f"cloud-{tdrv.tag}"
    tdrv.pool.createXML(f"<volume><name>{name}-cidata.iso</name><capacity>4096</capacity></volume>", 0)
    conn = open_connection(TEST_URI)
    try:
        record = {"kind": "seed", "pool": f"cloud-{tdrv.tag}", "name": f"{name}-cidata.iso",
                  "path": f"{tdrv.dir}/{name}-cidata.iso", "size": 1234}
        with pytest.raises(VscenError, match="its size changed since vscen made it; left in place"):
            undo(conn, record)
        with pytest.raises(VscenError, match="cloud-init seed"):
            undo(conn, {**record, "path": "/etc/passwd", "name": "passwd"})
        with pytest.raises(VscenError, match="cloud-init seed"):
            undo(conn, {**record, "size": "4096"})
        assert tdrv.volumes() == [f"{name}-cidata.iso"]
        undo(conn, {**record, "size": 4096})
        assert tdrv.volumes() == []
        undo(conn, {**record, "size": 4096})  # gone already: fine
    finally:
        conn.close()

