"""``vscen attest session``: SEV certificates, chain verification up to AMD's keys, and the
guest owner's LAUNCH_START session, checked against a software model of the platform
(sev_platform.py) and against real chains exported from real Naples and Rome machines."""

from __future__ import annotations

import base64
import stat
import struct
from pathlib import Path

import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st
from sev_platform import FirmwareError, Platform
from typer.testing import CliRunner

from vscen import ExistsError, HostError, UsageError

pytest.importorskip("cryptography")

from vscen_attest import certs, session  # noqa: E402

REAL = DATA / "attest"
TEST_URI = "test:///default"


def real_certs(gen: str) -> list[bytes]:
    return [(REAL / gen / f"{n}.cert").read_bytes() for n in ("pdh", "pek", "oca", "cek")]


def real_chain(gen: str) -> certs.Chain:
    return certs.assemble([certs.parse_sev_cert(b) for b in real_certs(gen)], gen)


@pytest.fixture(scope="module")
def platform():
    return Platform()


def model_chain(p: Platform) -> certs.Chain:
    return certs.assemble(certs.split(p.pdh + p.cert_chain, "model"), "model")


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1:]


# -- the SEV KDF and key wrapping: virtee/sev's known answers (src/session/{key,mod}.rs) -------------


def test_kdf_and_wrap_give_virtees_known_answers():
    assert session.kdf(bytes(16), b"sev-master-secret", bytes(16)).hex() == "ab4d269fcc62bedb4511d56c386ce706"
    blob = session.wrap(bytes(16), 0, bytes(16), bytes(16), bytes(16), bytes(16))
    assert len(blob) == session.SESSION_SIZE and blob[:16] == bytes(16) and blob[48:64] == bytes(16)
    assert blob[16:48].hex() == "2137bc7f9bb8bd7c3e55a576a15d3454b3856b8ba27afadf46dcfee9f02c02c4"
    assert blob[64:96].hex() == "3176c0752738bd9d5e86689534020f528c088f16238826b000b327dee6aeed7d"
    assert blob[96:].hex() == "aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af"


# -- AMD's shipped root keys and real platforms' chains ----------------------------------------------


@pytest.mark.parametrize("gen", certs.GENERATIONS)
def test_shipped_ark_signs_itself_and_its_ask(gen):
    ark, ask = certs.anchors(gen)
    assert (ark.name, ask.name) == ("ARK", "ASK")
    assert ark.bits == (2048 if gen == "naples" else 4096) == ask.bits
    assert certs.signed_by(ark, ark) and certs.signed_by(ark, ask)
    assert not certs.signed_by(ask, ask)  # an ASK signs chips, not itself
    other = certs.anchors("rome" if gen != "rome" else "milan")[0]
    assert not certs.signed_by(other, ask)


def test_shipped_naples_ark_is_amds_file_with_the_signature_amd_supplied():
    amd = (REAL / "naples" / "ark.cert.amd").read_bytes()
    sig = (REAL / "naples" / "ark.cert.sig").read_bytes()
    assert certs.anchors("naples")[0].raw == amd + sig
    with pytest.raises(certs.CertError, match="an RSA-2048 ARK has 832"):
        certs.parse_ca_cert(amd, "AMD's Naples ARK")


@pytest.mark.parametrize("gen,api", [("naples", (0, 16)), ("rome", (0, 22))])
def test_real_chains_verify_up_to_amds_keys_of_their_generation(gen, api):
    chain = real_chain(gen)
    assert certs.verify(chain) == gen
    assert certs.verify(chain, gen) == gen
    assert chain.pdh.api == api and chain.pdh.algo == certs.ALGO[("ecdh", "sha256")]


def test_a_chain_of_another_generation_is_refused_naming_the_right_one():
    with pytest.raises(certs.CertError) as err:
        certs.verify(real_chain("rome"), "milan")
    assert str(err.value) == ("certificate chain: the CEK is not signed by the Milan ASK: it is signed by "
                              "AMD's Rome ASK (--generation rome)")


