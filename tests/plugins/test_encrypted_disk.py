"""The ``encrypted-disk`` feature (plugin volumes), secure-vm's default: a LUKS disk whose
random key only libvirt's private secret store holds, on qemu:///system for real; a note and no
encryption on test:///default, which keeps no secrets; ``--no-encrypt-disk`` leaves it out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import host_files
from lxml import etree
from test_volumes import host_steps, qemu_img, system_env

from vscen import secret_uuid
from vscen.pipeline import Request, render

#: what a guest on qemu:///system here (TCG, no SEV, no memory locking) cannot have
NOT_HERE = ["launch-security", "cpu-passthrough", "locked-memory"]


@pytest.fixture
def xenv(monkeypatch):
    """qemu:///system and a fresh directory under /var/lib/libvirt/images, names with secxml-."""
    monkeypatch.delenv("VSCEN_DISK_PASSPHRASE", raising=False)
    yield from system_env("secxml-")


def secure_vm(env, disks, scenarios=("secure-vm",), **options):
    """secure-vm for the recorded AMD host, defined on *env*'s connection, without what this
    machine cannot run (so that libvirt defines it)."""
    result = render(Request(
        scenarios=list(scenarios), remove=NOT_HERE, host_facts=host_files("amd-sev"), connect=env.uri,
        disks=list(disks),
        options={"name": env.name, "network": "none", "virt_type": "qemu", "memory": "256MiB", "vcpu": 1, **options}))
    env.results.append(result)
    return result


