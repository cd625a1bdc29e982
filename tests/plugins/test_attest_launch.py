"""``vscen attest launch`` and ``inject``: start paused, verify, resume or destroy; secrets.

No SEV hardware is here, and libvirt's drivers that run here cannot launch an SEV guest
(qemu:///system refuses the definition without an SEV-capable QEMU; test:///default cannot
start paused nor report launch security). So:

- the platform is modelled from the SEV API specification: ``Platform`` measures the firmware
  (LAUNCH_MEASURE) and takes a secret packet as LAUNCH_SECRET does (checks the header's MAC
  over the ciphertext and the measurement with the TIK, decrypts with the TEK), and
  ``SevDomain`` puts it in front of a real ``test:///default`` domain, whose states (paused,
  running, shut off) are libvirt's own;
- the secret table the model decrypts is read as the guest reads it (Linux's ``efi_secret``),
  and packets from libvirt's own ``virt-qemu-sev-validate`` go through the same model;
- the commands on ``test:///default`` itself end in a one-line error and leave the guest as it was.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import uuid

import pytest
from sev_platform import VALIDATE, FirmwareError, GuestContext, SevDomain, SevHost, fake_ovmf, libvirt_module, read_secret_table
from test_attest_verify import vscen

from vscen.errors import UsageError

LUKS = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")


def domain_xml(name, policy=0x1, session=True, kind="sev", vcpus=2, extra_os=""):
    ls = (f"<launchSecurity type='{kind}'><cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits>"
          f"<policy>0x{policy:04x}</policy>"
          + ("<dhCert>AAAA</dhCert><session>BBBB</session>" if session else "") + "</launchSecurity>")
    if kind == "sev-snp":
        ls = f"<launchSecurity type='sev-snp'><policy>0x{0x30000:x}</policy></launchSecurity>"
    return (f"<domain type='test'><name>{name}</name><memory>1048576</memory><vcpu>{vcpus}</vcpu>"
            "<os><type arch='x86_64'>hvm</type>"
            f"<loader readonly='yes' type='pflash'>/nonexistent/OVMF_CODE.fd</loader>{extra_os}</os>{ls}</domain>")


def host(guest: GuestContext, launched: bytes) -> SevHost:
    """A host whose chip runs every launch with *guest*'s keys, over *launched*."""
    return SevHost(guest=guest, data=launched)


@pytest.fixture
def conn():
    import libvirt

    c = libvirt.open("test:///default")
    yield c
    c.close()


@pytest.fixture
def keys(tmp_path):
    tek, tik = os.urandom(16), os.urandom(16)
    path = tmp_path / "tk"
    path.write_bytes(tek + tik)
    path.chmod(0o600)
    firmware = tmp_path / "OVMF.fd"
    firmware.write_bytes(fake_ovmf())
    return tik, tek, path, firmware


def _given(firmware, **kw):
    from vscen_attest.launch import Given

    return Given(firmware=firmware, **kw)


def _keys(tik, tek):
    from vscen_attest.measure import Keys

    return Keys(tik=tik, tek=tek)


def test_launch_verifies_then_resumes_and_inject_delivers(conn, keys, tmp_path):
    """The owner's whole flow against the model: launch (paused), inject, the guest runs with
    the secret in its secret area where the firmware puts it."""
    import libvirt
    from vscen_attest import launch, secret

    tik, tek, _, firmware = keys
    psp = GuestContext(tik, tek)
    dom = SevDomain(conn.defineXML(domain_xml("attv-good")), host(psp, firmware.read_bytes()))
    said = []
    launch.launch_domain(dom, "test:///default", _given(firmware), _keys(tik, tek), resume=False,
                         say=said.append, note=said.append)
    assert dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED and not dom.launch.finished
    with pytest.raises(UsageError, match="is started already .paused.: give it its secret with 'vscen attest inject"):
        launch.launch_domain(dom, "test:///default", _given(firmware), _keys(tik, tek))
    luks = b"correct horse battery staple"
    launch.inject_domain(dom, "test:///default", _given(firmware), _keys(tik, tek),
                         [(secret.ALIASES["luks-key"], luks), (uuid.UUID(int=7), b"\x00\x01two")],
                         say=said.append, note=said.append)
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING and dom.launch.finished
    assert read_secret_table(psp.secret_area) == {LUKS: luks, uuid.UUID(int=7): b"\x00\x01two"}
    assert not any(luks.decode() in line for line in said)
    assert "attv-good: measurement verified (SEV, policy 0x0001, platform API 1.51 build 3)" in said


