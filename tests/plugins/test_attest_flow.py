"""The guest owner's whole flow, end to end, through vscen's command line, on one SEV host.

The host is the SEV model of ``sev_platform.py`` (a chip with its own keys and certificate
chain, and QEMU's side of an SEV launch) put in front of libvirt's real ``test:///default``
driver. Nothing of the owner's is handed to the model: it gets only what a host gets.

- the host administrator builds the guest with ``vscen run secure-vm``, names the firmware in
  its ``<os>`` (as docs/secure-vm.md says: ``virsh edit``) and exports the chip's PDH and
  certificate chain (``virsh nodesevinfo``);
- the owner makes the session from those files (``vscen attest session``); it goes into the
  guest with ``vscen attest set-session`` (the host administrator) or ``--domain`` (the owner
  over the connection, the chain read with ``virNodeGetSEVInfo``);
- at the start the chip unwraps TEK and TIK from the domain's ``<dhCert>`` and ``<session>``
  (LAUNCH_START) and measures the firmware the guest's ``<loader>`` names and its vCPUs' state
  with its own TIK; ``vscen attest launch`` verifies that with the owner's ``--tk``;
- ``vscen attest inject`` sends a secret, which the chip decrypts with the TEK it unwrapped,
  and the guest reads as Linux's ``efi_secret`` does.

Tampered: the host puts its own session in, the chip launches with keys of its own, the host
runs another firmware, the certificates are another chip's: the owner's launch refuses, the
guest is destroyed (or never started), and no secret is sent.
"""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from sev_platform import VALIDATE, GuestContext, Platform, SevHost, fake_ovmf, read_secret_table
from test_attest_verify import vscen

pytestmark = pytest.mark.skipif(not VALIDATE.exists(), reason="virt-qemu-sev-validate (libvirt's layout of "
                                "the SEV-ES vCPU state, the host's QEMU side here) is not installed")

URI = "test:///default"
LUKS = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
PASSPHRASE = b"correct horse battery staple"


@pytest.fixture(scope="module")
def chip():
    return Platform()


@pytest.fixture
def conn():
    """Holds test:///default's state while the commands open and close their connections."""
    import libvirt

    c = libvirt.open(URI)
    yield c
    c.close()