@pytest.mark.parametrize("which,offset,problem", [
    ("pdh", 5, "the PDH is not signed by the PEK"),
    ("pek", 5, "the PEK is not signed by the OCA"),
    ("oca", 5, "the OCA is not self-signed"),
    ("cek", 5, "the CEK is not signed by the Naples or Rome or Milan or Genoa or Turin ASK: the chip is not "
                "vouched for by AMD"),
    ("pek", 1600, "the PEK is not signed by the CEK"),  # the CEK's signature slot
])
def test_a_tampered_real_chain_is_refused_naming_the_broken_link(which, offset, problem):
    parts = dict(zip(("pdh", "pek", "oca", "cek"), real_certs("rome"), strict=True))
    parts[which] = flip(parts[which], offset)
    with pytest.raises(certs.CertError) as err:
        certs.verify(certs.assemble([certs.parse_sev_cert(b) for b in parts.values()], "rome"))
    assert str(err.value).startswith(f"certificate chain: {problem}")


def test_a_pdh_key_off_the_curve_is_refused():
    pdh = bytearray(real_certs("rome")[0])
    pdh[20] ^= 1  # x changes, y does not: no longer a point of P-384
    with pytest.raises(certs.CertError, match="PDH certificate: its public key is not a point on P-384"):
        certs.parse_sev_cert(bytes(pdh)).public_key()


def test_malformed_certificates_are_refused_with_what_is_wrong():
    pdh = real_certs("rome")[0]
    with pytest.raises(certs.CertError, match=r"--pdh .x. \(at byte 0\): 100 bytes, an SEV certificate has 2084"):
        certs.split(pdh[:100], "--pdh 'x'")
    with pytest.raises(certs.CertError, match="version 2, only version 1"):
        certs.parse_sev_cert(struct.pack("<I", 2) + pdh[4:])
    with pytest.raises(certs.CertError, match=r"an RSA-4096 ASK has 1600"):
        certs.split(pdh + certs.anchors("rome")[1].raw[:1000], "chain")
    with pytest.raises(certs.CertError, match="no PEK, OCA, CEK certificate"):
        certs.assemble(certs.split(pdh, "x"), "x")
    other = real_certs("naples")[0]
    with pytest.raises(certs.CertError, match="two different PDH certificates"):
        certs.assemble(certs.split(pdh + other, "x"), "x")


def test_a_file_with_an_ark_that_is_not_amds_is_refused():
    ark, ask = certs.anchors("rome")
    good = certs.split(b"".join(real_certs("rome")) + ask.raw + ark.raw, "sevctl export --full")
    assert certs.verify(certs.assemble(good, "x")) == "rome"
    fake = certs.split(b"".join(real_certs("rome")) + ask.raw + certs.anchors("milan")[0].raw, "x")
    with pytest.raises(certs.CertError, match="the ARK in the file is not AMD's rome ARK"):
        certs.verify(certs.assemble(fake, "x"))


# -- the session against the platform model ---------------------------------------------------------


def test_the_platform_unwraps_the_same_tek_and_tik_the_owner_keeps(platform):
    chain = model_chain(platform)
    assert certs.verify(chain, trust=platform.anchors()) == "testgen"
    s = session.create(chain.pdh, 0x0007)
    assert len(s.dh_cert) == certs.SEV_CERT_SIZE and len(s.blob) == 128
    got = platform.launch_start(0x0007, s.dh_cert, s.blob)
    assert (got.tek, got.tik) == (s.tek, s.tik) and s.tk == s.tek + s.tik
    # the owner's DH certificate is one the verifier reads back: a PDH-usage ECDH P-384 key, no signatures
    dh = certs.parse_sev_cert(s.dh_cert)
    assert (dh.name, dh.sigs) == ("PDH", ())
    dh.public_key()
    # every session is new: keys, nonce and owner key pair
    again = session.create(chain.pdh, 0x0007)
    assert again.tk != s.tk and again.blob[:16] != s.blob[:16] and again.dh_cert != s.dh_cert


@pytest.mark.parametrize("offset,status", [
    (0, "BAD_MEASUREMENT"),  # nonce: other KEK/KIK
    (20, "BAD_MEASUREMENT"),  # wrapped keys
    (50, "POLICY_FAILURE"),  # IV: the keys decrypt to others, whose policy MAC fails
    (70, "BAD_MEASUREMENT"),  # the wrap MAC itself
    (100, "POLICY_FAILURE"),  # the policy MAC
])
def test_the_platform_refuses_a_tampered_session(platform, offset, status):
    s = session.create(model_chain(platform).pdh, 0x0003)
    with pytest.raises(FirmwareError, match=status):
        platform.launch_start(0x0003, s.dh_cert, flip(s.blob, offset))


