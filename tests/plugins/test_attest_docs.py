"""The ``vscen attest`` commands of docs/secure-vm.md and docs/attest-session.md are real.

Every command line of the two pages' code blocks is parsed by vscen's own command line (an
unknown option, a missing required one or a value of the wrong type fails); where a line
abbreviates with ``...``, its options must at least exist. Then the pages' walk runs, command
for command, against the SEV host model of ``sev_platform.py`` in front of ``test:///default``:
the host's URI becomes ``test:///default``, ``~`` a temporary home, and the session commands
get ``--ark-ask`` (the model's chip is signed by a test ARK, not AMD's). The outputs the pages
show are the outputs the commands give.
"""

from __future__ import annotations

import os
import shlex
import uuid

import pytest
from conftest import ROOT
from sev_platform import VALIDATE, Platform, SevDomain, SevHost, fake_ovmf, read_secret_table
from test_attest_verify import vscen

PAGES = {name: ROOT / "docs" / name for name in ("secure-vm.md", "attest-session.md")}
SEV_HOST = "qemu+ssh://root@sev-host/system"  # the pages' host
URI = "test:///default"


def command_lines(page: str) -> list[str]:
    """The ``vscen ...`` command lines of *page*'s code blocks (fenced or indented; ``$``
    prompts dropped, continuation lines joined)."""
    lines, found, fenced, i = PAGES[page].read_text().splitlines(), [], False, 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            text = line.strip().removeprefix("$ ")
            if text.startswith("vscen "):
                while text.endswith("\\"):
                    i += 1
                    text = text[:-1].rstrip() + " " + lines[i].strip()
                found.append(text)
        i += 1
    return found


def attest_lines() -> list[tuple[str, str]]:
    return [(page, line) for page in PAGES for line in command_lines(page) if line.startswith("vscen attest ")]


def test_the_pages_show_every_command():
    shown = {shlex.split(line)[2] for _, line in attest_lines()}
    assert shown == {"session", "set-session", "launch", "inject", "verify"}


@pytest.mark.parametrize(("page", "line"), attest_lines(), ids=lambda v: v if v in PAGES else v[13:60])
def test_every_command_of_the_pages_parses(page, line):
    from vscen_attest.cli import commands

    try:
        from typer._click.exceptions import ClickException  # typer >= 0.28 vendors Click
    except ImportError:
        from click import ClickException

    args = shlex.split(line, comments=True)[2:]
    name, args = args[0], args[1:]
    command = commands()[name]
    if "..." in args:  # abbreviated: what is there must exist
        known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        assert [a for a in args if a.startswith("-") and a not in known] == [], line
        return
    try:
        command.make_context(name, list(args))
    except ClickException as exc:
        pytest.fail(f"{page}: '{line}': {exc.format_message()}")


# -- the walk, against the model -------------------------------------------------------------


