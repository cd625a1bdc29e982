"""The host actions ``storage-volume`` and ``disk-encryption`` (plugin volumes) and what the
``storage`` feature writes for them.

Logic runs on libvirt's in-process ``test:///default`` driver (it keeps storage pools in
memory, but no secrets); the real thing on ``qemu:///system``: a dir pool under a temporary
directory of /var/lib/libvirt/images, qcow2 features checked with ``qemu-img``, an overlay
whose base stays untouched, a LUKS volume with its private secret, a whole run started and
rolled back, and a fault after every step leaving nothing behind. Everything a test makes
carries a uuid and is removed by the fixtures, even on failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import render_for, system_or_skip
from lxml import etree

from vscen.errors import ExistsError, HostError, UsageError, VscenError
from vscen.model import Step

TEST_URI = "test:///default"
SYSTEM_URI = "qemu:///system"
IMAGES = Path("/var/lib/libvirt/images")
PASSPHRASE = "correct horse battery staple 7"


def secret_uuid(path) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vscen:{path}"))


# -- fixtures and helpers ------------------------------------------------------------------------


class Env:
    """A uuid tag, a libvirt connection of our own, and the pipeline results to close."""

    def __init__(self, uri: str, conn, tag: str, root: Path):
        self.uri, self.conn, self.tag, self.root = uri, conn, tag, root
        self.results = []

    @property
    def name(self) -> str:
        return f"vscen-test-{self.tag}"

    def render(self, disks, add=("storage",), scenarios=(), passphrase=None, **options):
        from vscen.pipeline import Request, render

        opts = {"name": self.name, "network": "none", **options}
        if passphrase is not None:  # ("file", PATH), as passfile gives it
            opts["passphrase_file"] = passphrase[1]
        if self.uri == SYSTEM_URI:
            opts = {"virt_type": "qemu", "memory": "128MiB", "vcpu": 1, **opts}
        result = render(Request(scenarios=list(scenarios), add=list(add), connect=self.uri, options=opts,
                                disks=list(disks)))
        self.results.append(result)
        return result

    def plan(self, result, out: Path, **kw):
        from vscen.plan import make_plan

        return make_plan(result, out, **kw)

    def apply(self, result, plan):
        from vscen.apply import apply
        from vscen.journal import Journal

        journal = Journal.open(plan.out_dir, result.settings.name, self.uri)
        apply(plan, journal, result.connection, result.ctx.registry)
        return journal

    def rollback(self, result, journal) -> list[str]:
        from vscen.apply import rollback

        return rollback(list(journal.entries), journal, result.connection, result.ctx.registry)

    def pools(self):
        """(name, active, volumes) of the pools whose directory is ours."""
        out = []
        for p in self.conn.listAllStoragePools(0):
            target = etree.fromstring(p.XMLDesc(0).encode()).findtext("target/path") or ""
            if target.startswith(str(self.root)):
                if p.isActive():
                    p.refresh(0)
                vols = sorted(v.name() for v in p.listAllVolumes(0)) if p.isActive() else None
                out.append((p.name(), bool(p.isActive()), vols))
        return sorted(out)

    def secrets(self):
        import libvirt

        try:
            found = self.conn.listAllSecrets(0)
        except libvirt.libvirtError:
            return []  # the test driver keeps none
        return sorted((s.UUIDString(), s.usageID()) for s in found if str(self.root) in (s.usageID() or ""))

    def domains(self):
        return sorted(d.name() for d in self.conn.listAllDomains(0) if self.tag in d.name())

    def files(self):
        if self.uri != SYSTEM_URI:
            return []
        return sorted(str(Path(d, f).relative_to(self.root)) + ("/" if f in ds else "")
                      for d, ds, fs in os.walk(self.root) for f in [*ds, *fs])

    def snapshot(self):
        return {"pools": self.pools(), "secrets": self.secrets(), "domains": self.domains(),
                "files": self.files()}

    def cleanup(self):
        import libvirt

        for name in self.domains():
            dom = self.conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM) if self.uri == SYSTEM_URI else dom.undefine()
        for p in self.conn.listAllStoragePools(0):
            target = etree.fromstring(p.XMLDesc(0).encode()).findtext("target/path") or ""
            if not target.startswith(str(self.root)) or p.name() == "default":
                continue
            if p.isActive():
                for v in p.listAllVolumes(0):
                    v.delete(0)
                p.destroy()
            p.undefine()
        for uid, _usage in self.secrets():
            self.conn.secretLookupByUUIDString(uid).undefine()
        for r in self.results:
            if r.connection is not None:
                r.connection.close()


@pytest.fixture
def tenv():
    """test:///default; our connection keeps the shared in-process driver alive meanwhile."""
    libvirt = pytest.importorskip("libvirt")
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open(TEST_URI)
    tag = uuid.uuid4().hex[:8]
    env = Env(TEST_URI, conn, tag, Path(f"/vscen-test-{tag}"))
    yield env
    env.cleanup()
    conn.close()


