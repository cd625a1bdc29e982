"""Plugin cloud-init on qemu:///system: guests that read the seed vscen wrote.

A tiny Linux, the host's cloud kernel (Debian package linux-image-cloud-amd64) with an
initramfs the test builds (busybox-static, the kernel's CD-ROM modules), boots under TCG:
first one whose init finds the CD-ROM labelled ``cidata`` and prints its files on the serial
console (a file the test reads); then one that runs cloud-init itself (from Debian's
packages, which ``scripts/setup.sh --daemons`` downloads, with this machine's Python), whose
NoCloud datasource finds the seed and applies the user-data: host name, a file, a command.
Everything is named ``cloud-...`` and removed, the guest's pool and directory included.
"""

from __future__ import annotations

import glob
import gzip
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import qemu_system
from lxml import etree
from test_cloud_init import IMAGES, SYSTEM_URI, inputs, isoinfo, plan_apply, qemu_img_info, rollback, sha256, tag

__all__ = ["inputs"]  # a fixture of test_cloud_init, used here too

#: the modules a cloud kernel needs to read a CD-ROM on virtio-scsi (built-in ones are skipped)
GUEST_MODULES = ("virtio_pci", "virtio_scsi", "sr_mod", "isofs")
INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod /modules/$m 2>/dev/null; done
i=0; while [ ! -b /dev/sr0 ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
for d in /dev/sr*; do
  label=$(dd if=$d bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')
  [ "$label" = cidata ] && echo "CLOUD-TEST label cidata: $d" && mount -t iso9660 -o ro $d /mnt
done && echo "CLOUD-TEST files: $(ls /mnt | tr '\\n' ' ')"
echo "CLOUD-TEST user-data begin"; cat /mnt/user-data; echo "CLOUD-TEST user-data end"
echo "CLOUD-TEST meta-data: $(cat /mnt/meta-data | tr '\\n' ' ')"
echo CLOUD-TEST done
poweroff -f
"""


def guest_kernel():
    """(kernel, modules directory) of a Linux kernel on this machine, the cloud flavour first."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"), key=lambda k: ("cloud" not in k, k))
    for kernel in kernels:
        version = kernel.split("vmlinuz-", 1)[1]
        if os.path.isfile(f"/lib/modules/{version}/modules.dep"):
            return kernel, Path(f"/lib/modules/{version}")
    return None


def static(path: str) -> bool:
    """Whether the executable at *path* is statically linked (no ELF interpreter named)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError:
        return False
    return head[:4] == b"\x7fELF" and b"/ld-linux" not in head and b"ld-musl" not in head


def newc(entries) -> bytes:
    """A cpio archive in the kernel's newc format from (name, mode, data) entries."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        out += b"070701" + "".join(f"{f:08x}" for f in fields).encode() + name.encode() + b"\0"
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def module_entries(moddir: Path) -> list:
    """The kernel modules of GUEST_MODULES with their dependencies, and the order to load them."""
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[os.path.basename(mod).split(".ko")[0].replace("-", "_")] = (mod, rest.split())
    order: list[str] = []

    def need(path: str):
        name = os.path.basename(path).split(".ko")[0].replace("-", "_")
        for dep in deps[name][1]:
            need(dep)
        if path not in order:
            order.append(path)

    for name in GUEST_MODULES:
        if name in deps:  # else built in
            need(deps[name][0])
    entries = [("modules", 0o040755, b"")]
    for path in order:
        data = (moddir / path).read_bytes()
        if path.endswith(".xz"):
            import lzma
            data = lzma.decompress(data)
        entries.append((f"modules/{os.path.basename(path).split('.ko')[0]}.ko", 0o100644, data))
    listing = "".join(f"{os.path.basename(p).split('.ko')[0]}.ko\n" for p in order)
    entries.append(("modules.list", 0o100644, listing.encode()))
    return entries


def tree_entries(root: Path) -> list:
    """A directory tree as cpio entries (directories, files, symbolic links)."""
    entries = []
    for d, ds, fs in os.walk(root):
        for n in sorted(ds + fs):
            p = Path(d, n)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                entries.append((rel, 0o120777, os.readlink(p).encode()))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((rel, 0o040755, b""))
            elif stat.S_ISREG(st.st_mode):
                entries.append((rel, 0o100755 if st.st_mode & 0o111 else 0o100644, p.read_bytes()))
    return sorted(entries, key=lambda e: e[0])