def one(page: str, prefix: str) -> str:
    found = [line for line in command_lines(page) if line.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


def shown_output(page: str, after: str) -> list[str]:
    """The output the page shows for the command line *after*: the lines after a ``$`` prompt
    up to the next prompt, or the fenced block after an indented command."""
    lines = PAGES[page].read_text()
    lines = lines[lines.index(after) + len(after):].splitlines()[1:]
    if not after.startswith("$ "):
        lines = lines[lines.index("```") + 1:]
    out = []
    for line in lines:
        if line.startswith(("$ ", "```")) or not line:
            break
        out.append(line)
    return out


def run(line: str, *extra: str, measurement: str | None = None):
    args = [URI if a == SEV_HOST else os.path.expanduser(a) for a in shlex.split(line, comments=True)[1:]]
    if measurement is not None:
        args[args.index("--measurement") + 1] = measurement
    return vscen(*args, *extra)


@pytest.fixture
def conn():
    import libvirt

    c = libvirt.open(URI)
    yield c
    for dom in c.listAllDomains():
        if dom.name() == "vault":
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for pool in c.listAllStoragePools():
        if "vault.qcow2" in pool.listVolumes():
            pool.storageVolLookupByName("vault.qcow2").delete()
    c.close()


@pytest.mark.skipif(not VALIDATE.exists(), reason="virt-qemu-sev-validate is not installed")
@pytest.mark.parametrize("route", ["short-way", "exported-files"])
def test_the_pages_walk_runs(route, conn, tmp_path, monkeypatch):
    import libvirt
    from lxml import etree

    if "vault" in conn.listDefinedDomains() + [d.name() for d in conn.listAllDomains()]:
        pytest.skip("a guest 'vault' exists on test:///default already")
    chip = Platform(api=(1, 55), build=21)  # the platform the pages' outputs show
    host = SevHost(chip).install(monkeypatch)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    roots = chip.export(tmp_path)["roots"]  # pdh.b64 and cert-chain.b64, as 'virsh nodesevinfo' gives them

    # 1. the host administrator builds the guest and names its firmware in <os>
    code, out, err = run(one("secure-vm.md", "vscen run secure-vm --name vault"), "--connect", URI,
                         "--output", str(tmp_path / "out"))
    assert code == 0, err
    (home / "sev").mkdir(mode=0o700)  # mkdir -p -m 700 ~/sev
    firmware = fake_ovmf()
    (home / "sev" / "OVMF.amdsev.fd").write_bytes(firmware)  # the owner's copy
    (tmp_path / "OVMF.amdsev.fd").write_bytes(firmware)  # the host's
    root = etree.fromstring(conn.lookupByName("vault").XMLDesc(0).encode())
    root.find("os").attrib.pop("firmware")
    loader = etree.Element("loader", readonly="yes", type="rom")
    loader.text = str(tmp_path / "OVMF.amdsev.fd")
    root.find("os").insert(1, loader)
    conn.defineXML(etree.tostring(root, encoding="unicode"))

    # 2. the launch session
    if route == "short-way":
        line = one("secure-vm.md", "vscen attest session")
        assert line == one("attest-session.md", "vscen attest session --connect")
        code, out, err = run(line, "--ark-ask", str(roots))
        assert code == 0, err
    else:
        code, out, err = run(one("attest-session.md", "vscen attest session --pdh"), "--ark-ask", str(roots))
        assert code == 0, err
        assert "policy 0x0007 (NODBG+NOKS+ES)" in err
        code, out, err = run(one("attest-session.md", "vscen attest set-session"), "--connect", URI)
        assert code == 0, err
    assert (home / "sev" / "vault.tk").stat().st_mode & 0o777 == 0o600

    # 3. launch, verify, leave paused
    code, out, err = run(one("secure-vm.md", "vscen attest launch vault --connect"))
    assert code == 0, err
    shown = shown_output("secure-vm.md", "$ vscen attest launch vault ... --no-resume")
    assert [line for line in shown if line.startswith("note:")] == err.splitlines()
    assert [line for line in shown if line.startswith("vault:")] == out.splitlines()
    assert conn.lookupByName("vault").info()[0] == libvirt.VIR_DOMAIN_PAUSED
    report = host.launches["vault"].report

    # 5. the same report checked offline
    verify = one("secure-vm.md", "vscen attest verify --measurement")
    code, out, err = run(verify, measurement=report)
    assert code == 0 and out.splitlines() == shown_output("secure-vm.md", "--cpu-model 1 --cpu-stepping 1"), err

    # 4. the disk key, to the verified guest only
    (home / "sev" / "vault-luks.key").write_text("the LUKS passphrase")
    (home / "sev" / "vault-luks.key").chmod(0o600)
    if route == "short-way":
        code, out, err = run(one("secure-vm.md", "vscen attest inject"))
        assert code == 0, err
        assert out.splitlines() == shown_output("secure-vm.md", "--secret-file ~/sev/vault-luks.key")
    else:  # by hand: the packet from the offline check, handed over on the host ('virsh domsetlaunchsecstate')
        by_hand = one("secure-vm.md", "vscen attest verify ...")
        given = shlex.split(by_hand)[4:]  # after "vscen attest verify ..."
        above = shlex.split(verify)[3:]
        tk = above.index("--tk")
        del above[tk:tk + 2]
        code, out, err = run(shlex.join(["vscen", "attest", "verify", *above, *given]), measurement=report)
        assert code == 0, err
        dom = SevDomain(conn.lookupByName("vault"), host)
        dom.setLaunchSecurityState({"sev-secret-header": (tmp_path / "vault-hdr.b64").read_text().strip(),
                                    "sev-secret": (tmp_path / "vault-secret.b64").read_text().strip()})
        dom.resume()
    assert conn.lookupByName("vault").info()[0] == libvirt.VIR_DOMAIN_RUNNING
    luks = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
    assert read_secret_table(host.launches["vault"].guest.secret_area) == {luks: b"the LUKS passphrase"}