@pytest.fixture
def senv():
    """qemu:///system and a fresh directory under /var/lib/libvirt/images."""
    yield from system_env()


def system_env(prefix: str = ""):
    """An Env on qemu:///system whose names start with *prefix*, in a fresh directory under
    /var/lib/libvirt/images, cleaned up after (a fixture's body)."""
    conn = system_or_skip()
    tag = prefix + uuid.uuid4().hex[:8]
    root = IMAGES / f"vscen-test-{tag}"
    root.mkdir(parents=True)
    env = Env(SYSTEM_URI, conn, tag, root)
    try:
        yield env
    finally:
        try:
            env.cleanup()
        finally:
            shutil.rmtree(root, ignore_errors=True)
            conn.close()


def passfile(tmp_path: Path, text: str = PASSPHRASE + "\n", mode: int = 0o600) -> tuple[str, str]:
    path = tmp_path / f"pass-{uuid.uuid4().hex[:8]}"
    path.write_text(text)
    path.chmod(mode)
    return ("file", str(path))


def host_steps(plan):
    return [(s.owner, s.description) for s in plan.steps if s.owner != "vscen"]


def qemu_img(*args) -> dict:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fail_step(message="injected fault") -> Step:
    def do():
        raise RuntimeError(message)

    return Step("fail on purpose", do, owner="vscen")


# -- test:///default: the logic ------------------------------------------------------------------


def test_plan_changes_nothing_and_names_a_new_pool_and_volumes(tenv, tmp_path):
    d = tenv.root
    result = tenv.render([f"path={d}/a.qcow2,size=1G,lazy_refcounts=yes,cluster_size=128k",
                          f"path={d}/b.raw,format=raw,size=2G,preallocation=falloc"])
    before = tenv.snapshot()
    plan = tenv.plan(result, tmp_path)
    assert tenv.snapshot() == before
    pool = f"vscen-vscen-test-{tenv.tag}"
    assert host_steps(plan) == [
        ("storage-volume", f"define storage pool '{pool}' for {d} (start, autostart)"),
        ("storage-volume", f"create volume a.qcow2 in pool '{pool}': qcow2, 1GiB, clusters of 128KiB, lazy refcounts"),
        ("storage-volume", f"create volume b.raw in pool '{pool}': raw, 2GiB, fully preallocated"),
    ]


def test_apply_records_what_it_made_and_rollback_takes_it_all_back(tenv, tmp_path):
    d = tenv.root
    result = tenv.render([f"path={d}/a.qcow2,size=1G,lazy_refcounts=yes,cluster_size=128k",
                          f"path={d}/b.raw,format=raw,size=2G,preallocation=full"])
    before = tenv.snapshot()
    journal = tenv.apply(result, tenv.plan(result, tmp_path))
    pool = f"vscen-vscen-test-{tenv.tag}"
    mine = [e for e in journal.entries if e["owner"] == "storage-volume"]
    assert [e["record"]["kind"] for e in mine] == ["pool", "volume", "volume"]
    assert mine[0]["record"] | {"uuid": None} == {
        "kind": "pool", "name": pool, "uuid": None, "path": str(d), "built": False, "dirs": [],
        "preexisting": [], "storage": True}
    assert [e["record"] for e in mine[1:]] == [
        {"kind": "volume", "pool": pool, "name": "a.qcow2", "path": f"{d}/a.qcow2", "storage": True},
        {"kind": "volume", "pool": pool, "name": "b.raw", "path": f"{d}/b.raw", "storage": True}]
    assert tenv.pools() == [(pool, True, ["a.qcow2", "b.raw"])]
    vol = etree.fromstring(tenv.conn.storageVolLookupByPath(f"{d}/a.qcow2").XMLDesc(0).encode())
    assert vol.findtext("capacity") == str(1024**3) and vol.findtext("allocation") == "0"
    assert vol.find("target/format").get("type") == "qcow2" and vol.findtext("target/compat") == "1.1"
    assert vol.findtext("target/clusterSize") == str(128 * 1024)
    assert vol.find("target/features/lazy_refcounts") is not None
    raw = etree.fromstring(tenv.conn.storageVolLookupByPath(f"{d}/b.raw").XMLDesc(0).encode())
    assert raw.findtext("allocation") == str(2 * 1024**3)  # preallocated: all of it
    assert tenv.conn.storagePoolLookupByName(pool).autostart() == 1

    assert tenv.rollback(result, journal) == []
    assert tenv.snapshot() == before and journal.entries == []
    # taking back what is gone already is fine
    action = result.ctx.registry.host_actions["storage-volume"]
    for entry in mine:
        action.undo(result.connection, entry["record"])


