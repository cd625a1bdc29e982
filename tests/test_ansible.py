"""The Ansible collection (ansible/vscen, vscen.kvm), for real: built and installed with
ansible-galaxy into a temporary collections path, its example fleet playbook run with
ansible-playbook against localhost (connection local) on qemu:///system: three TCG guests
made, a second run changes nothing, check mode shows a new guest's plan as a diff without
making it, state=absent removes everything and libvirt shows nothing left.

The guest tests are skipped where no libvirt daemon runs (a failure in CI); the others need
only ansible-core (the ``test`` extra) and libvirt's embedded test driver.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, host_files, system_or_skip

BIN = Path(sys.executable).parent
COLLECTION = ROOT / "ansible" / "vscen"
EXAMPLES = COLLECTION / "examples"
MODULES = COLLECTION / "plugins" / "modules"
#: the lines of the default callback for one item of a loop: status and item label
ITEM = re.compile(r"^(ok|changed|skipping|failed|fatal): \[localhost\].*\(item=([^)]+)\)", re.M)
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@pytest.fixture(scope="module")
def ansible(tmp_path_factory):
    """The collection built and installed into a temporary collections path; a function that
    runs ansible-playbook with it (Ansible's home and temporary files in that directory too)."""
    tmp = tmp_path_factory.mktemp("ansible")
    galaxy = BIN / "ansible-galaxy"
    assert galaxy.exists(), "ansible-core is missing: pip install -e '.[test]'"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(tmp / "collections"), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_HOME=str(tmp / "home"), ANSIBLE_LOCAL_TEMP=str(tmp / "local-tmp"),
        ANSIBLE_REMOTE_TEMP=str(tmp / "remote-tmp"), ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_DEPRECATION_WARNINGS="0", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    built = subprocess.run([galaxy, "collection", "build", COLLECTION, "--output-path", tmp],
                           capture_output=True, text=True, env=env, cwd=tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    tarball = tmp / "vscen-kvm-0.1.0.tar.gz"
    installed = subprocess.run([galaxy, "collection", "install", tarball, "-p", tmp / "collections"],
                               capture_output=True, text=True, env=env, cwd=tmp)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    def playbook(path, *args, extra: dict | None = None):
        cmd = [BIN / "ansible-playbook", "-i", "localhost,", "-c", "local", path,
               "-e", f"ansible_python_interpreter={sys.executable}"]
        if extra is not None:
            vars_file = tmp / f"vars-{uuid.uuid4().hex[:8]}.json"
            vars_file.write_text(json.dumps(extra))
            cmd += ["-e", f"@{vars_file}"]
        done = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
        return done

    playbook.tmp, playbook.tarball, playbook.env = tmp, tarball, env
    return playbook


def recap(done) -> dict[str, int]:
    m = RECAP.search(done.stdout)
    assert m, done.stdout + done.stderr
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()), strict=True))


def items(done) -> dict[str, str]:
    """Each guest of the guest task -> ok / changed / failed (the default callback's lines)."""
    return {name: status for status, name in ITEM.findall(done.stdout)}


# -- the collection itself ------------------------------------------------------------------------

def test_collection_builds_installs_and_documents_every_option(ansible):
    with tarfile.open(ansible.tarball) as tar:
        names = set(tar.getnames())
    assert {"MANIFEST.json", "FILES.json", "meta/runtime.yml", "plugins/modules/vscen_guest.py",
            "plugins/modules/vscen_host_facts.py", "plugins/module_utils/vscen_cli.py",
            "examples/fleet.yml", "examples/inventory.yml"} <= names
    installed = ansible.tmp / "collections" / "ansible_collections" / "vscen" / "kvm"
    assert (installed / "plugins" / "modules" / "vscen_guest.py").is_file()
    for module in ("vscen_guest", "vscen_host_facts"):
        done = subprocess.run([BIN / "ansible-doc", "--json", f"vscen.kvm.{module}"], capture_output=True,
                              text=True, env=ansible.env, cwd=ansible.tmp)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)[f"vscen.kvm.{module}"]
        assert set(doc["doc"]["options"]) == _argument_spec(MODULES / f"{module}.py"), module
        yaml.safe_load(doc["examples"])