def build_initramfs(moddir: Path, busybox: Path, init: str = INIT, tree: Path | None = None) -> bytes:
    entries = tree_entries(tree) if tree is not None else []
    entries += [("bin", 0o040755, b""), ("bin/busybox", 0o100755, busybox.read_bytes()), ("init", 0o100755, init.encode()),
                *module_entries(moddir)]
    return gzip.compress(newc(entries), compresslevel=1, mtime=0)


def direct_boot_plugin(kernel: str, initrd: str, log: str):
    """An inline plugin: boot *kernel* with *initrd*, the serial console into *log*."""
    import vscen
    from vscen.model import Feature

    def apply(domain, ctx):
        os_el = domain.ensure("os")
        os_el.ensure("kernel").text(kernel)
        os_el.ensure("initrd").text(initrd)
        os_el.ensure("cmdline").text("console=ttyS0 panic=-1 loglevel=4")
        serial = domain.ensure("devices").add("serial", type="file")
        serial.add("source", path=log)
        serial.add("target", port="0")

    class Plugin:
        @vscen.hookimpl
        def vscen_register_features(self, register):
            register(Feature(name="cloud-test-boot", summary="direct kernel boot, serial to a file", apply=apply))

    return ("cloud-test-boot", Plugin())


def require(missing: str | None) -> None:
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have it (scripts/setup.sh --daemons provides it): {missing}")
        pytest.skip(f"{missing}, as scripts/setup.sh --daemons does")


def kernel_and_busybox():
    found = guest_kernel()
    busybox = next((b for b in (shutil.which("busybox"), "/bin/busybox") if b and static(b)), None)
    require("no Linux kernel with modules in /boot (apt-get install linux-image-cloud-amd64)" if found is None else
            "no static busybox (apt-get install busybox-static)" if busybox is None else None)
    return found[0], found[1], busybox


def console(log: Path, marker: str, seconds: float) -> list[str]:
    """The serial console's lines once *marker* is printed (or *seconds* are over)."""
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline and marker not in text:
        time.sleep(2)
        text = log.read_text(errors="replace") if log.exists() else ""
    assert marker in text, text[-3000:]
    return text.replace("\r", "").splitlines()


@pytest.fixture
def system_dir():
    conn = qemu_system()
    if conn is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run libvirtd (scripts/setup.sh --daemons), but qemu:///system is unreachable")
        pytest.skip("no libvirt daemon at qemu:///system")
    t = tag()
    root = IMAGES / f"cloud-test-{t}"
    root.mkdir(parents=True)
    try:
        yield conn, t, root
    finally:
        import libvirt

        for d in conn.listAllDomains(0):
            if t in d.name():
                if d.isActive():
                    d.destroy()
                d.undefine()
        for p in conn.listAllStoragePools(0):
            target = etree.fromstring(p.XMLDesc(0).encode()).findtext("target/path") or ""
            if target.startswith(str(root)):
                try:
                    if p.isActive():
                        p.destroy()
                    p.undefine()
                except libvirt.libvirtError:
                    pass
        shutil.rmtree(root, ignore_errors=True)
        conn.close()


