"""``vscen shell``: a whole session through a pseudo-terminal (readline's own Tab completion,
a refused value, the XML, a run on the embedded test driver), then the parts one by one: every
``vscen run`` option reachable from the shell, the same settings and errors as the command
line, and the completion of commands, names, values and paths."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import typer.main

from vscen.cli import app
from vscen.cli import shell as cli_shell
from vscen.errors import RulesError, UsageError, VscenError
from vscen.settings import CHOICES

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\x07|\r")
TIMEOUT = 60


class Terminal:
    """A program on a pseudo-terminal: type into it, read what it shows."""

    def __init__(self, args: list[str], cwd: Path, env: dict):
        master, slave = os.openpty()
        # wide, so that nothing looked for is wrapped or redrawn by readline
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 250, 0, 0))
        # a session of its own with the terminal as its controlling one, so Ctrl-C is SIGINT
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     start_new_session=True, close_fds=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.fd = master
        self.seen = ""  # everything shown so far, escape sequences removed
        self.pos = 0  # how far expect() has read

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def _read(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the program has gone
            return False
        self.seen += ANSI.sub("", data.decode(errors="replace"))
        return bool(data)

    def expect(self, text: str, timeout: float = TIMEOUT) -> str:
        """Wait for *text* after what was read before; returns what came before it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.pos:]:
            if time.monotonic() > deadline or (not self._read(deadline) and self.proc.poll() is not None):
                raise AssertionError(f"{text!r} not shown within {timeout}s; the screen after the last "
                                     f"match:\n{self.seen[self.pos:]}")
        at = self.seen.index(text, self.pos)
        before, self.pos = self.seen[self.pos:at], at + len(text)
        return before

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.fd)


@pytest.fixture
def terminal(tmp_path):
    inputrc = tmp_path / "inputrc"  # not the user's: plain completion, no bell, no paste mode
    inputrc.write_text("set bell-style none\nset enable-bracketed-paste off\nset show-all-if-ambiguous off\n")
    env = dict(os.environ, TERM="xterm", INPUTRC=str(inputrc), COLUMNS="250", LINES="60")
    env.pop("LIBVIRT_DEFAULT_URI", None)
    term = Terminal([sys.executable, "-m", "vscen.cli", "shell"], tmp_path, env)
    yield term
    term.close()


def test_a_whole_session_on_a_terminal(terminal, tmp_path):
    t = terminal
    t.expect("vscen> ")
    # Ctrl-C drops the line typed so far and the shell goes on
    t.send("scenario desk")
    t.expect("scenario desk")  # readline has the line: Ctrl-C now interrupts its input
    t.send("\x03")
    t.expect("^C")
    assert "scenario: none yet" in t.expect("vscen> ")
    # Tab completes the command, then the scenario name, as readline shows them
    t.send("scen\t")
    t.expect("scenario ")
    t.send("sec\t")
    t.expect("secure-vm ")
    t.send("\r")
    assert "scenario: secure-vm" in t.expect("vscen> ")

    # a setting completed by Tab; a bad value is refused with vscen's error, the old one stays
    t.send("set mem\t")
    t.expect("set memory ")
    t.send("lots\r")
    shown = t.expect("vscen> ")
    assert "error: memory: 'lots' is not a size" in shown
    assert "memory=" not in shown.split("error:")[1]
    t.send("memory 1GiB\r")
    assert "set: memory=1GiB" in t.expect("vscen> ")

    for line in ("name shell-test", "connect test:///default", f"output {tmp_path}/out",
                 f"disk.path {tmp_path}/images/shell-test.qcow2", "disk.size 1G"):
        t.send(line + "\r")
        assert "error" not in t.expect("vscen> "), line
    # the status line is wrapped at the terminal's width, wherever the temporary path ends
    status = " ".join(t.seen[t.seen.rindex("scenario: secure-vm"):].split())
    assert "name=shell-test" in status and "connection: test:///default" in status

    t.send("xml\r")
    xml = "<domain" + t.expect("</domain>").split("<domain", 1)[1] + "</domain>"
    assert "<name>shell-test</name>" in xml
    assert '<memory unit="KiB">1048576</memory>' in xml
    assert f"{tmp_path}/images/shell-test.qcow2" in xml
    t.expect("vscen> ")

    # run asks first, after showing the plan
    t.send("run\r")
    plan = t.expect("go ahead? [y/N] ")
    assert "would: define domain on test:///default" in plan
    t.send("y\r")
    done = t.expect("vscen> ")
    assert "done: define domain on test:///default" in done
    written = tmp_path / "out" / "shell-test" / "domain.xml"
    assert written.exists()
    assert written.read_text().strip() == xml.replace("\r", "")

    t.send("\x04")  # Ctrl-D leaves
    assert t.proc.wait(timeout=TIMEOUT) == 0