def _argument_spec(path: Path) -> set[str]:
    """The option names of the module's AnsibleModule(argument_spec=dict(...))."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "argument_spec":
            return {kw.arg for kw in node.value.keywords}
    raise AssertionError(f"{path}: no argument_spec")


def test_example_inventory_gives_each_host_its_guests(ansible):
    done = subprocess.run([BIN / "ansible-inventory", "-i", EXAMPLES / "inventory.yml", "--list"],
                          capture_output=True, text=True, env=ansible.env, cwd=ansible.tmp)
    assert done.returncode == 0, done.stderr
    hostvars = json.loads(done.stdout)["_meta"]["hostvars"]
    assert set(hostvars) == {"kvm7", "kvm8"}
    assert [g["name"] for g in hostvars["kvm7"]["vscen_guests"]] == ["vault", "ci-runner"]
    assert hostvars["kvm8"]["vscen_settings"]["memory"] == "2GiB"  # group_vars
    syntax = ansible(EXAMPLES / "fleet.yml", "--syntax-check")
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr


# -- vscen_host_facts -----------------------------------------------------------------------------

FACTS_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - vscen.kvm.vscen_host_facts:
        uri: "{{ uri | default(omit) }}"
        host_facts: "{{ files | default(omit) }}"
    - ansible.builtin.copy:
        content: "{{ ansible_facts.vscen | to_json }}"
        dest: "{{ dest }}"
"""


def test_host_facts_of_a_recorded_host(ansible):
    """What an AMD SEV host offers, from recorded facts: no daemon needed."""
    play = ansible.tmp / "facts.yml"
    play.write_text(FACTS_PLAY)
    dest = ansible.tmp / "recorded-facts.json"
    files = [str(p) for p in host_files("amd-sev")]
    done = ansible(play, extra={"files": files, "dest": str(dest)})
    assert done.returncode == 0, done.stdout + done.stderr
    facts = json.loads(dest.read_text())
    expected = json.loads(subprocess.run([BIN / "vscen", "host", "--json"] + [f"--host-facts={f}" for f in files],
                                         capture_output=True, text=True, check=True).stdout)
    assert facts == expected
    assert facts["facts"]["launch-security.host"]["offered"] == ["sev-snp", "sev-es", "sev"]