def test_a_second_identical_run_changes_nothing(tenv, tmp_path):
    d = tenv.root
    disks = [f"path={d}/a.qcow2,size=1G"]
    result = tenv.render(disks)
    tenv.apply(result, tenv.plan(result, tmp_path))
    again = tenv.render(disks)
    plan = tenv.plan(again, tmp_path)
    assert plan.steps == []
    assert f"disk {d}/a.qcow2 exists (qcow2, 1GiB): unchanged" in again.ctx.notes


def make_pool(env, directory: str, name: str, volumes=(), start=True):
    """A pool of our own (not vscen's) on *directory*, with *volumes* as (name, format, size)."""
    pool = env.conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{name}</name><target><path>{directory}</path></target></pool>", 0)
    if start:
        pool.create(0)
    for vname, fmt, size in volumes:
        pool.createXML(f"<volume><name>{vname}</name><capacity unit='bytes'>{size}</capacity>"
                       f"<allocation unit='bytes'>0</allocation><target><format type='{fmt}'/></target></volume>", 0)
    return pool


@pytest.mark.parametrize("force", [False, True])
def test_an_existing_volume_of_another_format_or_asked_size_is_refused_even_with_force(tenv, tmp_path, force):
    d = tenv.root
    make_pool(tenv, str(d), f"vscen-test-{tenv.tag}-p", [("a.qcow2", "raw", 1024**3), ("b.qcow2", "qcow2", 1024**3)])
    before = tenv.snapshot()
    result = tenv.render([f"path={d}/a.qcow2", f"path={d}/b.qcow2,size=2G"])
    with pytest.raises(ExistsError) as exc:
        tenv.plan(result, tmp_path, force=force)
    problems = [p for p in exc.value.problems if p.startswith("disk ")]
    assert problems == [
        f"disk {d}/a.qcow2 exists (volume of pool 'vscen-test-{tenv.tag}-p') as raw, but the guest would "
        f"open it as qcow2: give --disk path={d}/a.qcow2,format=raw, or another path (vscen never deletes, "
        "resizes or converts a disk it finds, --force included)",
        f"disk {d}/b.qcow2 exists (volume of pool 'vscen-test-{tenv.tag}-p') with 1GiB, not the 2GiB asked "
        "for: leave out size= to use it as it is, or give another path (vscen never deletes, resizes or "
        "converts a disk it finds, --force included)"]
    assert tenv.snapshot() == before


def test_an_existing_volume_is_used_as_it_is_when_no_size_was_asked(tenv, tmp_path):
    d = tenv.root
    pool = make_pool(tenv, str(d), f"vscen-test-{tenv.tag}-p", [("a.raw", "raw", 1024**3)])
    result = tenv.render([f"path={d}/a.raw,format=raw"])
    plan = tenv.plan(result, tmp_path)
    assert host_steps(plan) == []
    assert (f"disk {d}/a.raw exists with 1GiB (raw): used as it is; the default size 20GiB applies to "
            "new disks only") in result.ctx.notes
    # a new disk beside it goes into that pool, which vscen did not make: never taken back
    result = tenv.render([f"path={d}/a.raw,format=raw", f"path={d}/c.qcow2,size=1G"])
    plan = tenv.plan(result, tmp_path)
    assert host_steps(plan) == [("storage-volume", f"create volume c.qcow2 in pool 'vscen-test-{tenv.tag}-p': qcow2, 1GiB")]
    journal = tenv.apply(result, plan)
    assert [e["record"]["kind"] for e in journal.entries if e["owner"] != "vscen"] == ["volume"]
    assert tenv.rollback(result, journal) == []
    assert pool.isActive() and sorted(v.name() for v in pool.listAllVolumes(0)) == ["a.raw"]


