"""The journal is not a remote control, and concurrent runs lose nothing (issue 8, items 3-4).

Hostile journals (edited paths, ``..``, symlinks, wrong types, deep nesting, huge, a FIFO,
another owner or mode) give a one-line error naming the file and touch nothing; destroy of
2,000 entries costs one append per entry and one rewrite; a destroy killed half-way is
finished by the next; two ``vscen run`` of one guest at once keep both runs' records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vscen.apply import rollback
from vscen.cli import app
from vscen.errors import UsageError, VscenError
from vscen.journal import FILENAME, LOGNAME, GuestLock, Journal, lock_path
from vscen.model import HostAction


def cli(*args):
    """Run vscen in this process; exit code and output as ``main()`` makes them of an error."""
    from types import SimpleNamespace

    result = CliRunner().invoke(app, list(args))
    exc = result.exception
    if isinstance(exc, VscenError):
        return SimpleNamespace(exit_code=exc.exit_code, output=f"error: {exc}\n")
    if exc is not None and not isinstance(exc, SystemExit):
        return SimpleNamespace(exit_code=1, output=f"error: internal error: {type(exc).__name__}: {exc}\n")
    return result


def vscen(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "vscen.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def guest(tmp_path, entries, name="g", uri="test:///default") -> Path:
    """A guest's directory holding a journal of *entries* (mode 0600, dir 0700)."""
    home = tmp_path / "out" / name
    home.mkdir(parents=True, mode=0o700)
    path = home / FILENAME
    path.write_text(json.dumps({"name": name, "uri": uri, "entries": entries}))
    path.chmod(0o600)
    return home


def one_line_error(result, path_part: str, code: int = 2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert path_part in lines[0] and "internal error" not in lines[0] and "Traceback" not in result.output


# -- damaged and hostile journals ------------------------------------------------------------------

DAMAGED = {
    "not an object": "[1, 2]",
    "entries of the wrong type": '{"name": "g", "uri": "test:///default", "entries": "x"}',
    "no uri": '{"name": "g", "entries": []}',
    "an entry that is a number": '{"name": "g", "uri": "", "entries": [5]}',
    "a record that is a list": '{"name": "g", "uri": "", "entries": [{"owner": "vscen", "record": []}]}',
    "an owner that is a number": '{"name": "g", "uri": "", "entries": [{"owner": 1, "record": {}}]}',
    "deep nesting": "[" * 200_000 + "]" * 200_000,
    "a deep record": json.dumps({"name": "g", "uri": "", "entries": [
        {"owner": "vscen", "record": {"kind": "file", "x": json.loads("[" * 50 + "]" * 50)}}]}),
    "not JSON": "{nope",
    "a bad name": '{"name": "../etc", "uri": "", "entries": []}',
}


@pytest.mark.parametrize("text", DAMAGED.values(), ids=DAMAGED.keys())
def test_damaged_journals_are_a_one_line_error_for_status_and_destroy(tmp_path, text):
    home = guest(tmp_path, [])
    (home / FILENAME).write_text(text)
    for command in (("status", "g"), ("destroy", "g"), ("status",)):
        one_line_error(cli(*command, "--output", str(tmp_path / "out")), str(home / FILENAME))


def test_a_journal_that_is_not_utf8_huge_a_fifo_or_a_symlink_is_refused_without_hanging(tmp_path, monkeypatch):
    home = guest(tmp_path, [])
    path = home / FILENAME
    out = str(tmp_path / "out")
    path.write_bytes(b'{"name": "\xff"}')
    one_line_error(cli("destroy", "g", "--output", out), "not UTF-8")
    monkeypatch.setattr("vscen.journal.MAX_BYTES", 1000)
    path.write_text(json.dumps({"name": "g", "uri": "", "entries": [{"owner": "x" * 2000, "record": {}}]}))
    one_line_error(cli("status", "g", "--output", out), "more than a journal can be")
    path.unlink()
    os.mkfifo(path, 0o600)  # reading a FIFO would block for ever
    one_line_error(cli("status", "g", "--output", out), "not a regular file")
    path.unlink()
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps({"name": "g", "uri": "", "entries": []}))
    path.symlink_to(victim)
    one_line_error(cli("destroy", "g", "--output", out), "symbolic link")