def test_the_platform_refuses_another_policy_and_another_owner_key(platform):
    s = session.create(model_chain(platform).pdh, 0x0003)
    with pytest.raises(FirmwareError, match="POLICY_FAILURE"):
        platform.launch_start(0x0007, s.dh_cert, s.blob)  # the host asks for SEV-ES: not what the owner signed
    other = session.create(model_chain(platform).pdh, 0x0003)
    with pytest.raises(FirmwareError, match="BAD_MEASUREMENT"):
        platform.launch_start(0x0003, other.dh_cert, s.blob)


def test_a_session_for_another_platform_does_not_open_on_this_one(platform):
    elsewhere = Platform()
    s = session.create(model_chain(elsewhere).pdh, 0x0003)
    with pytest.raises(FirmwareError, match="BAD_MEASUREMENT"):
        platform.launch_start(0x0003, s.dh_cert, s.blob)


def test_the_model_chain_is_not_trusted_with_amds_keys(platform):
    with pytest.raises(certs.CertError, match="the chip is not vouched for by AMD"):
        certs.verify(model_chain(platform))


@pytest.mark.parametrize("text,message", [
    ("0x0003", None), ("7", None), ("0x00170007", None),
    ("sev", "is not a number"), ("0x40", "sets reserved bits 6-15"), ("0x100000000", "is not a 32-bit value"),
])
def test_policies(text, message):
    if message is None:
        assert session.parse_policy(text) == int(text, 0)
    else:
        with pytest.raises(UsageError, match=message):
            session.parse_policy(text)
    assert session.describe_policy(0x00170007) == "NODBG+NOKS+ES, firmware >= 23.0"


# -- the command ---------------------------------------------------------------------------------


def cli(*args):
    from vscen.cli import app

    return CliRunner().invoke(app, ["attest", "session", *map(str, args)])


def code(res) -> int:
    """The exit status ``vscen`` gives (its main() turns vscen's errors into their exit codes)."""
    return getattr(res.exception, "exit_code", res.exit_code)


def write_model(p: Platform, tmp_path: Path) -> dict[str, Path]:
    files = {"pdh": tmp_path / "pdh.b64", "chain": tmp_path / "chain.b64", "roots": tmp_path / "ask_ark.cert"}
    files["pdh"].write_text(base64.b64encode(p.pdh).decode())  # libvirt's values, saved as they come
    files["chain"].write_text(base64.b64encode(p.cert_chain).decode())
    files["roots"].write_bytes(p.ask + p.ark)  # AMD's published layout: ASK then ARK
    return files


def test_session_from_files_gives_the_platform_its_keys(platform, tmp_path):
    f = write_model(platform, tmp_path)
    tk = tmp_path / "guest.tk"
    res = cli("--pdh", f["pdh"], "--cert-chain", f["chain"], "--ark-ask", f["roots"], "--tk", tk,
              "--dh-cert", tmp_path / "godh.b64", "--session", tmp_path / "session.b64", "--policy", "0x0007")
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(tk.stat().st_mode) == 0o600 and tk.stat().st_size == 32
    dh = base64.b64decode((tmp_path / "godh.b64").read_text())
    blob = base64.b64decode((tmp_path / "session.b64").read_text())
    got = platform.launch_start(0x0007, dh, blob)
    assert tk.read_bytes() == got.tek + got.tik  # virt-qemu-sev-validate --tk: TEK then TIK
    assert "policy 0x0007 (NODBG+NOKS+ES)" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ask_ark.cert", "chain.b64", "godh.b64", "guest.tk",
                                                          "pdh.b64", "session.b64"]  # no temporary left


def test_session_prints_the_launch_security_xml_without_output_files(platform, tmp_path):
    from lxml import etree

    f = write_model(platform, tmp_path)
    res = cli("--pdh", f["pdh"], "--cert-chain", f["chain"], "--ark-ask", f["roots"], "--tk", tmp_path / "t.tk")
    assert res.exit_code == 0, res.output
    ls = etree.fromstring(res.stdout.encode())
    assert ls.findtext("policy") == "0x0003"
    platform.launch_start(0x0003, base64.b64decode(ls.findtext("dhCert")), base64.b64decode(ls.findtext("session")))
    assert platform.guest.tek + platform.guest.tik == (tmp_path / "t.tk").read_bytes()
    assert (tmp_path / "t.tk").read_bytes().hex() not in res.output


