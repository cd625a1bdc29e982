"""Host enablement for confidential guests (vscen_confidential_host): what an AMD SEV or Intel
TDX host lacks at boot, planned, written with --prepare-host, taken back byte for byte.

The files go to a fake root (``vscen.host_path``'s root pointed at a temporary tree), never
to this machine's /etc. ``update-grub`` there is a small shell program doing what GRUB's
grub-mkconfig does with these files (source /etc/default/grub, then each
/etc/default/grub.d/*.cfg) and writing the resulting command line where the test reads it:
the real update-grub would rewrite this machine's own boot configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import vscen_confidential_host as cch
from conftest import host_files
from vscen_confidential_host import boot

import vscen.host.local as hl
from vscen import host_identity
from vscen.errors import ExistsError, HostError, UsageError, VscenError
from vscen.pipeline import Request, render
from vscen.plan import make_plan

LOCAL = SimpleNamespace(uri="qemu:///system", is_local=True, is_test=False)
ALL_AMD = ["kvm_amd.sev", "kvm_amd.sev_es", "kvm_amd.sev_snp"]
# the lines of Debian's grub-mkconfig (grub2 2.06) that read the drop-ins
MKCONFIG = """#! /bin/sh
if test -f ${sysconfdir}/default/grub ; then
  . ${sysconfdir}/default/grub