def test_a_guest_on_qemu_system_reads_its_seed_and_the_base_stays_untouched(system_dir, inputs, tmp_path):
    conn, t, root = system_dir
    kernel, moddir, busybox = kernel_and_busybox()
    initrd = root / "initrd.gz"
    initrd.write_bytes(build_initramfs(moddir, Path(busybox)))
    log = root / "console.log"
    image = root / "debian-12-genericcloud-amd64.qcow2"
    shutil.copy(inputs["image"], image)
    digest = sha256(image)
    name = f"cloud-{t}"
    items = [f"user-data={inputs['user']}", "hostname=seen-by-guest"]
    from vscen.pipeline import Request
    from vscen.pipeline import render as run

    def request():
        return Request(scenarios=[], add=["storage", "cloud-test-boot"], connect=SYSTEM_URI,
                       plugins=(direct_boot_plugin(kernel, str(initrd), str(log)),),
                       disks=[f"path={root}/disks/{name}.qcow2,size=96M"],
                       options={"name": name, "network": "none", "virt_type": "qemu", "memory": "256MiB", "vcpu": 1,
                                "image": str(image), "cloud_init": items})

    result = run(request())
    seed = root / "disks" / f"{name}-cidata.iso"
    plan, journal = plan_apply(result, tmp_path, start=True)
    try:
        st = os.stat(seed)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
        assert "Volume id: cidata" in isoinfo("-d", "-i", str(seed)).splitlines()
        assert isoinfo("-J", "-x", "/user-data", "-i", str(seed)) == inputs["user"].read_text()
        info = qemu_img_info(root / "disks" / f"{name}.qcow2")
        assert info["backing-filename"] == str(image) and info["backing-filename-format"] == "qcow2"
        assert info["virtual-size"] == 96 * 1024**2  # the disk's size, not the image's 64M
        live = etree.fromstring(conn.lookupByName(name).XMLDesc(0).encode())
        store = live.find("devices/disk[@device='disk']/backingStore")
        assert store.find("source").get("file") == str(image) and store.find("format").get("type") == "qcow2"
        lines = console(log, "CLOUD-TEST done", 240)
        assert "CLOUD-TEST label cidata: /dev/sr0" in lines  # the CD-ROM, found by its volume id
        assert "CLOUD-TEST files: meta-data user-data " in lines
        body = lines[lines.index("CLOUD-TEST user-data begin") + 1:lines.index("CLOUD-TEST user-data end")]
        assert "\n".join(body) + "\n" == inputs["user"].read_text()
        assert ('CLOUD-TEST meta-data: instance-id: "vscen-' + name + '" local-hostname: "seen-by-guest" ') in lines
        # the same command again changes nothing: the seed holds this seed already
        again = run(request())
        from vscen.plan import make_plan

        assert [s for s in make_plan(again, tmp_path).steps if s.owner != "vscen"] == []
        assert f"cloud-init seed {seed} holds this seed already: unchanged" in again.ctx.notes
        from vscen_cloud_init.seed import _same_seed
        from vscen_cloud_init.spec import parse_item, seed_files

        files = seed_files((parse_item(items[0]), parse_item(items[1])), name)
        vol = conn.storageVolLookupByPath(str(seed))
        assert _same_seed(conn, vol, None, files)  # as for a remote host: downloaded through libvirt
        assert not _same_seed(conn, vol, None, {**files, "meta-data": b"instance-id: other\n"})
        again.connection.close()
    finally:
        problems = rollback(result, journal)
        result.connection.close()
    assert problems == []
    assert not seed.exists() and not (root / "disks" / f"{name}.qcow2").exists()
    assert sha256(image) == digest  # the base was only read
    assert name not in [d.name() for d in conn.listAllDomains(0)]


# -- cloud-init itself ---------------------------------------------------------------------------