class Site:
    """The host (its libvirt, the model in front) and the owner's directory."""

    def __init__(self, tmp_path, conn, host: SevHost, name: str):
        self.tmp, self.conn, self.host, self.name = tmp_path, conn, host, name
        self.owner = tmp_path / "sev"
        self.owner.mkdir(mode=0o700)
        self.firmware = self.owner / "OVMF.amdsev.fd"  # the owner's copy of the host's firmware
        self.firmware.write_bytes(fake_ovmf())
        self.tk = self.owner / f"{name}.tk"
        self.secret = self.owner / f"{name}-luks.key"
        self.secret.write_bytes(PASSPHRASE)
        self.secret.chmod(0o600)

    def build(self, firmware: bytes | None = None, policy: str = "0x0007") -> None:
        """The host administrator: ``vscen run secure-vm``, then the firmware named in <os>."""
        from lxml import etree

        code, out, err = vscen("run", "secure-vm", "--connect", URI, "--name", self.name, "--memory", "2GiB",
                               "--vcpu", "4", "--output", str(self.tmp / "out"),
                               *(["--set", f"./launchSecurity/policy={policy}"] if policy != "0x0007" else []))
        assert code == 0, err
        root = etree.fromstring(self.conn.lookupByName(self.name).XMLDesc(0).encode())
        assert root.findtext("launchSecurity/policy") == policy  # 0x0007: SEV-ES on vscen's reference host
        on_host = self.tmp / "host-OVMF.amdsev.fd"
        on_host.write_bytes(firmware if firmware is not None else self.firmware.read_bytes())
        os_ = root.find("os")
        os_.attrib.pop("firmware")  # this very image, not libvirt's choice (a ROM: no NVRAM, nothing unmeasured)
        loader = etree.SubElement(os_, "loader", readonly="yes", type="rom")
        loader.text = str(on_host)
        os_.insert(1, loader)
        self.conn.defineXML(etree.tostring(root, encoding="unicode"))

    def launch_security(self):
        from lxml import etree

        return etree.fromstring(self.conn.lookupByName(self.name).XMLDesc(0).encode()).find("launchSecurity")

    def state(self) -> int:
        return self.conn.lookupByName(self.name).info()[0]

    def session_files(self, platform: Platform) -> list[str]:
        """The owner's ``vscen attest session`` from the host's exported files."""
        files = platform.export(self.tmp)
        return ["--pdh", str(files["pdh"]), "--cert-chain", str(files["chain"]), "--ark-ask", str(files["roots"])]

    def launch(self, *extra: str):
        return vscen("attest", "launch", self.name, "--connect", URI, "--firmware", str(self.firmware),
                     "--tk", str(self.tk), *extra)

    def inject(self):
        return vscen("attest", "inject", self.name, "--connect", URI, "--firmware", str(self.firmware),
                     "--tk", str(self.tk), "--secret-file", str(self.secret))

    def remove(self):
        dom = self.conn.lookupByName(self.name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()


@pytest.fixture
def site(tmp_path, conn, chip, monkeypatch, request):
    host = SevHost(chip).install(monkeypatch)
    s = Site(tmp_path, conn, host, "atte2e-" + request.node.name.split("[")[-1].rstrip("]").replace("_", "-")[:40])
    yield s
    s.remove()


@pytest.mark.parametrize(("put", "policy"), [("set-session", "0x0007"), ("domain", "0x0007"), ("domain", "0x0003")],
                         ids=["sev-es-set-session", "sev-es-domain", "sev-domain"])
def test_the_owners_whole_flow(site, chip, put, policy):
    """Session, launch paused and verified, offline verify of the same report, inject, resume."""
    import libvirt

    site.build(policy=policy)
    es = policy == "0x0007"
    if put == "set-session":  # the owner elsewhere, from exported files; the host administrator puts it in
        code, out, err = vscen("attest", "session", *site.session_files(chip), "--policy", policy,
                               "--tk", str(site.tk), "--dh-cert", str(site.tmp / "godh.b64"),
                               "--session", str(site.tmp / "session.b64"))
        assert code == 0, err
        said = err
        code, out, err = vscen("attest", "set-session", site.name, "--connect", URI, "--dh-cert",
                               str(site.tmp / "godh.b64"), "--session", str(site.tmp / "session.b64"),
                               "--policy", policy)
        assert code == 0, err
    else:  # the owner over the connection: the chain from virNodeGetSEVInfo, the guest's policy
        roots = chip.export(site.tmp)["roots"]
        code, out, err = vscen("attest", "session", "--connect", URI, "--domain", site.name, "--ark-ask", str(roots),
                               "--tk", str(site.tk))
        assert code == 0, err
        said = err
    assert "verified: PDH <- PEK <- OCA, CEK <- ASK <- ARK" in said
    assert site.tk.stat().st_mode & 0o777 == 0o600
    ls = site.launch_security()
    assert ls.findtext("dhCert") and ls.findtext("session")
    assert site.tk.read_bytes().hex() not in out + err + site.conn.lookupByName(site.name).XMLDesc(0)

    code, out, err = site.launch("--no-resume")
    assert code == 0, err
    assert f"{site.name}: measurement verified ({'SEV-ES' if es else 'SEV'}, policy {policy}, platform API 1.51 build 3)" in out
    assert ("note: host CPU signature from libvirt: family 25, model 1, stepping 1" in err) is es
    assert "note: vCPUs from the guest's definition: 4" in err
    assert site.state() == libvirt.VIR_DOMAIN_PAUSED
    launch = site.host.launches[site.name]
    # the chip's keys are the owner's: it unwrapped them from the domain's session
    assert launch.guest.tek + launch.guest.tik == site.tk.read_bytes()

    # the same report, checked offline as someone else would (virt-qemu-sev-validate's options)
    cpus = ["--num-cpus", "4", "--cpu-family", "25", "--cpu-model", "1", "--cpu-stepping", "1"] if es else []
    code, out, err = vscen("attest", "verify", "--measurement", launch.report, "--api-major", "1", "--api-minor",
                           "51", "--build-id", "3", "--policy", policy, "--firmware", str(site.firmware), *cpus,
                           "--tk", str(site.tk))
    assert (code, out) == (0, f"valid: the {'SEV-ES' if es else 'SEV'} launch measurement is the one expected\n"), err

    code, out, err = site.inject()
    assert code == 0, err
    assert f"{site.name}: measurement verified, 1 secret(s) injected" in out and f"{site.name}: resumed" in out
    assert site.state() == libvirt.VIR_DOMAIN_RUNNING and launch.finished
    assert read_secret_table(launch.guest.secret_area) == {LUKS: PASSPHRASE}
    assert PASSPHRASE.decode() not in out + err


def _owners_session(site, chip):
    code, out, err = vscen("attest", "session", *site.session_files(chip), "--connect", URI, "--domain", site.name,
                           "--tk", str(site.tk))
    assert code == 0, err


def test_a_session_the_host_replaced_is_refused_and_the_guest_destroyed(site, chip):
    """The host administrator puts a session of their own in (they hold its TIK): the chip
    launches under keys the owner does not have."""
    import libvirt

    site.build()
    _owners_session(site, chip)
    host_tk = site.tmp / "host.tk"
    code, out, err = vscen("attest", "session", *site.session_files(chip), "--connect", URI, "--domain", site.name,
                           "--tk", str(host_tk), "--force")
    assert code == 0, err
    code, out, err = site.launch("--no-resume")
    assert code == 1 and err.count("\n") == 3, err  # two notes, one error
    assert "error: measurement does not match: the SEV-ES guest was not launched with the expected firmware" in err
    assert err.rstrip().endswith(f"'{site.name}' was destroyed")
    assert site.state() == libvirt.VIR_DOMAIN_SHUTOFF and site.name not in site.host.launches
    code, out, err = site.inject()
    assert code == 2 and "is not paused before its first run" in err, err


def test_a_chip_that_did_not_take_the_owners_session_is_refused(site, chip, monkeypatch):
    """The session is in the guest, but the launch runs under keys the chip made itself (as
    when QEMU is not given the session): another TIK, and the launch is refused."""
    import libvirt

    site.build()
    _owners_session(site, chip)
    site.host.preset = GuestContext(os.urandom(16), os.urandom(16), policy=0x7)
    code, out, err = site.launch()
    assert code == 1 and "measurement does not match" in err and f"'{site.name}' was destroyed" in err, err
    assert site.state() == libvirt.VIR_DOMAIN_SHUTOFF


def test_another_firmware_on_the_host_is_refused(site, chip):
    import libvirt

    tampered = bytearray(site.firmware.read_bytes())
    tampered[4096] ^= 1
    site.build(firmware=bytes(tampered))
    _owners_session(site, chip)
    code, out, err = site.launch()
    assert code == 1 and "was not launched with the expected firmware" in err, err
    assert site.state() == libvirt.VIR_DOMAIN_SHUTOFF


def test_certificates_of_another_chip_give_a_session_this_chip_refuses(site, chip):
    """The host exported another chip's PDH (one it controls): LAUNCH_START fails, QEMU does
    not start, and the guest stays shut off."""
    import libvirt

    site.build()
    elsewhere = Platform()
    code, out, err = vscen("attest", "session", *site.session_files(elsewhere), "--connect", URI, "--domain",
                           site.name, "--tk", str(site.tk))
    assert code == 0, err
    code, out, err = site.launch()
    assert code == 7 and err.count("\n") == 1, err
    assert f"error: attest: libvirt could not start '{site.name}' paused:" in err and "LAUNCH_START" in err
    assert site.state() == libvirt.VIR_DOMAIN_SHUTOFF


def test_the_owners_packet_is_refused_by_a_chip_with_other_keys(site, chip, tmp_path):
    """A secret packet is bound to the keys and the launch: made offline for this launch with
    the owner's keys, it does not open in another launch (another nonce) of the same guest."""
    import libvirt

    site.build()
    _owners_session(site, chip)
    assert site.launch("--no-resume")[0] == 0
    report = site.host.launches[site.name].report
    header, payload = tmp_path / "hdr.b64", tmp_path / "secret.b64"
    code, out, err = vscen("attest", "verify", "--domain", site.name, "--connect", URI, "--firmware",
                           str(site.firmware), "--tk", str(site.tk), "--secret-file", str(site.secret),
                           "--secret-header", str(header), "--secret-payload", str(payload))
    assert code == 0, err
    dom = site.conn.lookupByName(site.name)
    dom.destroy()
    site.host.launches.pop(site.name)
    assert site.launch("--no-resume")[0] == 0  # a new launch: a new measurement nonce
    assert site.host.launches[site.name].report != report
    from sev_platform import SevDomain

    model = SevDomain(dom, site.host)
    with pytest.raises(libvirt.libvirtError, match="BAD_MEASUREMENT"):
        model.setLaunchSecurityState({"sev-secret-header": header.read_text().strip(),
                                      "sev-secret": payload.read_text().strip()})
    assert site.host.launches[site.name].guest.secret_area is None
    assert base64.b64decode(payload.read_text()) != PASSPHRASE


def test_building_the_command_line_loads_no_attest_command(tmp_path):
    """``vscen run secure-vm --dry-run`` (and every other command) builds vscen's command line
    without importing the attest commands' modules or ``cryptography``; ``vscen attest ...``
    loads them."""
    import subprocess
    import sys

    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith(('vscen_attest.', "
             "'cryptography'))), file=sys.stderr))\n"
             "sys.argv = ['vscen', *sys.argv[1:]]\n"
             "from vscen.cli import main\n"
             "main()\n")
    env = {**os.environ, "LIBVIRT_DEFAULT_URI": URI}

    def loaded(*args):
        run = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
        return run.returncode, run.stderr.strip().splitlines()[-1]

    code, modules = loaded("run", "secure-vm", "--dry-run", "--name", "atte2e-startup")
    # at most the group itself (vscen run builds no plugin's command group at all)
    assert code == 0 and modules in ("[]", "['vscen_attest.cli']"), modules
    code, modules = loaded("attest", "verify", "--help")
    assert code == 0 and "'vscen_attest.verify_cli'" in modules, modules