def test_a_journal_of_another_owner_or_writable_by_others_is_refused(tmp_path):
    home = guest(tmp_path, [{"owner": "vscen", "record": {"kind": "dirs", "paths": []}}])
    path, out = home / FILENAME, str(tmp_path / "out")
    path.chmod(0o620)
    one_line_error(cli("destroy", "g", "--output", out), "can be written by others")
    path.chmod(0o600)
    os.chown(path, 12345, 12345)
    one_line_error(cli("destroy", "g", "--output", out), "owned by uid 12345")
    os.chown(path, os.geteuid(), os.getegid())
    home.chmod(0o777)
    one_line_error(cli("destroy", "g", "--output", out), "can be written by others")
    assert path.exists()


def edited(tmp_path, record, owner="vscen"):
    return guest(tmp_path, [{"owner": owner, "record": record}])


def test_an_edited_file_record_touches_nothing_outside_the_guest(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "other").mkdir()
    ident = {"dev": 0, "ino": 0, "size": 0, "sha256": ""}
    out = str(tmp_path / "out")
    home = tmp_path / "out" / "g"
    cases = [
        ({"kind": "file", "path": str(victim), "previous": "pwned"}, "outside the places vscen writes"),  # old style
        ({"kind": "file", "path": str(victim), "identity": ident}, "outside the places vscen writes"),
        ({"kind": "file", "path": f"{home}/../../victim", "identity": ident}, "'..'"),
        ({"kind": "file", "path": "victim", "identity": ident}, "not a plain absolute path"),
        ({"kind": "file", "path": 5, "identity": ident}, "'path' is int, not str"),
        ({"kind": "dirs", "paths": [str(tmp_path / "other")]}, "is not this guest's directory"),
        ({"kind": "nope"}, "not one vscen writes"),
    ]
    for record, why in cases:
        edited(tmp_path, record)
        result = cli("destroy", "g", "--output", out)
        # an edited journal: exit 2, naming the file and what is wrong
        assert result.exit_code == 2 and why in result.output, (record, result.output)
        assert str(home / FILENAME) in result.output and len(result.output.strip().splitlines()) == 1
        assert victim.read_text() == "precious" and (tmp_path / "other").is_dir()
        for p in sorted(home.iterdir()):
            p.unlink()
        home.rmdir()


def test_an_old_file_record_without_identity_is_never_written_back(tmp_path):
    home = edited(tmp_path, {})
    record = {"kind": "file", "path": str(home / "domain.xml"), "previous": "<domain>pwned</domain>"}
    (home / FILENAME).write_text(json.dumps({"name": "g", "uri": "test:///default",
                                             "entries": [{"owner": "vscen", "record": record}]}))
    (home / "domain.xml").write_text("<domain/>")
    result = cli("destroy", "g", "--output", str(tmp_path / "out"))
    assert result.exit_code == 1 and "recorded by an older vscen without its identity" in result.output
    assert (home / "domain.xml").read_text() == "<domain/>"
    (home / "domain.xml").unlink()
    assert cli("destroy", "g", "--output", str(tmp_path / "out")).exit_code == 0
    assert not (home / "domain.xml").exists() and not (home / FILENAME).exists()


def test_a_symlink_planted_in_the_guests_directory_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    from vscen.ownership import file_identity

    home = edited(tmp_path, {})
    (home / "domain.xml").symlink_to(victim)
    record = {"kind": "file", "path": str(home / "domain.xml"), "identity": file_identity(victim)}
    (home / FILENAME).write_text(json.dumps({"name": "g", "uri": "test:///default",
                                             "entries": [{"owner": "vscen", "record": record}]}))
    result = cli("destroy", "g", "--output", str(tmp_path / "out"))
    assert result.exit_code == 2 and "symbolic link" in result.output
    assert victim.read_text() == "precious"