def test_launch_resumes_when_the_measurement_matches(conn, keys):
    import libvirt
    from vscen_attest import launch

    tik, tek, _, firmware = keys
    dom = SevDomain(conn.defineXML(domain_xml("attv-resume")), host(GuestContext(tik, tek), firmware.read_bytes()))
    launch.launch_domain(dom, "test:///default", _given(firmware), _keys(tik, tek), say=lambda _m: None)
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING


@pytest.mark.parametrize("what", ["firmware", "tik", "policy-es-without-cpus"])
def test_launch_destroys_a_guest_that_does_not_match(what, conn, keys):
    import libvirt
    from vscen_attest import launch
    from vscen_attest.measure import AttestationError

    tik, tek, _, firmware = keys
    launched = firmware.read_bytes()
    psp = GuestContext(tik, tek)
    if what == "firmware":
        launched = launched[:-1] + b"\x00"  # the host launched another firmware
    elif what == "tik":
        psp.tik = os.urandom(16)  # another session than the owner's
    else:
        psp.policy = 0x5  # the report says SEV-ES: its vCPUs are measured, and the host CPU is unknown here
    dom = SevDomain(conn.defineXML(domain_xml("attv-bad-" + what)), host(psp, launched))
    error = AttestationError if what != "policy-es-without-cpus" else UsageError
    with pytest.raises(error) as exc:
        launch.launch_domain(dom, "test:///default", _given(firmware), _keys(tik, tek), say=lambda _m: None,
                             note=lambda _m: None, host_cpu=lambda: (_ for _ in ()).throw(
                                 UsageError("--cpu-family/--cpu-model/--cpu-stepping: missing")))
    assert str(exc.value).endswith(f"'attv-bad-{what}' was destroyed")
    assert dom.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF


@pytest.mark.skipif(not VALIDATE.exists(), reason="virt-qemu-sev-validate is not installed")
def test_launch_sev_es_with_host_cpu(conn, keys):
    """SEV-ES: the vCPU count from the definition, the CPU signature from the host."""
    import libvirt
    from vscen_attest import launch

    tik, tek, _, firmware = keys
    mod = libvirt_module()
    cvm = mod.OfflineConfidentialVM(policy=0x7, num_cpus=3)
    cvm.firmware = firmware.read_bytes()
    cvm.build_vmsas(25, 1, 1)
    psp = GuestContext(tik, tek, policy=0x7)
    dom = SevDomain(conn.defineXML(domain_xml("attv-es", policy=0x7, vcpus=3)), host(psp, cvm.get_measured_data()))
    notes = []
    launch.launch_domain(dom, "test:///default", _given(firmware), _keys(tik, tek), host_cpu=lambda: (25, 1, 1),
                         say=lambda _m: None, note=notes.append)
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert "vCPUs from the guest's definition: 3" in notes


def test_inject_refuses_a_tampered_guest_and_a_running_one(conn, keys):
    import libvirt
    from vscen_attest import launch, secret
    from vscen_attest.measure import AttestationError

    tik, tek, _, firmware = keys
    psp = GuestContext(tik, tek)
    dom = SevDomain(conn.defineXML(domain_xml("attv-inject")), host(psp, firmware.read_bytes() + b"x"))
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)  # started by someone else, with another firmware
    with pytest.raises(AttestationError):
        launch.inject_domain(dom, "test:///default", _given(firmware), _keys(tik, tek),
                             [(secret.ALIASES["luks-key"], b"k")], note=lambda _m: None)
    assert psp.secret_area is None and dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED
    dom.resume()
    with pytest.raises(UsageError, match="is not paused before its first run"):
        launch.inject_domain(dom, "test:///default", _given(firmware), _keys(tik, tek),
                             [(secret.ALIASES["luks-key"], b"k")])
    with pytest.raises(UsageError, match="is running: its launch was measured when it started"):
        launch.launch_domain(dom, "test:///default", _given(firmware), _keys(tik, tek))
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_inject_needs_a_secret_area_in_the_firmware(conn, keys, tmp_path):
    """OVMF's generic builds (Debian's OVMF_CODE.fd) reserve no launch secret page: QEMU would
    not know where the secret goes. Refused before anything is sent; the guest stays paused."""
    import libvirt
    from vscen_attest import launch, secret

    tik, tek, _, _ = keys
    generic = tmp_path / "OVMF_CODE.fd"
    generic.write_bytes(fake_ovmf(secret_area=(0, 0)))
    small = tmp_path / "small.fd"
    small.write_bytes(fake_ovmf(secret_area=(0x80D000, 32)))
    for firmware, words in ((generic, "is missing or empty"), (small, "big enough (32 bytes for 48)")):
        psp = GuestContext(tik, tek)
        dom = SevDomain(conn.defineXML(domain_xml("attv-area-" + firmware.stem.replace("_", "-"))),
                        host(psp, firmware.read_bytes()))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        with pytest.raises(UsageError, match="no launch secret area") as exc:
            launch.inject_domain(dom, "test:///default", _given(firmware), _keys(tik, tek),
                                 [(secret.ALIASES["luks-key"], b"k")], note=lambda _m: None)
        assert words in str(exc.value) and "OvmfPkg/AmdSev" in str(exc.value)
        assert psp.secret_area is None and dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED
        dom.destroy()