def test_a_preallocated_disk_larger_than_the_free_space_is_refused(tenv, tmp_path):
    d = tenv.root
    make_pool(tenv, str(d), f"vscen-test-{tenv.tag}-p")  # the test driver's pools hold 100GiB
    before = tenv.snapshot()
    result = tenv.render([f"path={d}/big.raw,format=raw,size=200G,preallocation=full"])
    with pytest.raises(HostError) as exc:
        tenv.plan(result, tmp_path)
    assert str(exc.value) == (
        f"disk {d}/big.raw: 200GiB preallocated does not fit in pool 'vscen-test-{tenv.tag}-p' (100GiB free): "
        "out of disk space; free some space, give a smaller size=, or preallocation=off")
    # two that fit alone but not together
    result = tenv.render([f"path={d}/a.raw,format=raw,size=60G,preallocation=falloc",
                          f"path={d}/b.qcow2,size=60G,preallocation=full"])
    with pytest.raises(HostError, match="120GiB preallocated does not fit"):
        tenv.plan(result, tmp_path)
    assert tenv.snapshot() == before
    # sparse: allowed, with a note
    result = tenv.render([f"path={d}/big.qcow2,size=200G"])
    assert len(host_steps(tenv.plan(result, tmp_path))) == 1
    assert any("200GiB (sparse)" in n and "can fill the host's disk" in n for n in result.ctx.notes)


def test_the_pool_option(tenv, tmp_path):
    d = tenv.root
    with pytest.raises(UsageError) as exc:
        tenv.plan(tenv.render([f"path={d}/a.qcow2"], pool=f"nosuch-{tenv.tag}"), tmp_path)
    assert str(exc.value).startswith(f"pool: 'nosuch-{tenv.tag}' does not exist on {TEST_URI} (pools there: ")
    make_pool(tenv, str(d / "other"), f"vscen-test-{tenv.tag}-o")
    with pytest.raises(UsageError) as exc:
        tenv.plan(tenv.render([f"path={d}/a.qcow2"], pool=f"vscen-test-{tenv.tag}-o"), tmp_path)
    assert str(exc.value) == (f"disk {d}/a.qcow2: it is not in pool 'vscen-test-{tenv.tag}-o', whose volumes "
                              f"live in {d}/other; give --disk path={d}/other/a.qcow2, or leave out --pool")
    make_pool(tenv, str(d / "off"), f"vscen-test-{tenv.tag}-off", start=False)
    with pytest.raises(UsageError, match=f"pool: 'vscen-test-{tenv.tag}-off' on {TEST_URI} is not active"):
        tenv.plan(tenv.render([f"path={d}/off/a.qcow2"], pool=f"vscen-test-{tenv.tag}-off"), tmp_path)
    # without --pool, an inactive pool holding the directory is not started by vscen either
    with pytest.raises(UsageError, match=f"pool 'vscen-test-{tenv.tag}-off' holds {d}/off but is not active"):
        tenv.plan(tenv.render([f"path={d}/off/a.qcow2"]), tmp_path)
    assert not tenv.conn.storagePoolLookupByName(f"vscen-test-{tenv.tag}-off").isActive()
    result = tenv.render([f"path={d}/other/a.qcow2,size=1G"], pool=f"vscen-test-{tenv.tag}-o")
    assert host_steps(tenv.plan(result, tmp_path)) == [
        ("storage-volume", f"create volume a.qcow2 in pool 'vscen-test-{tenv.tag}-o': qcow2, 1GiB")]


def test_a_pool_vscen_made_stays_when_it_holds_volumes_it_did_not_make(tenv, tmp_path):
    d = tenv.root
    result = tenv.render([f"path={d}/a.qcow2,size=1G"])
    journal = tenv.apply(result, tenv.plan(result, tmp_path))
    pool = tenv.conn.storagePoolLookupByName(f"vscen-vscen-test-{tenv.tag}")
    pool.createXML("<volume><name>someone-elses.raw</name><capacity unit='bytes'>1048576</capacity>"
                   "<target><format type='raw'/></target></volume>", 0)
    assert tenv.rollback(result, journal) == []
    assert tenv.pools() == [(f"vscen-vscen-test-{tenv.tag}", True, ["someone-elses.raw"])]