def test_secure_vm_encrypts_its_disk_with_a_random_key_only_libvirt_holds(xenv, tmp_path):
    path = xenv.root / "secxml-disk.qcow2"
    result = secure_vm(xenv, [f"path={path},size=16M"])
    uid = secret_uuid(str(path))
    root = etree.fromstring(result.xml.encode())
    assert root.find("devices/disk/encryption/secret").get("uuid") == uid
    assert result.settings.source("disk.encrypt") == "scenario secure-vm (encrypted-disk)"
    assert ("encrypted-disk: disk 1 LUKS-encrypted; key: a random key vscen generates, kept only in libvirt's "
            "private secret store (--no-encrypt-disk leaves it out)") in result.ctx.notes
    plan = xenv.plan(result, tmp_path)
    assert host_steps(plan)[-2:] == [
        ("disk-encryption", f"define the libvirt secret {uid} for {path} (private; value: a random key vscen "
                            "generates, kept only in libvirt's secret store)"),
        ("disk-encryption", f"create volume secxml-disk.qcow2 in pool 'vscen-var-lib-libvirt-images-vscen-test-"
                            f"{xenv.tag}': qcow2, 16MiB, LUKS-encrypted with secret {uid}")]
    journal = xenv.apply(result, plan)
    import libvirt

    secret = xenv.conn.secretLookupByUUIDString(uid)
    sx = etree.fromstring(secret.XMLDesc(0).encode())
    assert (sx.get("private"), sx.get("ephemeral")) == ("yes", "no")
    with pytest.raises(libvirt.libvirtError, match="private"):
        secret.value(0)
    info = qemu_img("info", "--output", "json", str(path))
    assert info["encrypted"] is True and info["format-specific"]["data"]["encrypt"]["format"] == "luks"
    # the key is nowhere but in libvirt: the journal names the secret, never a value
    records = [e["record"] for e in journal.entries if e["owner"] == "disk-encryption"]
    assert records[0] == {"kind": "secret", "uuid": uid, "usage": str(path), "storage": True}
    assert sorted(os.listdir(plan.out_dir)) == ["domain.xml", "journal.json"]
    # vscen destroy takes back the secret with the disk (and everything else it made)
    proc = subprocess.run([sys.executable, "-m", "vscen.cli", "destroy", xenv.name, "--output", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert xenv.snapshot() == {"pools": [], "secrets": [], "domains": [], "files": []}


def test_no_encrypt_disk_leaves_it_out(xenv, tmp_path):
    path = xenv.root / "secxml-plain.qcow2"
    result = secure_vm(xenv, [f"path={path},size=16M"], **{"disk.encrypt": False})
    assert etree.fromstring(result.xml.encode()).find("devices/disk/encryption") is None
    assert "encrypted-disk: disks not encrypted (disk.encrypt = no, option)" in result.ctx.notes
    assert [o for o, _ in host_steps(xenv.plan(result, tmp_path))] == ["storage-volume", "storage-volume"]


def test_encrypt_no_on_a_disk_is_the_users_choice_for_every_disk(xenv, tmp_path):
    """encrypt=no given on --disk is not "not given": no default encryption then (a --disk
    encrypt=yes likewise leaves the other disks to the user)."""
    plain, other = xenv.root / "secxml-plain.qcow2", xenv.root / "secxml-other.qcow2"
    result = secure_vm(xenv, [f"path={plain},size=16M,encrypt=no", f"path={other},size=16M"])
    assert [d.get("encrypt") for d in result.settings.disks] == [False, None]
    assert etree.fromstring(result.xml.encode()).find("devices/disk/encryption") is None
    assert not [n for n in result.ctx.notes if "LUKS-encrypted" in n]
    assert [o for o, _ in host_steps(xenv.plan(result, tmp_path))] == ["storage-volume"] * 3


def test_computation_with_secure_vm_keeps_its_raw_disk_with_a_note(xenv):
    result = secure_vm(xenv, [], scenarios=("computation", "secure-vm"))
    assert result.settings.disks[0].format == "raw" and not result.settings.disks[0].get("encrypt")
    assert ("encrypted-disk: disk 1 not encrypted: it is raw (scenario computation), and LUKS lives inside "
            "qcow2 (--disk format=qcow2 encrypts it)") in result.ctx.notes


def test_raw_and_existing_disks_are_left_as_they_are(xenv, tmp_path):
    existing = xenv.root / "secxml-there.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(existing), "16M"], check=True)
    raw = xenv.root / "secxml-raw.raw"
    result = secure_vm(xenv, [f"path={existing}", f"path={raw},size=16M,format=raw",
                              f"path={xenv.root / 'secxml-new.qcow2'},size=16M"])
    assert [d.get("encrypt") for d in result.settings.disks] == [None, None, True]
    notes = [n for n in result.ctx.notes if n.startswith("encrypted-disk:")]
    assert notes == [
        f"encrypted-disk: disk 1 not encrypted: {existing} exists unencrypted and is used as it is",
        "encrypted-disk: disk 2 not encrypted: it is raw, and LUKS lives inside qcow2 "
        "(--disk format=qcow2 encrypts it)",
        "encrypted-disk: disk 3 LUKS-encrypted; key: a random key vscen generates, kept only in libvirt's "
        "private secret store (--no-encrypt-disk leaves it out)"]


def test_the_embedded_test_driver_keeps_no_secrets_so_a_note_and_no_encryption(tmp_path):
    result = render(Request(scenarios=["secure-vm"], connect="test:///default", options={"name": "secxml-t"}),
                    keep_connection=False)
    assert etree.fromstring(result.xml.encode()).find("devices/disk/encryption") is None
    assert ("encrypted-disk: test:///default keeps no libvirt secrets (the embedded test driver has no secret "
            "store): the disk is not encrypted; on a qemu:// connection it is LUKS-encrypted with a key kept in "
            "libvirt's secret store (--no-encrypt-disk leaves it out)") in result.ctx.notes
    # the README's first command, on the embedded driver: exit 0
    proc = subprocess.run([sys.executable, "-m", "vscen.cli", "run", "secure-vm", "--connect", "test:///default",
                           "--name", "secxml-readme", "--output", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "encrypted-disk: test:///default keeps no libvirt secrets" in proc.stdout + proc.stderr