def test_a_file_changed_since_vscen_wrote_it_is_left_in_place(tmp_path):
    from vscen.apply import write_file

    home = tmp_path / "out" / "g"
    home.mkdir(parents=True, mode=0o700)
    journal = Journal.open(home, "g", "test:///default")
    journal.add("vscen", write_file(home / "domain.xml", "<domain/>").do())
    (home / "domain.xml").write_text("<domain>mine now</domain>")
    result = cli("destroy", "g", "--output", str(tmp_path / "out"))
    assert result.exit_code == 1 and "changed since vscen wrote it; left in place" in result.output
    assert (home / "domain.xml").read_text() == "<domain>mine now</domain>"
    (home / "domain.xml").unlink()  # the user removes it: the next destroy finishes
    assert cli("destroy", "g", "--output", str(tmp_path / "out")).exit_code == 0
    assert sorted(p.name for p in home.iterdir()) == []  # vscen did not make the directory: it stays


def test_host_settings_are_never_undone_through_a_test_driver_or_on_another_host(tmp_path, monkeypatch):
    import vscen_host_tuning

    from vscen.ownership import host_identity

    root = tmp_path / "mm"
    (root / "ksm").mkdir(parents=True)
    (root / "ksm/run").write_text("0\n")
    monkeypatch.setattr(vscen_host_tuning, "SYSFS_ROOT", root)
    record = {"kind": "sysfs", "setting": "ksm/run", "path": "/sys/kernel/mm/ksm/run", "value": "0",
              "previous": "1", "feature": "ksm-off"}
    out = str(tmp_path / "out")
    local = type("C", (), {"uri": "qemu:///system", "is_test": False, "is_local": True})()
    here = host_identity(local)
    cases = [
        (record, "has no 'host'", 2),
        ({**record, "host": here}, "never undone through test:///default", 1),
        ({**record, "host": {**here, "connection": "test"}}, "never undone through", 1),
        ({**record, "host": here, "previous": "1; rm -rf /"}, "not a value of ksm/run", 2),
        ({**record, "host": here, "setting": "../../../etc/passwd"}, "not a setting vscen tunes", 2),
    ]
    for rec, why, code in cases:
        edited(tmp_path, rec, owner="host-tuning")
        result = cli("destroy", "g", "--output", out, "--connect", "test:///default")
        assert result.exit_code == code and why in result.output, (rec, result.output)
        assert (root / "ksm/run").read_text() == "0\n"
        for p in sorted((tmp_path / "out" / "g").iterdir()):
            p.unlink()
        (tmp_path / "out" / "g").rmdir()
    # the same host: undone; another machine, or a test driver: refused; after a reboot: gone
    with pytest.raises(VscenError, match="not on"):
        vscen_host_tuning.undo(local, {**record, "host": {**here, "machine_id": "0" * 32}})
    vscen_host_tuning.undo(local, {**record, "host": {**here, "boot_id": "earlier"}})
    assert (root / "ksm/run").read_text() == "0\n"
    vscen_host_tuning.undo(local, {**record, "host": here})
    assert (root / "ksm/run").read_text() == "1"


def test_plugins_refuse_records_of_the_wrong_shape():
    import vscen_hugepages
    import vscen_networks
    import vscen_os_testing
    import vscen_volumes

    conn = type("C", (), {"uri": "test:///default", "is_test": True, "is_local": True, "conn": None})()
    for undo, record, why in [
        (vscen_networks.undo, {"kind": "network", "name": "default"}, "has no 'uuid'"),
        (vscen_networks.undo, {"kind": "network", "name": "default", "uuid": "x"}, "is not a UUID"),
        (vscen_volumes.undo, {"kind": "volume", "pool": 1, "name": "a", "path": "/a"}, "'pool' is int"),
        (vscen_volumes.undo, {"kind": "volume", "pool": "p", "name": "b", "path": "/x/../a"}, "'..'"),
        (vscen_volumes.undo, {"kind": "pool", "uuid": "u", "path": "/srv/x", "dirs": ["/etc"]}, "dirs are not"),
        (vscen_volumes.undo, {"kind": "secret", "uuid": "1" * 36, "usage": "/a"}, "not the UUID vscen gives"),
        (vscen_hugepages.undo, {"kind": "hugepages", "size_kib": "2048"}, "'size_kib' is str"),
        (vscen_hugepages.undo, {"kind": "hugepages-sysctl", "path": "/etc/passwd", "identity": {}, "host": {}},
         "outside the places vscen writes"),
        (vscen_os_testing.undo_snapshot, {"kind": "snapshot", "uuid": "u", "name": "precious"}, "not the snapshot"),
    ]:
        with pytest.raises(VscenError, match=why):
            undo(conn, record)