def test_disks_that_cannot_be_made_are_usage_errors(tenv, tmp_path):
    d = tenv.root
    cases = {
        f"path={d}/o.qcow2,backing={d}/nobase.qcow2":
            f"disk.backing: {d}/nobase.qcow2 is in no storage pool on {TEST_URI}, so vscen cannot check it; "
            "give an existing base image",
        f"path={d}/o.qcow2,backing={d}/base.qcow2,preallocation=metadata":
            f"disk {d}/o.qcow2: preallocation=metadata cannot be combined with backing= (QEMU refuses to "
            "preallocate an overlay); leave out one of them",
        f"path={d}/c.qcow2,cluster_size=3k":
            "disk.cluster_size: 3KiB is not a power of two from 512B to 2MiB",
    }
    for spec, message in cases.items():
        with pytest.raises(UsageError) as exc:
            tenv.plan(tenv.render([spec]), tmp_path)
        assert str(exc.value) == message
    with pytest.raises(UsageError, match=f"disk: {d}/x.qcow2 is given for disk 1 and disk 2"):
        tenv.plan(tenv.render([f"path={d}/x.qcow2", f"path={d}/x.qcow2"]), tmp_path)


def test_encryption_needs_a_secret_store_which_the_test_driver_lacks(tenv, tmp_path):
    d = tenv.root
    result = tenv.render([f"path={d}/e.qcow2,size=1G,encrypt=yes"], passphrase=passfile(tmp_path))
    before = tenv.snapshot()
    with pytest.raises(HostError) as exc:
        tenv.plan(result, tmp_path)
    assert str(exc.value) == (f"disk {d}/e.qcow2: encrypt=yes needs libvirt's secret store, which "
                              f"{TEST_URI} does not offer; use a qemu:// connection")
    assert tenv.snapshot() == before
    # and taking back a secret record there is fine (nothing to take back)
    result.ctx.registry.host_actions["disk-encryption"].undo(result.connection, {"kind": "secret", "uuid": secret_uuid(f"{d}/e.qcow2"),
                                                                                            "usage": f"{d}/e.qcow2"})


# -- the storage feature ---------------------------------------------------------------------------


def test_an_encrypted_disk_names_its_secret_in_the_domain_xml():
    result = render_for([], add=["storage"], options={"name": "t1"},
                        disks=["path=/vm/a.qcow2,encrypt=yes", "path=/vm/b.qcow2"])
    root = etree.fromstring(result.xml.encode())  # render validated it against libvirt's schema
    disks = root.findall("devices/disk")
    enc = disks[0].find("encryption")
    assert [c.tag for c in disks[0]] == ["driver", "source", "target", "encryption"]
    assert enc.get("format") == "luks"
    assert [(s.get("type"), s.get("uuid")) for s in enc] == [("passphrase", secret_uuid("/vm/a.qcow2"))]
    assert disks[1].find("encryption") is None
    again = render_for([], add=["storage"], options={"name": "t1"},
                       disks=["path=/vm/a.qcow2,encrypt=yes", "path=/vm/b.qcow2"])
    assert again.xml == result.xml


def test_a_note_names_each_storage_setting_chosen_against_the_scenario(tmp_path, monkeypatch):
    result = render_for(["computation"], host="kvm", options={"name": "t1"},
                        disks=["size=2G,cache=writeback,io=threads"])
    notes = [n for n in result.ctx.notes if n.startswith("storage:")]
    assert notes == ["storage: disk.cache recommended 'none' (scenario computation), chosen 'writeback' (option)",
                     "storage: disk.io recommended 'native' (scenario computation), chosen 'threads' (option)"]
    config = tmp_path / "vscen.toml"
    config.write_text('[disk]\ncache = "none"\nformat = "raw"\n')
    result = render_for(["desktop"], host="kvm", options={"name": "t1"}, config=config)
    notes = [n for n in result.ctx.notes if n.startswith("storage:")]
    assert notes == [f"storage: disk.format recommended 'qcow2' (scenario desktop), chosen 'raw' (config {config})",
                     f"storage: disk.cache recommended 'writeback' (scenario desktop), chosen 'none' (config {config})"]
    result = render_for(["desktop"], host="kvm", options={"name": "t1"})
    assert [n for n in result.ctx.notes if n.startswith("storage:")] == []


# -- qemu:///system: the real thing ----------------------------------------------------------------