def test_session_never_overwrites_the_owners_keys_without_force(platform, tmp_path):
    f = write_model(platform, tmp_path)
    tk = tmp_path / "guest.tk"
    tk.write_bytes(b"keep")
    args = ("--pdh", f["pdh"], "--cert-chain", f["chain"], "--ark-ask", f["roots"], "--tk", tk)
    res = cli(*args)
    assert code(res) == 6 and isinstance(res.exception, ExistsError)
    assert str(res.exception) == f"--tk: '{tk}' exists (the TEK/TIK of another session?); give --force to replace it"
    assert tk.read_bytes() == b"keep"
    assert cli(*args, "--force").exit_code == 0 and tk.stat().st_size == 32
    assert stat.S_IMODE(tk.stat().st_mode) == 0o600


def test_session_with_a_real_sevctl_export_and_amds_keys(tmp_path):
    ark, ask = certs.anchors("rome")
    exported = tmp_path / "rome.chain"
    exported.write_bytes(b"".join(real_certs("rome")) + ask.raw + ark.raw)  # sevctl export --full
    res = cli("--cert-chain", exported, "--tk", tmp_path / "t.tk", "--json")
    assert res.exit_code == 0, res.output
    import json

    out = json.loads(res.stdout)
    assert (out["generation"], out["api"], out["policy"]) == ("rome", [0, 22], "0x0003")
    assert len(base64.b64decode(out["session"])) == 128


def test_session_refuses_a_real_chain_of_another_generation_and_leaves_no_key(tmp_path):
    exported = tmp_path / "naples.chain"
    exported.write_bytes(b"".join(real_certs("naples")))
    res = cli("--cert-chain", exported, "--tk", tmp_path / "t.tk", "--generation", "genoa")
    assert code(res) == 2
    assert str(res.exception) == ("certificate chain: the CEK is not signed by the Genoa ASK: it is signed by "
                                  "AMD's Naples ASK (--generation naples)")
    assert not (tmp_path / "t.tk").exists()
    res = cli("--cert-chain", exported, "--tk", tmp_path / "t.tk", "--generation", "zen9")
    assert code(res) == 2 and "--generation: 'zen9' is not one of naples, rome, milan, genoa, turin" in str(res.exception)


def test_session_refuses_a_connection_without_sev(tmp_path):
    res = cli("--connect", TEST_URI, "--tk", tmp_path / "t.tk")
    assert code(res) == 4 and isinstance(res.exception, HostError)
    assert str(res.exception).startswith("attest: test:///default gives no SEV platform certificates (virNodeGetSEVInfo:")
    assert not (tmp_path / "t.tk").exists()


@pytest.fixture
def test_conn():
    import libvirt

    conn = libvirt.open(TEST_URI)  # keeps the test driver's state while the command runs
    made = []
    conn.made = made
    yield conn
    for dom in made:
        dom.undefine()
    conn.close()


def define(conn, name: str, launch_security: str):
    dom = conn.defineXML(f"<domain type='test'><name>{name}</name><memory>131072</memory><os><type>hvm</type></os>"
                         f"{launch_security}</domain>")
    conn.made.append(dom)
    return dom


SEV_ES = "<launchSecurity type='sev'><cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits><policy>0x0007</policy></launchSecurity>"


def test_session_into_a_defined_guest_takes_its_policy(platform, tmp_path, test_conn):
    from lxml import etree

    dom = define(test_conn, "attest-session-es", SEV_ES)
    f = write_model(platform, tmp_path)
    args = ("--pdh", f["pdh"], "--cert-chain", f["chain"], "--ark-ask", f["roots"], "--connect", TEST_URI,
            "--domain", "attest-session-es")
    res = cli(*args, "--tk", tmp_path / "a.tk")
    assert res.exit_code == 0, res.output
    ls = etree.fromstring(dom.XMLDesc(0).encode()).find("launchSecurity")
    assert [el.tag for el in ls] == ["cbitpos", "reducedPhysBits", "policy", "dhCert", "session"]
    platform.launch_start(0x0007, base64.b64decode(ls.findtext("dhCert")), base64.b64decode(ls.findtext("session")))
    assert platform.guest.tek + platform.guest.tik == (tmp_path / "a.tk").read_bytes()

    # another session for the same guest: refused without --force, and no orphaned key file
    res = cli(*args, "--tk", tmp_path / "b.tk")
    assert code(res) == 6 and "has a <dhCert> of another session; give --force" in str(res.exception)
    assert not (tmp_path / "b.tk").exists()
    # a policy other than the guest's is refused before anything is written
    res = cli(*args, "--tk", tmp_path / "c.tk", "--policy", "0x0003", "--force")
    assert code(res) == 2 and str(res.exception) == (
        "--policy: '0x0003' is not the policy of 'attest-session-es' (0x0007); the firmware refuses a session "
        "made for another policy")
    assert not (tmp_path / "c.tk").exists()