@pytest.mark.parametrize(("xml", "words"), [
    (domain_xml("attv-nosession", session=False), ["no launch session", "vscen attest session"]),
    ("<domain type='test'><name>attv-plain</name><memory>1024</memory><os><type>hvm</type></os></domain>",
     ["no AMD SEV launch security"]),
])
def test_launch_refuses_what_cannot_be_attested(xml, words, conn, keys):
    import libvirt
    from vscen_attest import launch

    tik, tek, _, firmware = keys
    dom = conn.defineXML(xml)
    with pytest.raises(UsageError) as exc:
        launch.launch_domain(dom, "test:///default", _given(firmware), _keys(tik, tek))
    for word in words:
        assert word in str(exc.value)
    assert dom.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF


def test_firmware_from_the_host_only_with_insecure(conn, keys):
    from vscen_attest import launch

    tik, tek, _, firmware = keys
    xml = domain_xml("attv-hostfw").replace("/nonexistent/OVMF_CODE.fd", str(firmware))
    with pytest.raises(UsageError, match="--firmware: missing: give your own copy"):
        launch.expectation(_given(None), xml)
    notes = []
    got = launch.expectation(_given(None, insecure=True), xml, note=notes.append)
    assert got.firmware == firmware.read_bytes()
    assert notes == [f"trusting the host for firmware: {firmware}", "vCPUs from the guest's definition: 2"]
    with pytest.raises(UsageError, match="cannot be read over a remote connection"):
        launch.expectation(_given(None, insecure=True), xml, local=False)
    # a measured direct kernel boot needs its kernel; an unmeasured one is noted
    measured = xml.replace("<launchSecurity type='sev'>", "<launchSecurity type='sev' kernelHashes='yes'>")
    with pytest.raises(UsageError, match="--kernel: missing"):
        launch.expectation(_given(firmware), measured)
    with pytest.raises(UsageError, match="does not measure its kernel"):
        launch.expectation(_given(firmware, kernel=firmware), xml)


@pytest.mark.parametrize("kind", ["sev-snp", "tdx"])
def test_guests_that_attest_themselves(kind):
    """libvirt 9.0 here knows neither; newer ones do, and such guests attest from inside."""
    from vscen_attest import launch

    with pytest.raises(UsageError, match=f"is a {kind} guest: it attests itself from inside"):
        launch.check_sev("g", domain_xml("g").replace("type='sev'", f"type='{kind}'"))


# -- the secret packet ----------------------------------------------------------------------

def test_packet_is_what_launch_secret_takes():
    from vscen_attest import secret

    tik, tek, measurement = os.urandom(16), os.urandom(16), os.urandom(32)
    psp = GuestContext(tik, tek)
    value = os.urandom(33)
    packet = secret.pack(tik, tek, measurement, [(LUKS, value)])
    psp.launch_secret(packet.header, packet.payload, measurement)
    assert read_secret_table(psp.secret_area) == {LUKS: value}
    assert len(packet.payload) % 16 == 0 and packet.payload != psp.secret_area
    # bound to the measurement, and to the TIK
    with pytest.raises(FirmwareError, match="BAD_MEASUREMENT"):
        psp.launch_secret(packet.header, packet.payload, os.urandom(32))
    with pytest.raises(FirmwareError, match="BAD_MEASUREMENT"):
        GuestContext(os.urandom(16), tek).launch_secret(packet.header, packet.payload, measurement)
    # a fresh IV each time
    assert secret.pack(tik, tek, measurement, [(LUKS, value)]).header[4:20] != packet.header[4:20]
    assert value.hex() not in repr(packet) and "secret" in repr(_keys(tik, tek))