#: Debian's cloud-init and the Python packages it needs, as scripts/setup.sh --daemons downloads them
DEBS = Path("/var/cache/vscen-tests/cloud-init")
#: only what a guest without users, locales or packages can do: no module may fail
CLOUD_CFG = """datasource_list: [NoCloud, None]
cloud_init_modules: [write_files, set_hostname, update_hostname]
cloud_config_modules: [runcmd]
cloud_final_modules: [scripts_user, final_message]
"""
USER_DATA = """#cloud-config
hostname: cloud-applied
write_files:
  - path: /run/vscen-cloud-test
    content: "written by cloud-init from the vscen seed"
runcmd:
  - [sh, -c, "echo CLOUD-TEST runcmd ran > /dev/ttyS0"]
"""
CLOUD_INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/sbin /usr/bin /tmp /run /var/lib /var/log /root
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod /modules/$m 2>/dev/null; done
i=0; while [ ! -b /dev/sr0 ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
hostname before
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
for stage in "init --local" "init" "modules --mode config" "modules --mode final"; do
  cloud-init $stage >/dev/null 2>&1; echo "CLOUD-TEST cloud-init $stage: $?"
done
echo "CLOUD-TEST hostname: $(hostname)"
echo "CLOUD-TEST written: $(cat /run/vscen-cloud-test)"
echo "CLOUD-TEST result: $(tr -d '\\n' < /run/cloud-init/result.json)"
echo CLOUD-TEST done
poweroff -f
"""


def cloud_init_tree(dest: Path) -> Path:
    """A root file system for cloud-init: Debian's packages unpacked, with this machine's
    Python (its version is the one Debian's cloud-init is built for), blkid and their libraries."""
    debs = sorted(DEBS.glob("*.deb"))
    python = os.path.realpath("/usr/bin/python3")
    stdlib = Path("/usr/lib") / os.path.basename(python)
    require(None if any(d.name.startswith("cloud-init_") for d in debs) else
            f"no cloud-init packages in {DEBS} (scripts/setup.sh --daemons downloads them with apt-get download)")
    require(None if shutil.which("dpkg-deb") and stdlib.is_dir() and shutil.which("blkid") else
            "no dpkg-deb, blkid or Debian Python to build the guest's root file system")
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)

    def copy(src: str):
        target = dest / src.lstrip("/")
        if target.exists() or target.is_symlink():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), target)
            copy(os.path.join(os.path.dirname(src), os.readlink(src)))
        elif os.path.isfile(src):
            shutil.copy2(src, target)

    def with_libraries(binary: str):
        copy(binary)
        out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        for word in out.split():
            if word.startswith("/"):
                copy(word)

    with_libraries(python)
    (dest / "usr/bin/python3").unlink(missing_ok=True)
    (dest / "usr/bin/python3").symlink_to(os.path.basename(python))
    skip = {"test", "idlelib", "tkinter", "ensurepip", "lib2to3", "turtledemo", "pydoc_data"}
    for d, ds, fs in os.walk(stdlib):
        ds[:] = [x for x in ds if x not in skip and not x.startswith("config-")]
        for f in fs:
            copy(os.path.join(d, f))
    for so in [*glob.glob(f"{stdlib}/lib-dynload/*.so"), *glob.glob(f"{dest}/usr/lib/python3/dist-packages/**/*.so",
                                                                     recursive=True)]:
        with_libraries(so)
    with_libraries(shutil.which("blkid"))
    copy("/etc/os-release")
    copy("/usr/lib/os-release")
    (dest / "etc/cloud/cloud.cfg.d").mkdir(parents=True, exist_ok=True)
    (dest / "etc/cloud/cloud.cfg.d/90-vscen-test.cfg").write_text(CLOUD_CFG)
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc/group").write_text("root:x:0:\n")
    return dest


def test_cloud_init_in_a_guest_applies_the_user_data_of_the_seed(system_dir, tmp_path):
    import json

    from vscen.pipeline import Request
    from vscen.pipeline import render as run

    conn, t, root = system_dir
    kernel, moddir, busybox = kernel_and_busybox()
    tree = cloud_init_tree(tmp_path / "rootfs")
    initrd = root / "initrd.gz"
    initrd.write_bytes(build_initramfs(moddir, Path(busybox), init=CLOUD_INIT, tree=tree))
    user = tmp_path / "user-data"
    user.write_text(USER_DATA)
    log = root / "console.log"
    name = f"cloud-{t}"
    result = run(Request(scenarios=[], add=["storage", "cloud-test-boot"], connect=SYSTEM_URI,
                         plugins=(direct_boot_plugin(kernel, str(initrd), str(log)),),
                         disks=[f"path={root}/disks/{name}.qcow2,size=16M"],
                         options={"name": name, "network": "none", "virt_type": "qemu", "memory": "1GiB", "vcpu": 1,
                                  "cloud_init": [f"user-data={user}"]}))
    plan, journal = plan_apply(result, tmp_path, start=True)
    try:
        lines = console(log, "CLOUD-TEST done", 480)
    finally:
        problems = rollback(result, journal)
        result.connection.close()
    assert problems == []
    for stage in ("init --local", "init", "modules --mode config", "modules --mode final"):
        assert f"CLOUD-TEST cloud-init {stage}: 0" in lines, lines
    assert "CLOUD-TEST runcmd ran" in lines
    assert "CLOUD-TEST hostname: cloud-applied" in lines
    assert "CLOUD-TEST written: written by cloud-init from the vscen seed" in lines
    found = json.loads(next(line for line in lines if line.startswith("CLOUD-TEST result: "))[19:])
    assert found["v1"]["datasource"].startswith("DataSourceNoCloud [seed=/dev/sr0]")
    assert found["v1"]["errors"] == []