@pytest.mark.parametrize("launch_security,kind", [("", "none"), (
    "<launchSecurity type='s390-pv'/>", "type 's390-pv'")])
def test_session_refuses_a_guest_without_sev(platform, tmp_path, test_conn, launch_security, kind):
    define(test_conn, "attest-session-plain", launch_security)
    f = write_model(platform, tmp_path)
    res = cli("--pdh", f["pdh"], "--cert-chain", f["chain"], "--ark-ask", f["roots"], "--connect", TEST_URI,
              "--domain", "attest-session-plain", "--tk", tmp_path / "t.tk")
    assert code(res) == 2 and str(res.exception).startswith(
        f"attest: 'attest-session-plain' has launch security {kind}; a session is for an SEV or SEV-ES guest")
    assert not (tmp_path / "t.tk").exists()


def test_set_session_puts_an_owners_files_into_a_guest(platform, tmp_path, test_conn):
    from lxml import etree

    dom = define(test_conn, "attest-set-session", SEV_ES)
    f = write_model(platform, tmp_path)  # the owner, elsewhere, from the exported certificates
    res = cli("--pdh", f["pdh"], "--cert-chain", f["chain"], "--ark-ask", f["roots"], "--tk", tmp_path / "o.tk",
              "--policy", "0x0007", "--dh-cert", tmp_path / "godh.b64", "--session", tmp_path / "session.b64")
    assert res.exit_code == 0, res.output
    from vscen.cli import app

    def set_session(*args):
        return CliRunner().invoke(app, ["attest", "set-session", "attest-set-session", "--connect", TEST_URI,
                                        "--dh-cert", str(tmp_path / "godh.b64"), *map(str, args)])

    res = set_session("--session", tmp_path / "session.b64", "--policy", "0x0003")
    assert code(res) == 2 and "--policy: '0x0003' is not the policy of 'attest-set-session' (0x0007)" in str(res.exception)
    (tmp_path / "short.b64").write_text(base64.b64encode(bytes(100)).decode())
    res = set_session("--session", tmp_path / "short.b64", "--policy", "0x0007")
    assert code(res) == 2 and str(res.exception).endswith("holds 100 bytes, a launch session blob has 128")
    res = set_session("--session", tmp_path / "session.b64", "--policy", "0x0007")
    assert res.exit_code == 0, res.output
    ls = etree.fromstring(dom.XMLDesc(0).encode()).find("launchSecurity")
    platform.launch_start(0x0007, base64.b64decode(ls.findtext("dhCert")), base64.b64decode(ls.findtext("session")))
    assert platform.guest.tek + platform.guest.tik == (tmp_path / "o.tk").read_bytes()


# -- what comes from the host is input: nothing in it may crash the verifier -----------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_are_certificates_or_a_clear_refusal(data):
    try:
        found = certs.split(data, "f")
    except certs.CertError:
        return
    assert sum(len(c.raw) for c in found) == len(data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(("pdh", "pek", "oca", "cek")), st.integers(0, certs.SEV_CERT_SIZE - 1), st.integers(1, 255))
def test_any_changed_byte_of_a_real_chain_is_refused(which, offset, xor):
    parts = dict(zip(("pdh", "pek", "oca", "cek"), real_certs("rome"), strict=True))
    raw = bytearray(parts[which])
    raw[offset] ^= xor
    parts[which] = bytes(raw)
    try:
        chain = certs.assemble(certs.split(b"".join(parts.values()), "f"), "f")
        certs.verify(chain, "rome")
    except certs.CertError:
        return
    # only bytes no signature covers may change: the 368 reserved bytes after an ECDSA signature's r and s,
    # and the empty second slot of a certificate with one signature
    unsigned = {"pdh": [(1196, 2084)], "oca": [(1196, 2084)], "pek": [(1196, 1564), (1716, 2084)],
                "cek": [(1564, 2084)]}[which]
    assert any(lo <= offset < hi for lo, hi in unsigned), (which, offset)