def test_host_facts_of_qemu_system(ansible):
    system_or_skip().close()
    play = ansible.tmp / "facts.yml"
    play.write_text(FACTS_PLAY)
    dest = ansible.tmp / "system-facts.json"
    done = ansible(play, extra={"uri": "qemu:///system", "dest": str(dest)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert recap(done)["changed"] == 1  # the copy; the facts module changes nothing
    facts = json.loads(dest.read_text())
    direct = json.loads(subprocess.run([BIN / "vscen", "host", "--json", "--connect", "qemu:///system"],
                                       capture_output=True, text=True, check=True).stdout)
    assert set(facts) == set(direct)
    for key in ("connection", "local", "libvirt_version", "arch", "domain_type", "machine", "kvm", "firmware"):
        assert facts[key] == direct[key], key
    assert facts["connection"] == "qemu:///system"


# -- the example playbook on recorded hosts: no daemon needed ----------------------------------------

def test_example_refuses_a_confidential_guest_where_no_sev_is_offered(ansible, tmp_path):
    fleet = {"fleet_hosts": "localhost", "vscen_output": str(tmp_path / "out"),
             "vscen_recorded_facts": [str(p) for p in host_files("local-tcg")],
             "vscen_guests": [{"name": "ans-vault", "scenario": ["secure-vm"]}]}
    done = ansible(EXAMPLES / "fleet.yml", "--check", extra=fleet)
    assert done.returncode != 0 and items(done) == {"ans-vault": "failed"}
    assert "localhost offers no SEV, SEV-ES, SEV-SNP or TDX: move ans-vault to a host that does" in done.stdout
    assert not (tmp_path / "out").exists()


def test_check_mode_shows_the_plan_of_a_confidential_guest_on_a_recorded_sev_host(ansible, tmp_path):
    """Check mode with --diff: the domain XML vscen would write (with its launch security) and
    the steps of its plan, built from a recorded AMD SEV host; nothing written."""
    out = tmp_path / "out"
    fleet = {"fleet_hosts": "localhost", "vscen_output": str(out), "vscen_uri": "test:///default",
             "vscen_recorded_facts": [str(p) for p in host_files("amd-sev")],
             "vscen_settings": {"memory": "1GiB", "disk.size": "1G"},
             "vscen_guests": [{"name": "ans-vault", "scenario": "secure-vm", "state": "started"}]}
    done = ansible(EXAMPLES / "fleet.yml", "--check", "--diff", extra=fleet)
    assert done.returncode == 0, done.stdout + done.stderr
    assert items(done) == {"ans-vault": "changed"}
    assert f"+++ after: {out}/ans-vault/domain.xml" in done.stdout
    assert '+  <launchSecurity type="sev' in done.stdout
    assert "+define domain on test:///default" in done.stdout and "+start domain ans-vault" in done.stdout
    assert not out.exists()


def _module_utils():
    """The collection's module_utils, imported from its file (it needs no Ansible)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vscen_cli", COLLECTION / "plugins/module_utils/vscen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_become_a_vscen_config_file_and_xpath_sets():
    import tomllib

    cli = _module_utils()
    settings = {"memory": "4GiB", "vcpu": 2, "tune_host": True, "peers": ["qemu+ssh://a/system", 'b"\\c'],
                "disk.size": "40G", "disk": {"format": "raw"}, "cdrom": "/isos/a \u00e9\n\x7f.iso",
                "./devices/graphics/@type": "vnc", "skipped": None}
    values, sets = cli.split_settings(settings)
    assert sets == ["./devices/graphics/@type=vnc"]
    parsed = tomllib.loads(cli.to_toml(values))
    assert parsed == {"memory": "4GiB", "vcpu": 2, "tune_host": True, "peers": ["qemu+ssh://a/system", 'b"\\c'],
                      "disk": {"size": "40G", "format": "raw"}, "cdrom": "/isos/a \u00e9\n\x7f.iso"}
    for bad, message in [({"name": "x"}, "settings: 'name' is the module's option 'name'; give it there"),
                         ({"a b": 1}, "settings: 'a b' is not a vscen setting name"),
                         ({"./x/@y": True}, "settings: './x/@y' customises the XML and takes one string value"),
                         ({"peers": [["a"]]}, "settings: 'peers' must be a value or a list of values"),
                         ({"disk": 1, "disk.size": "1G"}, "settings: 'disk' and 'disk.size' both given")]:
        with pytest.raises(cli.SettingsError, match=re.escape(message)):
            cli.to_toml(cli.split_settings(bad)[0])


def test_vscen_errors_become_one_line():
    cli = _module_utils()
    assert cli.error_message("warning: x\nerror: memory: 'lots' is not a size\n") == "memory: 'lots' is not a size"
    assert cli.error_message("error: the run would replace what exists (2 problems):\n  - a\n  - b\nExtra\n") \
        == "the run would replace what exists (2 problems): a; b"
    assert cli.error_message("Usage: vscen run\n\u2502 No such option: --nope \u2502\n") == "No such option: --nope"


# -- vscen_guest: errors --------------------------------------------------------------------------

ERRORS_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - vscen.kvm.vscen_guest: {name: "{{ prefix }}x", scenario: computation, uri: "test:///default",
                              output: "{{ out }}", settings: {memory: lots}}
      register: not_a_size
      ignore_errors: true
    - vscen.kvm.vscen_guest: {name: "{{ prefix }}x", scenario: computation, uri: "test:///default",
                              output: "{{ out }}", settings: {memory: true}}
      register: wrong_type
      ignore_errors: true
    - vscen.kvm.vscen_guest: {name: "{{ prefix }}x", scenario: [computation, no-such-scenario],
                              uri: "test:///default", output: "{{ out }}"}
      register: unknown
      ignore_errors: true
    - vscen.kvm.vscen_guest: {name: "{{ prefix }}x", scenario: computation, output: "{{ out }}",
                              settings: {output: /elsewhere}}
      register: module_option
      ignore_errors: true
    - vscen.kvm.vscen_guest: {name: "{{ prefix }}x", scenario: computation, vscen_path: /nonexistent/vscen}
      register: no_vscen
      ignore_errors: true
    - vscen.kvm.vscen_guest: {name: "{{ prefix }}x", state: absent, output: "{{ out }}"}
      register: nothing_there
    - ansible.builtin.copy:
        content: "{{ [not_a_size, wrong_type, unknown, module_option, no_vscen, nothing_there] | to_json }}"
        dest: "{{ dest }}"
"""


def test_guest_errors_are_vscen_one_line_messages(ansible):
    play = ansible.tmp / "errors.yml"
    play.write_text(ERRORS_PLAY)
    out, dest = ansible.tmp / "errors-out", ansible.tmp / "errors.json"
    done = ansible(play, extra={"prefix": f"ans-{uuid.uuid4().hex[:6]}-", "out": str(out), "dest": str(dest)})
    assert done.returncode == 0, done.stdout + done.stderr
    not_a_size, wrong_type, unknown, module_option, no_vscen, nothing_there = json.loads(dest.read_text())
    assert not_a_size["failed"] and not_a_size["msg"].startswith("memory: 'lots' is not a size; give a number")
    # vscen names the module's private config file; the task says what the user wrote
    assert wrong_type["msg"] == "memory: True in the task's settings must be a string or a whole number"
    assert "vscen-settings.toml" not in json.dumps([not_a_size["msg"], wrong_type["msg"]])
    assert unknown["failed"] and "no-such-scenario" in unknown["msg"] and "\n" not in unknown["msg"]
    assert module_option["msg"] == "settings: 'output' is the module's option 'output'; give it there"
    assert no_vscen["msg"] == "vscen_path: '/nonexistent/vscen' is not an executable file"
    assert nothing_there["changed"] is False and not nothing_there.get("failed")
    assert not out.exists()  # nothing was made


# -- vscen_guest on qemu:///system: the example fleet playbook --------------------------------------

def _fleet(prefix: str, out: Path, images: Path) -> dict:
    """The example playbook's variables for three small TCG guests on localhost: one started on
    an isolated network vscen defines, one desktop, one with a 1 MiB disk in its own pool."""
    return {
        "fleet_hosts": "localhost", "vscen_uri": "qemu:///system", "vscen_output": str(out),
        "vscen_settings": {"memory": "64MiB", "vcpu": 1, "virt_type": "qemu", "network": "none",
                           "graphics": "none"},
        "vscen_guests": [
            {"name": f"{prefix}calc", "scenario": "computation", "state": "started", "disks": ["none"],
             "settings": {"network": f"network={prefix}net"}},
            {"name": f"{prefix}desk", "scenario": ["desktop"], "features": ["-audio"], "disks": ["none"],
             "settings": {"graphics": "vnc", "./devices/graphics/@autoport": "yes"}},
            {"name": f"{prefix}test", "scenario": "os-testing",
             "disks": [f"path={images}/{prefix}test.qcow2,size=1MiB,format=qcow2"]},
        ],
    }


def _leftovers(conn, prefix: str, images: Path) -> list[str]:
    """Whatever carries *prefix* on the daemon (domains, networks, volumes) or lives in *images*
    (a pool over it, files in it), and vscen's files of such guests."""
    import libvirt
    from lxml import etree

    found = [f"domain {d.name()}" for d in conn.listAllDomains() if d.name().startswith(prefix)]
    found += [f"network {n.name()}" for n in conn.listAllNetworks() if n.name().startswith(prefix)]
    for pool in conn.listAllStoragePools():
        try:
            path = etree.fromstring(pool.XMLDesc(0).encode()).findtext("target/path") or ""
            # libvirt's own view, not refreshed: other tests' pools may be busy (or gone) meanwhile
            volumes = pool.listAllVolumes() if pool.isActive() else []
        except libvirt.libvirtError:
            continue
        if Path(path) == images:
            found.append(f"pool {pool.name()} on {path}")
        found += [f"volume {v.name()} in {pool.name()}" for v in volumes if v.name().startswith(prefix)]
    found += [f"file {p}" for p in images.iterdir()] if images.exists() else []
    for directory in ("/etc/libvirt/qemu", "/var/lib/libvirt/qemu/nvram", "/etc/libvirt/qemu/networks"):
        if os.access(directory, os.R_OK):
            found += [f"file {directory}/{n}" for n in os.listdir(directory) if n.startswith(prefix)]
    return found


def _cleanup(conn, prefix: str, out: Path, images: Path) -> None:
    """After a failed test: vscen destroys its guests, then whatever libvirt still has goes."""
    import libvirt

    for journal in out.glob(f"{prefix}*/journal.json"):
        subprocess.run([BIN / "vscen", "destroy", "--output", out, journal.parent.name], capture_output=True)
    for dom in conn.listAllDomains():
        if dom.name().startswith(prefix):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    for net in conn.listAllNetworks():
        if net.name().startswith(prefix):
            if net.isActive():
                net.destroy()
            net.undefine()
    for line in _leftovers(conn, prefix, images):
        if line.startswith("pool "):
            pool = conn.storagePoolLookupByName(line.split()[1])
            for vol in pool.listAllVolumes() if pool.isActive() else ():
                vol.delete(0)
            if pool.isActive():
                pool.destroy()
            pool.undefine()


def test_fleet_playbook_on_qemu_system(ansible, tmp_path):
    conn = system_or_skip()
    prefix = f"ans-{uuid.uuid4().hex[:6]}-"
    out, images = tmp_path / "vscen", tmp_path / "images"
    out.mkdir()
    images.mkdir()
    names = [f"{prefix}calc", f"{prefix}desk", f"{prefix}test"]
    fleet = _fleet(prefix, out, images)
    playbook = EXAMPLES / "fleet.yml"
    try:
        first = ansible(playbook, extra=fleet)
        assert first.returncode == 0, first.stdout + first.stderr
        assert items(first) == dict.fromkeys(names, "changed")
        calc, desk, test = (conn.lookupByName(n) for n in names)
        assert calc.isActive() and not desk.isActive() and not test.isActive()
        assert conn.networkLookupByName(f"{prefix}net").isActive()
        assert "<ip" not in conn.networkLookupByName(f"{prefix}net").XMLDesc(0)
        assert f"{images}/{prefix}test.qcow2" in test.XMLDesc(0)
        assert (images / f"{prefix}test.qcow2").exists()
        assert "autoport='yes'" in desk.XMLDesc(0) and "type='vnc'" in desk.XMLDesc(0)
        for name in names:
            assert (out / name / "domain.xml").is_file() and (out / name / "journal.json").is_file()
        status = subprocess.run([BIN / "vscen", "status", "--json", "--output", out], capture_output=True, text=True)
        assert status.returncode == 0 and status.stderr == ""  # no libvirt noise at exit either
        assert {r["name"]: r["state"] for r in json.loads(status.stdout)} == \
            {names[0]: "running", names[1]: "shut off", names[2]: "shut off"}

        second = ansible(playbook, extra=fleet)
        assert second.returncode == 0, second.stdout + second.stderr
        assert recap(second)["changed"] == 0, second.stdout
        assert items(second) == dict.fromkeys(names, "ok")

        # a new guest in check mode: its plan and XML as the diff, nothing made
        grown = json.loads(json.dumps(fleet))
        grown["vscen_guests"].append({"name": f"{prefix}new", "scenario": "computation", "disks": ["none"]})
        check = ansible(playbook, "--check", "--diff", extra=grown)
        assert check.returncode == 0, check.stdout + check.stderr
        assert items(check) == dict.fromkeys(names, "ok") | {f"{prefix}new": "changed"}
        assert f"+++ after: {out}/{prefix}new/domain.xml" in check.stdout
        assert f"+  <name>{prefix}new</name>" in check.stdout
        assert "+define domain on qemu:///system" in check.stdout
        assert not (out / f"{prefix}new").exists()
        assert f"{prefix}new" not in [d.name() for d in conn.listAllDomains()]

        # removal in check mode: reported, nothing removed
        would = ansible(playbook, "--check", extra=fleet | {"fleet_state": "absent"})
        assert would.returncode == 0 and items(would) == dict.fromkeys(names, "changed"), would.stdout
        assert all(conn.lookupByName(n) for n in names) and (out / f"{prefix}test" / "journal.json").exists()

        # the fleet removed, everything vscen made with it; a second removal changes nothing
        gone = ansible(playbook, "--diff", extra=fleet | {"fleet_state": "absent"})
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert items(gone) == dict.fromkeys(names, "changed")
        assert "-storage-volume: 2" in gone.stdout  # the --diff of the test guest: its pool and volume
        assert _leftovers(conn, prefix, images) == []
        assert list(out.iterdir()) == []
        again = ansible(playbook, extra=fleet | {"fleet_state": "absent"})
        assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout
    finally:
        try:
            _cleanup(conn, prefix, out, images)
        finally:
            conn.close()


def test_started_guest_is_started_again_and_a_changed_one_refused(ansible, tmp_path):
    """state=started starts a guest that matches but was stopped; a guest whose settings changed
    is refused with vscen's message unless force is given, which redefines it."""
    import libvirt

    conn = system_or_skip()
    prefix = f"ans-{uuid.uuid4().hex[:6]}-"
    out, images = tmp_path / "vscen", tmp_path / "images"
    out.mkdir()
    name = f"{prefix}one"
    guest = {"name": name, "scenario": "computation", "state": "started", "disks": ["none"]}
    fleet = _fleet(prefix, out, images) | {"vscen_guests": [guest]}
    playbook = EXAMPLES / "fleet.yml"
    try:
        assert items(ansible(playbook, extra=fleet)) == {name: "changed"}
        conn.lookupByName(name).destroy()  # stopped behind vscen's back
        assert items(ansible(playbook, extra=fleet)) == {name: "changed"}
        assert conn.lookupByName(name).isActive()

        bigger = json.loads(json.dumps(fleet))
        bigger["vscen_guests"][0]["settings"] = {"memory": "96MiB"}
        refused = ansible(playbook, extra=bigger)
        assert refused.returncode != 0 and items(refused) == {name: "failed"}
        assert f"domain: '{name}' exists on qemu:///system with another definition (use --force" in refused.stdout
        assert conn.lookupByName(name).maxMemory() == 64 * 1024

        bigger["vscen_guests"][0]["force"] = True
        forced = ansible(playbook, extra=bigger)
        assert items(forced) == {name: "changed"}, forced.stdout
        inactive = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert "<memory unit='KiB'>98304</memory>" in inactive  # the definition; it runs on as it was
        assert items(ansible(playbook, extra=bigger)) == {name: "ok"}

        gone = ansible(playbook, extra=fleet | {"fleet_state": "absent"})
        assert items(gone) == {name: "changed"}
        assert _leftovers(conn, prefix, images) == [] and list(out.iterdir()) == []
    finally:
        try:
            _cleanup(conn, prefix, out, images)
        finally:
            conn.close()