# -- locking, linear destroy, crashes ------------------------------------------------------------


def fake_registry(undo):
    return type("R", (), {"host_actions": {"a": HostAction(name="a", summary="a", plan=list, undo=undo)}})()


def big_journal(home: Path, n: int) -> Journal:
    journal = Journal(home / FILENAME, "g", "test:///default",
                      [{"owner": "a", "record": {"kind": "x", "n": i}} for i in range(n)])
    journal.save()
    return Journal.load(home / FILENAME)


def test_destroy_of_2000_entries_is_linear(tmp_path, monkeypatch):
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    journal = big_journal(home, 2000)
    fsyncs, rewrites = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    import vscen.files

    real_write = vscen.files.atomic_write
    monkeypatch.setattr(vscen.files, "atomic_write", lambda *a, **k: rewrites.append(a[0]) or real_write(*a, **k))
    undone = []
    assert rollback(list(journal.entries), journal, None, fake_registry(lambda c, r: undone.append(r["n"]))) == []
    assert undone == list(range(1999, -1, -1))
    assert len(fsyncs) <= 2000 + 2 and len(rewrites) <= 1  # one append each, no whole-file rewrite
    assert not (home / FILENAME).exists() and not (home / LOGNAME).exists()


def _crash_half_way(home: str) -> None:
    journal = Journal.load(Path(home) / FILENAME)

    def undo(conn, record):
        if record["n"] == 999:
            os._exit(9)  # killed: no cleanup, no compaction

    rollback(list(journal.entries), journal, None, fake_registry(undo))


def test_a_destroy_killed_half_way_is_finished_by_the_next(tmp_path):
    import multiprocessing

    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    big_journal(home, 2000)
    child = multiprocessing.get_context("fork").Process(target=_crash_half_way, args=(str(home),))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    with open(home / LOGNAME, "a") as fh:
        fh.write('{"remove": 12')  # and a torn last line, as a crash in the middle of an append leaves
    journal = Journal.load(home / FILENAME)
    assert [e["record"]["n"] for e in journal.entries] == list(range(1000))  # 999 was not journalled as undone
    undone = []
    assert rollback(list(journal.entries), journal, None, fake_registry(lambda c, r: undone.append(r["n"]))) == []
    assert undone == list(range(999, -1, -1)) and not (home / FILENAME).exists()


def test_a_busy_guest_waits_bounded_then_refuses(tmp_path):
    home = guest(tmp_path, [])
    out = str(tmp_path / "out")
    with GuestLock(home, wait=0):
        result = vscen("destroy", "g", "--output", out, "--wait", "0")
        assert result.returncode == 1 and "error: guest 'g' is busy" in result.stderr
        started = time.monotonic()
        result = vscen("destroy", "g", "--output", out, "--wait", "1")
        assert result.returncode == 1 and "waiting up to 1s" in result.stderr
        assert time.monotonic() - started >= 1
    # released: the waiter goes on
    lock = GuestLock(home, wait=0).acquire()
    threading.Timer(0.5, lock.release).start()
    result = vscen("destroy", "g", "--output", out, "--wait", "30")
    assert result.returncode == 0, result.stderr
    assert not (home / FILENAME).exists() and not lock_path(home).exists()