def test_a_real_qcow2_volume_has_the_features_asked_for(senv, tmp_path):
    d = senv.root / "pool"
    result = senv.render([f"path={d}/a.qcow2,size=64M,lazy_refcounts=yes,cluster_size=128k,preallocation=metadata",
                          f"path={d}/s.qcow2,size=64M",
                          f"path={d}/f.raw,format=raw,size=16M,preallocation=falloc"])
    journal = senv.apply(result, senv.plan(result, tmp_path, define=False))
    pool = journal.entries[1]["record"]
    assert pool["kind"] == "pool" and pool["built"] and pool["dirs"] == [str(d)]
    info = qemu_img("info", "--output", "json", str(d / "a.qcow2"))
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * 1024**2
    assert info["cluster-size"] == 128 * 1024
    assert info["format-specific"]["data"]["compat"] == "1.1"
    assert info["format-specific"]["data"]["lazy-refcounts"] is True
    # metadata preallocated: every cluster is mapped; the sparse one maps none
    assert all(m["data"] for m in qemu_img("map", "--output", "json", str(d / "a.qcow2")))
    assert not any(m["data"] for m in qemu_img("map", "--output", "json", str(d / "s.qcow2")))
    assert qemu_img("info", "--output", "json", str(d / "s.qcow2"))["format-specific"]["data"]["lazy-refcounts"] is False
    raw = qemu_img("info", "--output", "json", str(d / "f.raw"))
    assert raw["format"] == "raw" and raw["actual-size"] >= 16 * 1024**2  # fallocated
    assert senv.rollback(result, journal) == []
    assert senv.snapshot() == {"pools": [], "secrets": [], "domains": [], "files": []}  # even the directory


def test_an_overlay_never_writes_its_base(senv, tmp_path):
    base = senv.root / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "32M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", str(base)], check=True, capture_output=True)
    digest = sha256(base)
    overlay = senv.root / "o.qcow2"
    disks = [f"path={overlay},size=16M,backing={base}"]
    result = senv.render(disks)
    plan = senv.plan(result, tmp_path, define=False)
    assert host_steps(plan)[-1] == (
        "storage-volume", f"create volume o.qcow2 in pool 'vscen-var-lib-libvirt-images-vscen-test-{senv.tag}': "
        f"qcow2, 32MiB, overlay on {base} (qcow2)")
    assert (f"disk {overlay}: an overlay cannot be smaller than its base {base} (32MiB): made 32MiB, not 16MiB"
            in result.ctx.notes)
    journal = senv.apply(result, plan)
    assert senv.plan(senv.render(disks), tmp_path, define=False).steps == []  # and the next run uses it
    info = qemu_img("info", "--output", "json", str(overlay))
    assert info["backing-filename"] == str(base) and info["backing-filename-format"] == "qcow2"
    # reads see the base; writes go to the overlay only
    io = ["qemu-io", "-f", "qcow2"]
    subprocess.run([*io, "-c", "read -P 0x11 0 1M", str(overlay)], check=True, capture_output=True)
    subprocess.run([*io, "-c", "write -P 0x22 0 2M", str(overlay)], check=True, capture_output=True)
    subprocess.run([*io, "-c", "read -P 0x22 0 2M", str(overlay)], check=True, capture_output=True)
    assert sha256(base) == digest
    subprocess.run([*io, "-c", "read -P 0x11 0 1M", str(base)], check=True, capture_output=True)
    assert senv.rollback(result, journal) == []
    assert sha256(base) == digest and senv.files() == ["base.qcow2"]
    assert senv.pools() == []  # the pool vscen made went, the base it found stays


def test_an_existing_file_outside_any_pool(senv, tmp_path):
    image = senv.root / "mine.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "64M"], check=True)
    digest = sha256(image)
    with pytest.raises(ExistsError, match=f"disk {image} exists \\(file\\) as raw, but the guest would open it as qcow2"):
        senv.plan(senv.render([f"path={image}"]), tmp_path, force=True)
    with pytest.raises(ExistsError, match=f"disk {image} exists \\(file\\) with 64MiB, not the 128MiB asked for"):
        senv.plan(senv.render([f"path={image},format=raw,size=128M"]), tmp_path)
    result = senv.render([f"path={image},format=raw"])
    assert host_steps(senv.plan(result, tmp_path)) == []
    assert any(n.startswith(f"disk {image} exists with 64MiB (raw): used as it is") for n in result.ctx.notes)
    assert sha256(image) == digest and senv.pools() == []