@pytest.mark.skipif(not VALIDATE.exists(), reason="virt-qemu-sev-validate is not installed")
def test_the_model_takes_libvirts_packets(tmp_path):
    """virt-qemu-sev-validate's own secret packet, through the same platform model (the model
    is the specification's, not vscen's)."""
    tek, tik = os.urandom(16), os.urandom(16)
    for name, data in (("tk", tek + tik), ("fw", fake_ovmf()), ("luks", b"hunter2")):
        (tmp_path / name).write_bytes(data)
    measurement = GuestContext(tik).measure((tmp_path / "fw").read_bytes())
    run = subprocess.run([sys.executable, str(VALIDATE), "--measurement", measurement, "--api-major", "1",
                          "--api-minor", "51", "--build-id", "3", "--policy", "1", "--firmware", str(tmp_path / "fw"),
                          "--tk", str(tmp_path / "tk"), "--inject-secret", f"luks-key:{tmp_path / 'luks'}",
                          "--secret-header", str(tmp_path / "h"), "--secret-payload", str(tmp_path / "p")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    psp = GuestContext(tik, tek)
    psp.launch_secret(base64.b64decode((tmp_path / "h").read_bytes()), base64.b64decode((tmp_path / "p").read_bytes()),
                      base64.b64decode(measurement)[:32])
    assert read_secret_table(psp.secret_area) == {LUKS: b"hunter2"}


def test_secret_table_limits():
    from vscen_attest import secret

    assert secret.guid_of("luks-key") == LUKS
    assert secret.guid_of(str(uuid.UUID(int=5))) == uuid.UUID(int=5)
    with pytest.raises(UsageError, match="--guid: 'disk' is not allowed"):
        secret.guid_of("disk")
    with pytest.raises(UsageError, match="given twice"):
        secret.secret_table([(LUKS, b"a"), (LUKS, b"b")])
    with pytest.raises(UsageError, match="4096 bytes"):
        secret.secret_table([(LUKS, bytes(5000))])
    table = secret.secret_table([(LUKS, b"abc")])
    assert len(table) == 48 and read_secret_table(table) == {LUKS: b"abc"}
    assert hashlib.sha256(table).digest()  # deterministic layout: no randomness before encryption
    assert secret.secret_table([(LUKS, b"abc")]) == table


# -- the commands on libvirt's test driver, as far as it goes -------------------------------

def test_commands_on_the_test_driver(conn, keys, tmp_path):
    """test:///default cannot start a guest paused nor report launch security: one-line
    errors, exit 7, the guest left as it was, the secret nowhere in the output."""
    import libvirt

    tik, tek, tk, firmware = keys
    dom = conn.defineXML(domain_xml("attv-cli"))
    code, out, err = vscen("attest", "launch", "attv-cli", "--connect", "test:///default",
                           "--firmware", str(firmware), "--tk", str(tk))
    assert code == 7 and err.count("\n") == 1, err
    assert err.startswith("error: attest: libvirt could not start 'attv-cli' paused: unsupported flags"), err
    assert dom.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF

    luks = tmp_path / "luks"
    luks.write_text("s3cret-passphrase")
    luks.chmod(0o600)
    code, out, err = vscen("attest", "inject", "attv-cli", "--connect", "test:///default", "--firmware", str(firmware),
                           "--tk", str(tk), "--secret-file", str(luks))
    assert code == 2 and "is not paused before its first run" in err, err
    dom.create()
    dom.suspend()
    code, out, err = vscen("attest", "inject", "attv-cli", "--connect", "test:///default", "--firmware", str(firmware),
                           "--tk", str(tk), "--secret-file", str(luks))
    assert code == 7 and err.count("\n") == 1, err
    assert "test:///default cannot report the launch measurement of 'attv-cli'" in err
    assert "s3cret" not in out + err
    assert dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED
    dom.destroy()

    luks.chmod(0o644)
    code, out, err = vscen("attest", "inject", "attv-cli", "--connect", "test:///default", "--firmware", str(firmware),
                           "--tk", str(tk), "--secret-file", str(luks))
    assert code == 2 and "--secret-file" in err and "read by others" in err, err
    luks.chmod(0o600)
    code, out, err = vscen("attest", "inject", "attv-cli", "--connect", "test:///default", "--firmware", str(firmware),
                           "--tik", str(tk), "--secret-file", str(luks))
    assert code == 2 and "--tek: missing" in err, err
    code, out, err = vscen("attest", "inject", "attv-cli", "--firmware", str(firmware), "--tk", str(tk),
                           "--secret-file", str(luks), "--secret-file", str(luks))
    assert code == 2 and "--guid: 0 given for 2 --secret-file" in err, err


def test_host_cpu_signature_from_libvirt(conn):
    """The host CPU's family/model/stepping from libvirt's capabilities (SEV-ES's vCPU state):
    test:///default reports none (a one-line UsageError asking for them); a real daemon does."""
    import libvirt
    from vscen_attest import launch

    with pytest.raises(UsageError, match="--cpu-family/--cpu-model/--cpu-stepping: missing"):
        launch.host_cpu_of(conn)()
    try:
        system = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        pytest.skip("no libvirt daemon at qemu:///system")
    try:
        if "<signature " not in system.getCapabilities():
            pytest.skip("this libvirt reports no CPU signature")
        notes = []
        family, model, stepping = launch.host_cpu_of(system, notes.append)()
        assert 0 < family <= 270 and 0 <= model <= 255 and 0 <= stepping <= 15
        assert notes == [f"host CPU signature from libvirt: family {family}, model {model}, stepping {stepping}"]
    finally:
        system.close()


def test_offline_packet_for_virsh(keys, tmp_path):
    """verify --secret-file: once valid, the packet for 'virsh domsetlaunchsecstate' (base64
    files, mode 600); nothing written when the measurement does not match; existing files only
    with --force."""
    tik, tek, tk, firmware = keys
    measurement = GuestContext(tik).measure(firmware.read_bytes())
    luks = tmp_path / "luks"
    luks.write_bytes(b"open sesame")
    luks.chmod(0o600)
    header, payload = tmp_path / "hdr.b64", tmp_path / "secret.b64"
    args = ["attest", "verify", "--measurement", measurement, "--api-major", "1", "--api-minor", "51",
            "--build-id", "3", "--policy", "1", "--firmware", str(firmware), "--tk", str(tk),
            "--secret-file", str(luks), "--secret-header", str(header), "--secret-payload", str(payload)]
    code, out, err = vscen(*args)
    assert code == 0, err
    assert "virsh domsetlaunchsecstate DOMAIN --secrethdr hdr.b64 --secret secret.b64" in out
    assert "open sesame" not in out + err
    assert header.stat().st_mode & 0o777 == 0o600 and payload.stat().st_mode & 0o777 == 0o600
    psp = GuestContext(tik, tek)
    psp.launch_secret(base64.b64decode(header.read_text()), base64.b64decode(payload.read_text()),
                      base64.b64decode(measurement)[:32])
    assert read_secret_table(psp.secret_area) == {LUKS: b"open sesame"}

    code, out, err = vscen(*args)
    assert code == 6 and "--secret-header" in err and "--force" in err, err
    before = header.read_text()
    code, out, err = vscen(*args, "--force", "--build-id", "4")  # another build: no match, nothing written
    assert code == 1 and header.read_text() == before, err
    header.unlink()
    payload.unlink()
    code, out, err = vscen(*args[:-4])
    assert code == 2 and "--secret-header/--secret-payload: missing" in err, err
    code, out, err = vscen(*[a for a in args if a not in ("--secret-file", str(luks))])
    assert code == 2 and "not allowed without --secret-file" in err, err
    assert not header.exists() and not payload.exists()
    payload.mkdir()  # cannot be written: one line, and the header taken back
    code, out, err = vscen(*args, "--force")
    assert code == 2 and err.startswith(f"error: --secret-payload: cannot write {payload}") and err.count("\n") == 1, err
    assert not header.exists()