def test_piped_commands_and_quit(tmp_path):
    """The shell reads commands from a pipe too; 'quit' leaves; nothing is run unasked."""
    script = "scenario desktop\nvcpu 0\nvcpu 4\ncommand\nrun\nn\nquit\nscenario never-reached\n"
    proc = subprocess.run([sys.executable, "-m", "vscen.cli", "shell", "--connect", "test:///default"],
                          input=script, capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "error: vcpu: '0' must be a whole number from 1 to 4096" in proc.stderr
    assert "vscen run desktop --vcpu 4 --connect test:///default" in proc.stdout
    assert "nothing done" in proc.stdout
    assert "never-reached" not in proc.stdout + proc.stderr


def test_vscen_help_does_not_load_the_shell_machinery():
    code = ("import sys\nsys.argv = ['vscen', '--help']\nfrom vscen.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('cmd', 'readline', 'vscen.pipeline', 'vscen.resolve')"
            " if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "shell" in proc.stdout


# -- the shell covers 'vscen run' --------------------------------------------------------------


def run_command():
    return typer.main.get_command(app).commands["run"]


#: a value for every shell setting, and what 'vscen run' must then receive
SAMPLES = {
    "scenario": ("secure-vm computation", "scenarios", ("secure-vm", "computation")),
    "feature": ("-tpm +hugepages", "feature", ("-tpm", "+hugepages")),
    "name": ("vault", "name", "vault"),
    "memory": ("8GiB", "memory", "8GiB"),
    "vcpu": ("4", "vcpu", "4"),
    "machine": ("q35", "machine", "q35"),
    "boot": ("cdrom,hd", "boot", "cdrom,hd"),
    "arch": ("x86_64", "arch", "x86_64"),
    "virt-type": ("qemu", "virt_type", "qemu"),
    "firmware": ("efi", "firmware", "efi"),
    "cdrom": ("/isos/tw.iso", "cdrom", "/isos/tw.iso"),
    "network": ("bridge=br0,model=e1000e", "network", "bridge=br0,model=e1000e"),
    "graphics": ("vnc", "graphics", "vnc"),
    "disk": ("path=/vm/a.qcow2,size=8G", "disk", None),  # with the disk keys: below
    "disk.path": ("/vm/main.qcow2", "disk", None),
    "disk.size": ("40G", "disk_size", "40G"),
    "disk.format": ("qcow2", "disk", None),
    "disk.bus": ("scsi", "disk", None),
    "disk.cache": ("writeback", "disk", None),
    "disk.io": ("threads", "disk", None),
    "disk.discard": ("unmap", "disk", None),
    "disk.preallocation": ("metadata", "disk", None),
    "disk.cluster_size": ("64K", "disk", None),
    "disk.lazy_refcounts": ("yes", "disk", None),
    "disk.backing": ("/vm/base.qcow2", "disk", None),
    "disk.encrypt": ("yes", "plugin_disk_encrypt", True),
    "filesystem": ("source=/srv/data,target=data", "plugin_filesystem", ("source=/srv/data,target=data",)),
    "pool": ("images", "plugin_pool", "images"),
    "hugepages": ("reserve", "plugin_hugepages", "reserve"),
    "os": ("win11", "plugin_os", "win11"),
    "peer": ("qemu+ssh://far/system", "plugin_peers", ("qemu+ssh://far/system",)),
    "hostdev": ("0000:03:00.0", "plugin_hostdev", ("0000:03:00.0",)),
    "transient": ("yes", "transient", True),
    "tune-host": ("yes", "plugin_tune_host", True),
    "prepare-host": ("yes", "plugin_prepare_host", True),
    "unattend": ("UNATTEND", "plugin_unattend", "UNATTEND"),
    "force": ("yes", "force", True),
    "start": ("yes", "start", True),
    "customise": ("./devices/graphics/@type=spice", "set_", ("./devices/graphics/@type=spice",)),
    "config": ("CONFIG", "config", "CONFIG"),
    "host-facts": ("FACTS", "host_facts", ("FACTS",)),
    "connect": ("qemu+ssh://kvm7/system", "connect", "qemu+ssh://kvm7/system"),
    "host": ("kvm7", "host", "kvm7"),
    "output": ("/srv/vscen", "output", "/srv/vscen"),
    "wait": ("5", "wait", "5.0"),
    "passphrase-file": ("PASS", "plugin_passphrase_file", "PASS"),
    "image": ("IMAGE", "plugin_image", "IMAGE"),
    "cloud-init": ("hostname=web1", "plugin_cloud_init", ("hostname=web1",)),
}


def test_every_run_option_is_a_shell_setting_or_command():
    params = {p.name for p in run_command().params}
    mapped = {k.param for k in cli_shell.keys() if k.param} | set(cli_shell.COMMAND_PARAMS)
    assert params - mapped == set(), "vscen run options the shell does not offer"
    assert mapped - params == set(), "shell settings naming no vscen run option"
    assert set(SAMPLES) == {k.name for k in cli_shell.keys()}, "every shell setting has a sample below"
    for param, command in cli_shell.COMMAND_PARAMS.items():
        for name in command.replace(",", " ").split():
            if not name.startswith("--"):
                assert hasattr(cli_shell.Session, f"do_{name}"), (param, name)


@pytest.fixture
def session(registry, monkeypatch):
    monkeypatch.setattr(cli_shell.util, "_columns", lambda: 100)
    return cli_shell.shell_class()(registry=registry)


@pytest.fixture(scope="module")
def registry():
    from vscen.pipeline import Request, load

    return load(Request(scenarios=[]))[1]


def files(tmp_path):
    """The files the path samples name: a config, host facts, a passphrase file (mode 600)."""
    from conftest import host_files

    config = tmp_path / "vscen.toml"
    config.write_text('memory = "2GiB"\n')
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    image = tmp_path / "cloud.raw"
    image.write_bytes(bytes(65536))
    return {"CONFIG": str(config), "FACTS": str(host_files("amd-sev")[0]), "PASS": str(secret), "IMAGE": str(image),
            "UNATTEND": f"admin-password-file={secret}"}


def test_every_setting_reaches_vscen_run_as_its_option(session, tmp_path):
    paths = files(tmp_path)
    for name, (value, _, _) in SAMPLES.items():
        session.assign(name, paths.get(value, value))
    argv = session.argv()
    ctx = run_command().make_context("run", list(argv))
    for name, (_, param, expected) in SAMPLES.items():
        expected = paths.get(expected, expected) if isinstance(expected, str) else expected
        if isinstance(expected, tuple):
            expected = tuple(paths.get(e, e) for e in expected)
        got = ctx.params[param]
        if expected is None:
            continue
        got = tuple(str(g) for g in got) if isinstance(got, (list, tuple)) else got if isinstance(got, bool) else str(got)
        assert got == expected, name
    # the disk keys go into every --disk spec, the spec's own values after them (they win)
    assert list(ctx.params["disk"]) == ["path=/vm/main.qcow2,format=qcow2,bus=scsi,cache=writeback,io=threads,discard=unmap,"
                                  "preallocation=metadata,cluster_size=64K,lazy_refcounts=yes,backing=/vm/base.qcow2,"
                                  "path=/vm/a.qcow2,size=8G"]
    assert ctx.params["dry_run"] is False and ctx.params["explain"] is False


def test_the_shell_builds_the_settings_vscen_run_builds(session, tmp_path, monkeypatch):
    """What the shell checked is what 'vscen run' gets: the request the command line makes from
    the shell's arguments gives the same settings."""
    import vscen.pipeline as pipeline

    for name, value in (("scenario", "computation"), ("name", "hpc"), ("memory", "6GiB"), ("vcpu", "3"),
                        ("disk.cache", "writeback"), ("disk", "size=4G"), ("disk", "path=/vm/b.raw"),
                        ("filesystem", "source=/srv,target=srv,readonly=yes"), ("hugepages", "reserve"),
                        ("boot", "network,hd"), ("feature", "-watchdog"), ("transient", "yes"),
                        ("hostdev", "pci:8086:1521")):
        session.assign(name, value)
    seen = []

    class Stop(Exception):
        pass

    def capture(request, *a, **kw):
        seen.append(request)
        raise Stop

    monkeypatch.setattr(pipeline, "render", capture)
    with pytest.raises(Stop):
        typer.main.get_command(app).main(args=["run", *session.argv()], prog_name="vscen", standalone_mode=False)
    request = seen[0]
    from vscen.resolve import resolve

    resolution = resolve(session.registry, request.scenarios, request.add, request.remove)
    from_cli, _ = pipeline.request_settings(request, session.registry, resolution)
    from_shell, notes = session.settings()
    assert notes == []
    assert from_shell == from_cli
    assert from_shell.disks[0].cache == "writeback" and from_shell.disks[1].path == "/vm/b.raw"
    assert (request.add, request.remove) == ([], ["watchdog"])


def test_commands_run_vscen_run_with_the_matching_options(session, monkeypatch):
    calls = []
    monkeypatch.setattr(type(session), "_cli", lambda self, args, out=None, err=None: calls.append(args) or True)
    monkeypatch.setattr(type(session), "confirm", lambda self, q: True)
    session.assign("scenario", "desktop")
    session.onecmd("xml")
    session.onecmd("plan --json")
    session.onecmd("explain")
    session.onecmd("run --start --json")
    session.onecmd("run --yes")
    session.onecmd("host")
    session.onecmd("host check --json")
    assert calls == [
        ["run", "desktop", "--dry-run"],
        ["run", "desktop", "--dry-run", "--json"],
        ["run", "desktop", "--dry-run", "--explain"],
        ["run", "desktop", "--start", "--dry-run"],  # the plan, then the run it asked about
        ["run", "desktop", "--start", "--json"],
        ["run", "desktop"],
        ["host"],
        ["host", "check", "desktop", "--json"],
    ]


# -- checked as entered, with the command line's messages --------------------------------------


@pytest.mark.parametrize("key,value", [
    ("memory", "lots"), ("vcpu", "0"), ("name", "a/b"), ("boot", "floppy"), ("network", "wifi"),
    ("firmware", "coreboot"), ("hugepages", "some"), ("machine", "q35!"), ("pool", "-x"),
    ("disk.cache", "fast"), ("disk.size", "big"), ("cdrom", "/a<b.iso"), ("filesystem", "/srv"),
    ("hostdev", "gpu"),
])
def test_a_bad_value_gets_the_command_line_error_and_the_old_value_stays(session, key, value, capsys):
    option = cli_shell.long_option(cli_shell.key_map()[key].param) if cli_shell.key_map()[key].param else "--disk"
    arg = f"{key[5:]}={value}" if option == "--disk" else value
    proc = subprocess.run([sys.executable, "-m", "vscen.cli", "run", "desktop", f"{option}={arg}",
                           "--connect", "test:///default", "--dry-run"], capture_output=True, text=True, timeout=TIMEOUT)
    cli_error = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and cli_error.startswith("error: ")

    session.assign("scenario", "desktop")
    before = dict(session.values)
    session.onecmd(f"{key} {value}")
    assert capsys.readouterr().err.strip().splitlines()[-1] == cli_error
    assert session.values == before


def test_refused_choices_keep_the_previous_ones(session, tmp_path):
    session.assign("scenario", "secure-vm")
    with pytest.raises(UsageError, match="unknown scenario 'secure'"):
        session.assign("scenario", "secure")
    with pytest.raises(RulesError, match="host-filesystem"):
        session.assign("feature", "+host-filesystem")
    session.assign("scenario", "computation")  # a raw disk by default
    with pytest.raises(UsageError, match="an encrypted disk must be qcow2"):
        session.assign("disk.encrypt", "yes")
    with pytest.raises(UsageError, match="'maybe' is not yes or no"):
        session.assign("force", "maybe")
    with pytest.raises(UsageError, match="does not exist"):
        session.assign("config", str(tmp_path / "none.toml"))
    with pytest.raises(UsageError, match="passphrase-file: cannot read"):
        session.assign("passphrase-file", str(tmp_path / "none"))
    with pytest.raises(UsageError, match="not XPATH=VALUE"):
        session.assign("customise", "./name")
    with pytest.raises(UsageError, match="unknown setting 'memroy' \\(did you mean 'memory'\\?\\)"):
        session.assign("memroy", "4GiB")
    assert session.values == session.blank() | {"scenario": ["computation"]}


def test_relative_paths_become_absolute_and_lists_grow_and_shrink(session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    session.assign("cdrom", "isos/tw.iso")
    assert session.values["cdrom"] == f"{tmp_path}/isos/tw.iso"
    session.assign("scenario", "desktop")
    session.assign("feature", "-audio tpm")
    session.assign("feature", "+audio")  # the later sign wins
    assert session.values["feature"] == ["+tpm", "+audio"]
    session.onecmd("unset feature audio")
    assert session.values["feature"] == ["+tpm"]
    session.assign("disk", "size=1G")
    session.assign("disk", "size=2G")
    with pytest.raises(VscenError, match="there already"):
        session.assign("disk", "size=2G")
    session.onecmd("unset disk")
    assert session.values["disk"] == []
    session.onecmd("reset")
    assert session.values == session.blank()


def test_status_shows_the_choice_and_the_connection(session, monkeypatch):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///session")
    assert session.status() == "scenario: none yet | connection: qemu:///session (LIBVIRT_DEFAULT_URI)"
    session.assign("scenario", "secure-vm")
    session.assign("feature", "-tpm")
    session.assign("memory", "8GiB")
    session.assign("start", "yes")
    session.assign("connect", "test:///default")
    assert session.status(width=400) == ("scenario: secure-vm | features: -tpm | set: memory=8GiB start | "
                                         "connection: test:///default")


def test_show_says_where_each_value_comes_from(session, capsys):
    session.assign("scenario", "computation")
    session.assign("memory", "6GiB")
    capsys.readouterr()
    session.onecmd("show")
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["memory"].endswith("6 GiB  (set here)")
    assert rows["machine"].endswith("q35  (scenario computation)")
    assert rows["network"].endswith("(default)")


# -- completion --------------------------------------------------------------------------------


def test_complete_command_names_and_settings(session):
    assert session.candidates("scen") == ["scenario "]
    assert session.candidates("x") == ["xml "]
    assert session.candidates("disk.ca") == ["disk.cache "]
    assert {"run ", "plan ", "memory ", "host-facts ", "quit "} <= set(session.candidates(""))
    assert session.candidates("set mem") == ["memory "]
    assert session.candidates("help pl") == ["plan "]
    assert session.candidates("run --s") == ["--start "]
    assert session.candidates("host ") == ["--json ", "check "]


def test_complete_scenario_and_feature_names(session, registry):
    assert session.candidates("scenario sec") == ["secure-vm "]
    assert session.candidates("scenario secure-vm comp") == ["computation "]
    assert session.candidates("scenario ") == sorted(f"{s} " for s in registry.scenarios)
    assert session.candidates("feature +hugep") == ["+hugepages "]
    assert session.candidates("feature hugep") == ["hugepages "]
    session.assign("scenario", "secure-vm")
    offered = session.candidates("feature ")
    assert "-tpm " in offered and "+tpm " not in offered  # in: it can be removed
    assert "+hugepages " in offered and "-hugepages " not in offered


def test_complete_values_from_the_settings_choices(session):
    assert session.candidates("firmware ") == sorted(f"{c} " for c in CHOICES["firmware"])
    assert session.candidates("set disk.cache w") == ["writeback ", "writethrough "]
    assert session.candidates("hugepages p") == ["persistent "]
    assert session.candidates("force ") == ["no ", "yes "]
    assert session.candidates("boot cdrom,h") == ["cdrom,hd"]
    assert session.candidates("disk path=/x.qcow2,ca") == ["path=/x.qcow2,cache="]
    assert session.candidates("disk format=r") == ["format=raw"]
    assert session.candidates("network br") == ["bridge="]
    assert session.candidates("network network=default,model=e") == ["network=default,model=e1000e"]
    assert session.candidates("memory ") == []
    assert session.candidates("connect test") == ["test:///default "]
    session.assign("memory", "4GiB")
    assert session.candidates("unset mem") == ["memory "]


def test_complete_paths(session, tmp_path, monkeypatch):
    (tmp_path / "isos").mkdir()
    (tmp_path / "isos" / "tiny.iso").write_text("")
    (tmp_path / "host.xml").write_text("")
    assert session.candidates(f"cdrom {tmp_path}/is") == [f"{tmp_path}/isos/"]
    assert session.candidates(f"cdrom {tmp_path}/isos/t") == [f"{tmp_path}/isos/tiny.iso "]
    assert session.candidates(f"output {tmp_path}/") == [f"{tmp_path}/isos/"]  # directories only
    assert session.candidates(f"host-facts {tmp_path}/ho") == [f"{tmp_path}/host.xml "]
    assert session.candidates(f"disk size=1G,path={tmp_path}/isos/") == [f"size=1G,path={tmp_path}/isos/tiny.iso"]
    assert session.candidates(f"filesystem source={tmp_path}/i") == [f"source={tmp_path}/isos/"]
    monkeypatch.setenv("HOME", str(tmp_path))
    assert session.candidates("config ~/ho") == ["~/host.xml "]