def test_a_real_encrypted_volume_and_its_private_secret(senv, tmp_path):
    path = senv.root / "e.qcow2"
    result = senv.render([f"path={path},size=64M,encrypt=yes"], passphrase=passfile(tmp_path))
    plan = senv.plan(result, tmp_path)
    uid = secret_uuid(path)
    assert [o for o, _ in host_steps(plan)] == ["storage-volume", "disk-encryption", "disk-encryption"]
    assert all(PASSPHRASE not in s.description for s in plan.steps)
    journal = senv.apply(result, plan)
    try:
        records = [e["record"] for e in journal.entries if e["owner"] == "disk-encryption"]
        assert records == [{"kind": "secret", "uuid": uid, "usage": str(path), "storage": True},
                           {"kind": "volume", "pool": f"vscen-var-lib-libvirt-images-vscen-test-{senv.tag}",
                            "name": "e.qcow2", "path": str(path), "storage": True}]
        assert PASSPHRASE not in journal.path.read_text() and uid in journal.path.read_text()
        import libvirt

        secret = senv.conn.secretLookupByUUIDString(uid)
        sx = etree.fromstring(secret.XMLDesc(0).encode())
        assert (sx.get("private"), sx.get("ephemeral")) == ("yes", "no")
        assert (sx.find("usage").get("type"), sx.findtext("usage/volume")) == ("volume", str(path))
        with pytest.raises(libvirt.libvirtError, match="private"):
            secret.value(0)
        info = qemu_img("info", "--output", "json", str(path))
        assert info["encrypted"] is True and info["format-specific"]["data"]["encrypt"]["format"] == "luks"
        dom = senv.conn.lookupByName(senv.name)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert PASSPHRASE not in xml and PASSPHRASE not in result.xml
        assert etree.fromstring(xml.encode()).find(".//disk//encryption/secret").get("uuid") == uid
        # the image opens with the passphrase (and only with it)
        key = tmp_path / "key"
        key.write_text(PASSPHRASE)
        wrong = tmp_path / "wrong"
        wrong.write_text("not the passphrase")
        for keyfile, ok in ((key, True), (wrong, False)):
            proc = subprocess.run(["qemu-io", "--object", f"secret,id=k0,file={keyfile}", "--image-opts",
                                   f"driver=qcow2,file.filename={path},encrypt.key-secret=k0",
                                   "-c", "read 0 4k"], capture_output=True, text=True)
            assert (proc.returncode == 0 and "read 4096/4096" in proc.stdout) is ok, proc.stdout + proc.stderr
        # a second run: secret and volume exist: nothing to do
        again = senv.render([f"path={path},size=64M,encrypt=yes"], passphrase=passfile(tmp_path))
        assert senv.plan(again, tmp_path).steps == []
        assert f"secret {uid} for {path} exists: unchanged" in again.ctx.notes
    finally:
        entries = list(journal.entries)
        assert senv.rollback(result, journal) == []
    assert senv.snapshot() == {"pools": [], "secrets": [], "domains": [], "files": []}
    for entry in entries:  # all gone: taking them back again is fine
        if entry["owner"] != "vscen":
            result.ctx.registry.host_actions[entry["owner"]].undo(result.connection, entry["record"])


def test_a_bad_passphrase_file_is_a_usage_error_and_leaves_nothing(senv, tmp_path):
    """A file others can read, or none, is refused with the settings, before anything is
    planned; a passphrase too short is found when the step reads it, and the run rolls back."""
    path = senv.root / "e.qcow2"
    before = senv.snapshot()
    for source, message in ((passfile(tmp_path, mode=0o644), "can be read by others; chmod 600 it"),
                            (("file", str(tmp_path / "missing")), "passphrase-file: cannot read")):
        with pytest.raises(UsageError, match=message):
            senv.render([f"path={path},size=16M,encrypt=yes"], passphrase=source)
    result = senv.render([f"path={path},size=16M,encrypt=yes"], passphrase=passfile(tmp_path, text="short\n"))
    with pytest.raises(UsageError, match="it is shorter than 8 characters") as exc:
        senv.apply(result, senv.plan(result, tmp_path))
    assert "rolled back what this run did" in str(exc.value)
    assert senv.snapshot() == before and not (tmp_path / senv.name).exists()