fi
for x in ${sysconfdir}/default/grub.d/*.cfg ; do
  if [ -e "${x}" ]; then
    . "${x}"
  fi
done
"""


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A fake host tree: /etc/modprobe.d, GRUB with drop-ins and an update-grub."""
    root = tmp_path / "root"
    (root / "etc/modprobe.d").mkdir(parents=True)
    (root / "etc/default/grub.d").mkdir(parents=True)
    (root / "etc/default/grub").write_text('GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="console=ttyS0"\n')
    (root / "usr/sbin").mkdir(parents=True)
    (root / "boot/grub").mkdir(parents=True)
    (root / "proc").mkdir()
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro quiet\n")
    for param in ("sev", "sev_es", "sev_snp"):
        (root / "sys/module/kvm_amd/parameters").mkdir(parents=True, exist_ok=True)
        (root / f"sys/module/kvm_amd/parameters/{param}").write_text("N\n")
    mkconfig = root / "usr/sbin/grub-mkconfig"
    mkconfig.write_text(MKCONFIG)
    update = root / "usr/sbin/update-grub"
    update.write_text(f"#!/bin/sh\nset -e\nsysconfdir={root}/etc\n"
                      + MKCONFIG.split("\n", 1)[1]
                      + f'printf "%s\\n" "$GRUB_CMDLINE_LINUX" > {root}/boot/grub/cmdline\n')
    for program in (mkconfig, update):
        program.chmod(0o755)
    monkeypatch.setattr(hl, "SYSFS_ROOT", root)
    return root


def fact_of(**override) -> dict:
    probe = SimpleNamespace(local=True)
    fact = cch.read_fact(probe)
    fact.update(override)
    return json.loads(json.dumps(fact))  # as a snapshot keeps it


def ctx_for(results, fact, host="amd-sev", prepare=True, connection=LOCAL, force=False):
    result = results(scenarios=["secure-vm"], host_facts=host_files(host), options={"name": "cch-test"})
    ctx = result.ctx
    ctx.connection, ctx.force = connection, force
    ctx.settings = replace(ctx.settings, extras={**ctx.settings.extras, "prepare_host": prepare})
    ctx.host = replace(ctx.host, extra={**ctx.host.extra, cch.FACT: fact})
    return ctx


# -- what a host lacks ----------------------------------------------------------------------------


def test_wanted_on_amd_follows_the_kernel_and_modprobe():
    need = boot.wanted("amd", {"known": ALL_AMD, "modprobe": {}, "cmdline": "ro quiet"})
    assert need.options == {"kvm_amd": {"sev": "1", "sev_es": "1", "sev_snp": "1"}}
    assert need.cmdline == ("mem_encrypt=on",)
    # a kernel without SNP: no sev_snp option (the load would warn of an unknown parameter)
    need = boot.wanted("amd", {"known": ALL_AMD[:2], "modprobe": {}, "cmdline": "mem_encrypt=on"})
    assert need == boot.Need(options={"kvm_amd": {"sev": "1", "sev_es": "1"}}, cmdline=())
    # set persistently already (Y, 1, on): nothing to do
    persistent = {n: {"value": v, "file": "/etc/modprobe.d/kvm.conf"} for n, v in zip(ALL_AMD, ("1", "Y", "on"), strict=True)}
    assert boot.wanted("amd", {"known": ALL_AMD, "modprobe": persistent, "cmdline": "mem_encrypt=on"}) == \
        boot.Need(options={}, cmdline=())
    # set to 0 somewhere: wanted
    persistent["kvm_amd.sev_es"]["value"] = "0"
    assert boot.wanted("amd", {"known": ALL_AMD, "modprobe": persistent, "cmdline": "mem_encrypt=on"}).options == \
        {"kvm_amd": {"sev_es": "1"}}


def test_wanted_on_intel_only_where_the_kernel_knows_tdx():
    assert boot.wanted("intel", {"known": ["kvm_intel.tdx"], "cmdline": "ro"}).cmdline == ("kvm_intel.tdx=1",)
    assert boot.wanted("intel", {"known": ["kvm_intel.tdx"], "cmdline": "kvm_intel.tdx=1"}).cmdline == ()
    assert boot.wanted("intel", {"known": ["kvm_intel.nested"], "cmdline": "ro"}) == boot.Need({}, ())


def test_fact_read_from_the_host_tree(root):
    (root / "etc/modprobe.d/kvm.conf").write_text("# local\noptions kvm_amd sev=1 # on\noptions kvm nested=1\n")
    (root / "etc/modprobe.d/notes.txt").write_text("options kvm_amd sev_es=1\n")  # not a .conf: ignored
    fact = fact_of()
    assert fact["modprobe"] == {"kvm_amd.sev": {"value": "1", "file": "/etc/modprobe.d/kvm.conf"}}
    assert fact["known"] == ALL_AMD
    assert fact["cmdline"] == "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro quiet"
    assert fact["bootloader"] == {"kind": "grub", "dropins": True, "update": str(root / "usr/sbin/update-grub"),
                                  "grubby": ""}
    assert cch.read_fact(SimpleNamespace(local=False)) is None


# -- plan, apply, undo ----------------------------------------------------------------------------


def test_planned_written_and_taken_back(results, root):
    ctx = ctx_for(results, fact_of())
    steps = cch.plan(ctx)
    assert [s.description for s in steps] == [
        "write /etc/modprobe.d/vscen-confidential.conf: options kvm_amd sev=1 sev_es=1 sev_snp=1 "
        "(takes effect after reboot)",
        "write /etc/default/grub.d/vscen-confidential.cfg: kernel parameters mem_encrypt=on, then "
        "update-grub (takes effect after reboot)"]
    assert "confidential host: the changes take effect after a reboot of this host" in ctx.notes
    assert not (root / boot.MODPROBE).exists(), "planning wrote a file"
    records = [s.do() for s in steps]
    assert (root / boot.MODPROBE).read_text() == boot.HEADER + "options kvm_amd sev=1 sev_es=1 sev_snp=1\n"
    assert (root / "boot/grub/cmdline").read_text() == "console=ttyS0 mem_encrypt=on\n"
    assert records[0]["kind"] == "modprobe" and records[0]["previous"] is None
    assert records[0]["host"] == host_identity(LOCAL)
    # planned again with what is now on the host: the options are there (the command line only
    # changes at the reboot, and the drop-in vscen wrote is its own)
    again = cch.plan(ctx_for(results, fact_of()))
    assert [s.description.split(":")[0] for s in again] == ["write /etc/default/grub.d/vscen-confidential.cfg"]
    for record in reversed(records):
        cch.undo(LOCAL, record)
    assert not (root / boot.MODPROBE).exists() and not (root / boot.GRUB_DROPIN).exists()
    assert (root / "boot/grub/cmdline").read_text() == "console=ttyS0\n"  # regenerated without it


def test_someone_elses_file_is_refused_then_replaced_with_force_and_restored_byte_for_byte(results, root):
    theirs = root / boot.MODPROBE
    theirs.write_bytes(b"options kvm_amd sev=0\n# keep\xc3\xa9\n")
    before = os.stat(theirs)
    with pytest.raises(ExistsError, match="exists and was not written by vscen"):
        cch.plan(ctx_for(results, fact_of()))
    steps = cch.plan(ctx_for(results, fact_of(), force=True))
    record = steps[0].do()
    assert theirs.read_text().startswith(boot.HEADER)
    cch.undo(LOCAL, record)
    assert theirs.read_bytes() == b"options kvm_amd sev=0\n# keep\xc3\xa9\n"
    assert os.stat(theirs).st_ino == before.st_ino  # the very file, not a copy
    assert [p.name for p in theirs.parent.iterdir()] == [theirs.name]  # no backup left behind


def test_undo_leaves_a_file_changed_since_and_refuses_foreign_paths(results, root):
    record = cch.plan(ctx_for(results, fact_of()))[0].do()
    (root / boot.MODPROBE).write_text(boot.HEADER + "options kvm_amd sev=1\n")  # another run since
    cch.undo(LOCAL, record)
    assert (root / boot.MODPROBE).exists()
    for bad in ({**record, "path": str(root / "etc/passwd")}, {**record, "kind": "sysctl"},
                {**record, "path": str(root / "etc/modprobe.d/other.conf")}):
        with pytest.raises(VscenError):
            cch.undo(LOCAL, bad)


def test_update_grub_failing_puts_the_drop_in_back(results, root):
    (root / "usr/sbin/update-grub").write_text("#!/bin/sh\necho 'grub.cfg: No space left on device' >&2\nexit 1\n")
    steps = cch.plan(ctx_for(results, fact_of()))
    with pytest.raises(HostError, match="update-grub failed \\(exit 1\\): grub.cfg: No space left on device"):
        steps[1].do()
    assert not (root / boot.GRUB_DROPIN).exists()


def test_without_prepare_host_or_on_a_remote_host_only_notes(results, root):
    ctx = ctx_for(results, fact_of(), prepare=False)
    assert cch.plan(ctx) == []
    assert ("confidential host: would write /etc/modprobe.d/vscen-confidential.conf: options kvm_amd "
            "sev=1 sev_es=1 sev_snp=1 (takes effect after reboot) (pass --prepare-host to apply)") in ctx.notes
    remote = SimpleNamespace(uri="qemu+ssh://kvm7/system", is_local=False, is_test=False)
    ctx = ctx_for(results, fact_of(), connection=remote)
    assert cch.plan(ctx) == []
    assert any("is not this machine: do it there" in n for n in ctx.notes)
    assert not (root / boot.MODPROBE).exists()


def test_other_boot_loaders_get_the_command(results, root):
    (root / "etc/default/grub").unlink()
    (root / "etc/kernel").mkdir()
    (root / "etc/kernel/cmdline").write_text("root=/dev/vda1\n")
    ctx = ctx_for(results, fact_of())
    assert [s.description.split(":")[0] for s in cch.plan(ctx)] == ["write /etc/modprobe.d/vscen-confidential.conf"]
    assert ("confidential host: vscen cannot write this boot loader's configuration: add 'mem_encrypt=on' "
            "to /etc/kernel/cmdline and reinstall the kernels (kernel-install add-all), then reboot") in ctx.notes


def test_a_host_enabled_already_needs_nothing(results, root):
    (root / "etc/modprobe.d/kvm_amd.conf").write_text("options kvm_amd sev=1 sev_es=1 sev_snp=1\n")
    (root / "proc/cmdline").write_text("root=/dev/vda1 mem_encrypt=on\n")
    ctx = ctx_for(results, fact_of())
    assert cch.plan(ctx) == []
    assert ("confidential host: the kvm options and the kernel command line are set for confidential "
            "guests: unchanged") in ctx.notes


def test_recorded_host_lacking_enablement_gets_it_in_the_plan(results, tmp_path):
    """vscen run secure-vm on the recorded AMD SEV host, whose snapshot says what its boot lacks."""
    fact = {"modprobe": {}, "known": ALL_AMD, "cmdline": "BOOT_IMAGE=/vmlinuz ro",
            "bootloader": {"kind": "grub", "dropins": True, "update": "/usr/sbin/update-grub", "grubby": ""}}
    snapshot = tmp_path / "boot-facts.xml"
    snapshot.write_text(f"<hostFacts><facts><fact name='{cch.FACT}'>{json.dumps(fact)}</fact></facts></hostFacts>")
    result = results(scenarios=["secure-vm"], host_facts=host_files("amd-sev") + [snapshot],
                     options={"name": "cch-recorded"})
    assert "confidential-host" in [f.name for f in result.ctx.resolution.features]
    assert "ksm-off" in [f.name for f in result.ctx.resolution.features]
    plan = make_plan(result, tmp_path / "out")
    assert not [s for s in plan.steps if s.owner == "confidential-host"]  # a recorded host: nothing applied here
    notes = [n for n in result.ctx.notes if n.startswith("confidential host")]
    assert any("would write /etc/modprobe.d/vscen-confidential.conf: options kvm_amd sev=1 sev_es=1 "
               "sev_snp=1 (takes effect after reboot)" in n for n in notes), notes
    assert any("would write /etc/default/grub.d/vscen-confidential.cfg: kernel parameters mem_encrypt=on" in n
               for n in notes), notes


def test_the_drop_in_is_what_grub_sources(tmp_path):
    """The drop-in appends to whatever /etc/default/grub set, in sh as grub-mkconfig reads it."""
    grub = tmp_path / "grub"
    grub.write_text('GRUB_CMDLINE_LINUX="quiet splash"\n')
    dropin = tmp_path / "vscen-confidential.cfg"
    dropin.write_text(boot.grub_text(("mem_encrypt=on",)))
    out = subprocess.run(["sh", "-c", f'. {grub}; . {dropin}; printf %s "$GRUB_CMDLINE_LINUX"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "quiet splash mem_encrypt=on"


def test_hostile_records_are_refused_before_anything(root):
    with pytest.raises(UsageError):
        cch.undo(LOCAL, {"kind": "modprobe"})
    with pytest.raises(VscenError):
        cch.undo(LOCAL, {"kind": "modprobe", "path": "/etc/modprobe.d/vscen-confidential.conf", "identity": {},
                         "backup": "/etc/shadow", "previous": None, "host": host_identity(LOCAL)})
    assert Path("/etc/shadow").exists()


# -- a host that offers no launch security yet: --prepare-host prepares it alone ----------------


def test_a_host_without_launch_security_is_prepared_alone_and_destroy_takes_it_back(root, tmp_path):
    """qemu:///system here offers no SEV or TDX, so the confidential-computing check fails;
    with --prepare-host on this machine (its boot side a fake tree) no guest is built: the plan
    is the host's preparation, journalled under the guest's name, and rollback (vscen destroy)
    takes it back."""
    from conftest import system_or_skip

    from vscen.apply import apply, rollback
    from vscen.journal import Journal

    system_or_skip().close()
    (root / "sys/module/kvm_intel/parameters").mkdir(parents=True)
    (root / "sys/module/kvm_intel/parameters/tdx").write_text("N\n")  # an Intel CI machine gets TDX
    request = Request(scenarios=[], add=["launch-security", "confidential-host"], connect="qemu:///system",
                      options={"name": "cch-prep", "network": "none", "virt_type": "qemu", "prepare_host": True})
    result = render(request)
    try:
        assert result.prepare_only == ("confidential-host",) and result.xml == ""
        assert [c.validator for c in result.checks if c.status == "fail"][0] == "confidential-computing"
        assert ("no guest is built: confidential-computing fails until the host is prepared (confidential-host) "
                "and rebooted; then run the same command again") in result.ctx.notes
        plan = make_plan(result, tmp_path / "out")
        owners = [s.owner for s in plan.steps[1:]]
        assert owners and set(owners) == {"confidential-host"}, [s.description for s in plan.steps]
        assert plan.xml_path is None
        journal = Journal.open(plan.out_dir, "cch-prep", result.ctx.uri)
        apply(plan, journal, result.connection, result.ctx.registry)
        written = [p for p in (root / boot.MODPROBE, root / boot.GRUB_DROPIN) if p.exists()]
        assert written and all(p.read_text().startswith(boot.HEADER) for p in written)
        assert rollback(list(journal.entries), journal, result.connection, result.ctx.registry) == []
        assert not [p for p in written if p.exists()]
    finally:
        result.connection.close()

    # without --prepare-host the same run is refused, with the fix naming it
    with pytest.raises(HostError, match="confidential-computing.*--prepare-host"):
        render(replace(request, options={**request.options, "prepare_host": False}))