def test_a_lock_removed_by_its_holder_is_not_taken_by_the_waiter(tmp_path):
    home = tmp_path / "g"
    home.mkdir()
    first = GuestLock(home, wait=0).acquire()
    got = []
    waiter = threading.Thread(target=lambda: got.append(GuestLock(home, wait=10, notify=lambda m: None).acquire()))
    waiter.start()
    time.sleep(0.2)
    first.remove()  # destroy: the guest is gone, and so is its lock file
    first.release()
    waiter.join(10)
    assert got and got[0].held and lock_path(home).exists()  # a fresh lock file, really held
    got[0].release()


@pytest.mark.parametrize("round_", range(4))
def test_two_runs_of_one_guest_at_once_lose_nothing(tmp_path, round_):
    out = str(tmp_path / "out")
    args = ["run", "computation", "--connect", "test:///default", "--output", out, "--name", "pair",
            "--disk", "none", "--network", "none"]
    procs = [subprocess.Popen([sys.executable, "-m", "vscen.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    journal = Journal.load(Path(out) / "pair" / FILENAME)
    kinds = [e["record"].get("kind") for e in journal.entries]
    # each process defines the guest on its own embedded driver: both records are kept
    assert kinds.count("domain") == 2 and kinds.count("file") == 1, kinds
    # racing to make the directories, each run records the part it made (see below)
    made = [p for e in journal.entries if e["record"].get("kind") == "dirs" for p in e["record"]["paths"]]
    assert sorted(made) == [out, str(Path(out) / "pair")], kinds
    assert len({e["seq"] for e in journal.entries}) == len(journal.entries)
    result = vscen("destroy", "pair", "--output", out)
    assert result.returncode == 0, result.stderr
    assert not Path(out).exists(), (sorted(map(str, Path(out).rglob("*"))), result.stdout, kinds)


def test_load_refuses_what_would_be_unbounded(tmp_path):
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    (home / LOGNAME).write_text('{"add": {"owner": "a", "record": {}}}\n{"x": 1}\n')
    (home / LOGNAME).chmod(0o600)
    with pytest.raises(UsageError, match="has no seq|neither an add nor a remove"):
        Journal.load(home / FILENAME, name="g", uri="")


def test_two_runs_of_one_guest_at_once_on_qemu_system(tmp_path):
    """With a real daemon both runs see one domain: the second finds it made (nothing to do) or,
    when it planned in the instant between the first's define and its mark, refuses clearly
    (exit 6); either way no record is lost and destroy leaves nothing."""
    import uuid

    import libvirt
    from conftest import system_or_skip

    conn = system_or_skip()
    name = f"vscen-test-pair-{uuid.uuid4().hex[:8]}"
    out = str(tmp_path / "out")
    args = ["run", "computation", "--connect", "qemu:///system", "--output", out, "--name", name,
            "--disk", "none", "--network", "none", "--virt-type", "qemu", "--memory", "128MiB", "--vcpu", "1"]
    try:
        for _ in range(3):
            procs = [subprocess.Popen([sys.executable, "-m", "vscen.cli", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for _ in range(2)]
            codes = sorted(p.wait(120) for p in procs)
            assert codes in ([0, 0], [0, 6]), [p.stderr.read() for p in procs]
            entries = Journal.load(Path(out) / name / FILENAME).entries
            kinds = [e["record"]["kind"] for e in entries]
            assert sorted(k for k in kinds if k != "dirs") == ["domain", "file"], kinds
            # racing to make the directories, each run records the part it made: together the
            # whole chain, each directory once
            made = [p for e in entries if e["record"]["kind"] == "dirs" for p in e["record"]["paths"]]
            assert sorted(made) == [out, str(Path(out) / name)], kinds
            result = vscen("destroy", name, "--output", out)
            assert result.returncode == 0, result.stderr
            assert not Path(out).exists()
            with pytest.raises(libvirt.libvirtError):
                conn.lookupByName(name)
    finally:
        try:
            conn.lookupByName(name).undefine()
        except libvirt.libvirtError:
            pass
        conn.close()