def test_a_staged_key_file_replaces_the_old_one_only_when_committed(tmp_path):
    tk = tmp_path / "guest.tk"
    tk.write_bytes(b"old keys")
    staged = session.PrivateFile(tk, b"n" * 32, force=True)
    staged.discard()  # the guest kept its old session: so does the owner
    assert tk.read_bytes() == b"old keys" and [p.name for p in tmp_path.iterdir()] == ["guest.tk"]
    session.PrivateFile(tk, b"n" * 32, force=True).commit()
    assert tk.read_bytes() == b"n" * 32 and stat.S_IMODE(tk.stat().st_mode) == 0o600
    with pytest.raises(ExistsError, match="give --force to replace it"):
        session.PrivateFile(tk, b"x" * 32)
    staged = session.PrivateFile(tmp_path / "race.tk", b"x" * 32)
    (tmp_path / "race.tk").write_bytes(b"someone else's")
    with pytest.raises(ExistsError, match="appeared meanwhile"):
        staged.commit()
    assert (tmp_path / "race.tk").read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guest.tk", "race.tk"]


def test_the_session_in_vscens_secure_vm_is_valid_for_libvirt(platform, tmp_path, test_conn):
    """vscen run secure-vm's guest for the recorded AMD SEV host (its golden XML) takes the
    session, and the result passes libvirt's schema and a validating define."""
    import libvirt
    from lxml import etree

    from vscen.testing import validate

    root = etree.fromstring((DATA / "golden" / "secure-vm@amd-sev.xml").read_bytes())
    root.find("name").text = "attest-golden"
    dom = test_conn.defineXML(etree.tostring(root, encoding="unicode"))
    test_conn.made.append(dom)
    f = write_model(platform, tmp_path)
    res = cli("--pdh", f["pdh"], "--cert-chain", f["chain"], "--ark-ask", f["roots"], "--connect", TEST_URI,
              "--domain", "attest-golden", "--tk", tmp_path / "g.tk")
    assert res.exit_code == 0, res.output
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    ls = etree.fromstring(xml.encode()).find("launchSecurity")
    assert ls.findtext("policy") == root.findtext("launchSecurity/policy")
    check = etree.fromstring(xml.encode())  # defined again beside it: another name, no UUID
    check.find("name").text = "attest-golden-check"
    check.remove(check.find("uuid"))
    validate(etree.tostring(check, encoding="unicode"))
    platform.launch_start(int(ls.findtext("policy"), 16), base64.b64decode(ls.findtext("dhCert")),
                          base64.b64decode(ls.findtext("session")))
    assert platform.guest.tek + platform.guest.tik == (tmp_path / "g.tk").read_bytes()


def test_set_session_names_a_missing_guest(tmp_path):
    from vscen.cli import app

    (tmp_path / "s.b64").write_text(base64.b64encode(bytes(128)).decode())
    dh = certs.encode_sev_cert(certs.USAGE["PDH"], certs.ALGO[("ecdh", "sha256")],
                               certs.parse_sev_cert(real_certs("rome")[0]).public_key())
    (tmp_path / "dh.b64").write_text(base64.b64encode(dh).decode())
    res = CliRunner().invoke(app, ["attest", "set-session", "attest-nothere", "-c", TEST_URI, "--dh-cert",
                                   str(tmp_path / "dh.b64"), "--session", str(tmp_path / "s.b64"), "--policy", "3"])
    assert code(res) == 2 and str(res.exception) == "attest: no guest 'attest-nothere' is defined on test:///default"
    res = CliRunner().invoke(app, ["attest", "set-session", "attest-nothere", "-c", TEST_URI, "--dh-cert",
                                   str(tmp_path / "s.b64"), "--session", str(tmp_path / "s.b64"), "--policy", "3"])
    assert code(res) == 2 and str(res.exception).endswith("128 bytes, an SEV certificate has 2084")