def test_a_secret_for_the_disk_left_or_foreign(senv, tmp_path):
    import libvirt

    path = senv.root / "e.qcow2"
    uid = secret_uuid(path)
    senv.conn.secretDefineXML(
        f"<secret ephemeral='no' private='yes'><uuid>{uid}</uuid><usage type='volume'><volume>{path}</volume>"
        "</usage></secret>", 0)
    disks = [f"path={path},size=16M,encrypt=yes"]
    with pytest.raises(ExistsError, match=f"vscen's secret {uid} for it exists \\(left by an earlier run\\)"):
        senv.plan(senv.render(disks, passphrase=passfile(tmp_path)), tmp_path)
    result = senv.render(disks, passphrase=passfile(tmp_path))
    plan = senv.plan(result, tmp_path, force=True, define=False)
    assert host_steps(plan)[1] == ("disk-encryption", f"set the value of the existing libvirt secret {uid} for "
                                   f"{path} (private; value: the disk passphrase)")
    journal = senv.apply(result, plan)
    assert senv.secrets() == [(uid, str(path))] and path.exists()
    assert senv.rollback(result, journal) == []
    assert senv.snapshot() == {"pools": [], "secrets": [], "domains": [], "files": []}
    with pytest.raises(libvirt.libvirtError):  # the leftover was adopted, then taken back
        senv.conn.secretLookupByUUIDString(uid)
    # a secret of another UUID for the same path is not vscen's: refused, --force included
    other = str(uuid.uuid4())
    senv.conn.secretDefineXML(
        f"<secret ephemeral='no' private='yes'><uuid>{other}</uuid><usage type='volume'><volume>{path}</volume>"
        "</usage></secret>", 0)
    with pytest.raises(ExistsError, match=f"the libvirt secret {other} for it exists and is not vscen's"):
        senv.plan(senv.render(disks, passphrase=passfile(tmp_path)), tmp_path, force=True)
    assert senv.secrets() == [(other, str(path))]


def full_disks(env, base: Path) -> list[str]:
    d = env.root / "disks"
    return [f"path={d}/root.qcow2,size=64M,lazy_refcounts=yes", f"path={d}/data.raw,format=raw,size=8M,preallocation=full",
            f"path={d}/over.qcow2,size=32M,backing={base}", f"path={d}/secret.qcow2,size=32M,encrypt=yes"]


def test_a_full_run_started_then_taken_back_leaves_nothing(senv, tmp_path):
    import libvirt

    base = senv.root / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "32M"], check=True)
    before = senv.snapshot()
    result = senv.render(full_disks(senv, base), passphrase=passfile(tmp_path))
    plan = senv.plan(result, tmp_path, start=True)
    assert [o for o, _ in host_steps(plan)] == ["storage-volume"] * 4 + ["disk-encryption"] * 2
    journal = senv.apply(result, plan)
    try:
        dom = senv.conn.lookupByName(senv.name)
        assert dom.isActive() and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING  # QEMU opened every disk
        assert len(senv.pools()) == 1 and senv.pools()[0][2] == ["data.raw", "over.qcow2", "root.qcow2", "secret.qcow2"]
        assert [u for u, _ in senv.secrets()] == [secret_uuid(senv.root / "disks/secret.qcow2")]
        assert PASSPHRASE not in journal.path.read_text()
    finally:
        problems = senv.rollback(result, journal)
    assert problems == []
    assert senv.snapshot() == before
    assert not plan.out_dir.exists()


def test_a_fault_after_any_step_leaves_nothing_this_run_made(senv, tmp_path):
    base = senv.root / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "32M"], check=True)
    before = senv.snapshot()
    disks = full_disks(senv, base)
    count = len(senv.plan(senv.render(disks, passphrase=passfile(tmp_path)), tmp_path, start=True).steps)
    assert count == 10  # dirs, pool, 3 volumes, secret, encrypted volume, file, define, start
    source = passfile(tmp_path)
    for k in range(count):
        result = senv.render(disks, passphrase=source)
        plan = senv.plan(result, tmp_path, start=True)
        done = [s.description for s in plan.steps[:k + 1]]
        plan.steps.insert(k + 1, fail_step(f"fault after step {k + 1}"))
        with pytest.raises(VscenError) as exc:
            senv.apply(result, plan)
        assert str(exc.value) == (f"fail on purpose: RuntimeError: fault after step {k + 1}; "
                                  "rolled back what this run did"), done
        assert senv.snapshot() == before, done
        assert not plan.out_dir.exists(), done
