"""A software model of an AMD SEV platform's side of LAUNCH_START, written from the SEV API
specification (AMD 55766: "LAUNCH_START", "Key Derivation", appendix C "Certificate
Formats"), for testing the guest owner's code without the hardware.

It holds what a chip holds: its own key pairs (CEK, OCA, PEK, PDH) and a certificate chain up
to an AMD-like root (a test ARK and ASK, RSA-PSS, made here: the real AMD anchors are tested
with real exported chains), and does what the firmware does with a guest owner's DH
certificate and session blob. It shares no code with the guest owner's side (vscen_attest):
only ``anchors()`` hands the test root keys over in the verifier's own type.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ARK, ASK, OCA, PEK, PDH, CEK = 0x0000, 0x0013, 0x1001, 0x1002, 0x1003, 0x1004
RSA_SHA256, ECDSA_SHA256, ECDH_SHA256 = 0x0001, 0x0002, 0x0003


class FirmwareError(Exception):
    """What the firmware would return instead of SUCCESS (the status name, a reason)."""


def _sev_kdf(key: bytes, label: bytes, context: bytes, length: int = 16) -> bytes:
    # SP 800-108 counter mode, PRF HMAC-SHA256; SEV encodes i and L (in bits) as 32-bit LE
    blocks = b"".join(hmac.new(key, struct.pack("<I", i) + label + b"\x00" + context + struct.pack("<I", 8 * length),
                               hashlib.sha256).digest() for i in range(1, (length + 31) // 32 + 1))
    return blocks[:length]


def _ca_cert(usage: int, key: rsa.RSAPrivateKey, kid: bytes, signer: rsa.RSAPrivateKey, sid: bytes) -> bytes:
    """AMD's signing-key certificate (appendix C.1), RSA-2048 with SHA-256 (as Naples')."""
    nums = key.public_key().public_numbers()
    body = (struct.pack("<I", 1) + kid + sid + struct.pack("<I", usage) + bytes(16) + struct.pack("<II", 2048, 2048)
            + nums.e.to_bytes(256, "little") + nums.n.to_bytes(256, "little"))
    sig = signer.sign(body, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    return body + sig[::-1]


def _sev_body(usage: int, algo: int, key: ec.EllipticCurvePrivateKey, api=(0, 24)) -> bytes:
    nums = key.public_key().public_numbers()
    pub = struct.pack("<I", 2) + nums.x.to_bytes(72, "little") + nums.y.to_bytes(72, "little")
    return struct.pack("<IBBHII", 1, api[0], api[1], 0, usage, algo) + pub.ljust(1028, b"\x00")


def _ecdsa_slot(signer_usage: int, signer: ec.EllipticCurvePrivateKey, body: bytes) -> bytes:
    r, s = decode_dss_signature(signer.sign(body, ec.ECDSA(hashes.SHA256())))
    return struct.pack("<II", signer_usage, ECDSA_SHA256) + (r.to_bytes(72, "little") + s.to_bytes(72, "little")).ljust(512, b"\0")


def _rsa_slot(signer: rsa.RSAPrivateKey, body: bytes) -> bytes:
    sig = signer.sign(body, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    return struct.pack("<II", ASK, RSA_SHA256) + sig[::-1].ljust(512, b"\0")


_EMPTY_SLOT = struct.pack("<II", 0x1000, 0) + bytes(512)


class Platform:
    """One SEV chip: key pairs, certificates, and LAUNCH_START."""

    def __init__(self, api=(0, 24)):
        self.ark_key = rsa.generate_private_key(65537, 2048)
        self.ask_key = rsa.generate_private_key(65537, 2048)
        ark_id, ask_id = os.urandom(16), os.urandom(16)
        self.ark = _ca_cert(ARK, self.ark_key, ark_id, self.ark_key, ark_id)
        self.ask = _ca_cert(ASK, self.ask_key, ask_id, self.ark_key, ark_id)
        self.cek_key, self.oca_key, self.pek_key, self.pdh_key = (ec.generate_private_key(ec.SECP384R1()) for _ in range(4))
        cek_body = _sev_body(CEK, ECDSA_SHA256, self.cek_key, api)
        self.cek = cek_body + _rsa_slot(self.ask_key, cek_body) + _EMPTY_SLOT
        oca_body = _sev_body(OCA, ECDSA_SHA256, self.oca_key, api)
        self.oca = oca_body + _ecdsa_slot(OCA, self.oca_key, oca_body) + _EMPTY_SLOT
        pek_body = _sev_body(PEK, ECDSA_SHA256, self.pek_key, api)
        self.pek = pek_body + _ecdsa_slot(OCA, self.oca_key, pek_body) + _ecdsa_slot(CEK, self.cek_key, pek_body)
        pdh_body = _sev_body(PDH, ECDH_SHA256, self.pdh_key, api)
        self.pdh = pdh_body + _ecdsa_slot(PEK, self.pek_key, pdh_body) + _EMPTY_SLOT
        self.guest = None

    @property
    def cert_chain(self) -> bytes:
        """What SEV_PDH_CERT_EXPORT gives next to the PDH, and libvirt's cert-chain: PEK, OCA, CEK."""
        return self.pek + self.oca + self.cek

    def launch_start(self, policy: int, dh_cert: bytes, session: bytes) -> dict:
        """LAUNCH_START with a guest owner's DH certificate and session: the guest context's
        TEK and TIK, or FirmwareError as the firmware refuses."""
        if len(dh_cert) != 2084 or len(session) != 128:
            raise FirmwareError("INVALID_LENGTH")
        version, usage, algo, curve = struct.unpack_from("<I4xIII", dh_cert, 0)
        if version != 1 or usage != PDH or algo not in (ECDH_SHA256, 0x0103) or curve != 2:
            raise FirmwareError("INVALID_CERTIFICATE")
        x, y = int.from_bytes(dh_cert[20:92], "little"), int.from_bytes(dh_cert[92:164], "little")
        try:
            owner = ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
        except ValueError:
            raise FirmwareError("INVALID_CERTIFICATE: not a P-384 point") from None
        nonce, wrap_tk, wrap_iv, wrap_mac, policy_mac = (session[0:16], session[16:48], session[48:64],
                                                        session[64:96], session[96:128])
        z = self.pdh_key.exchange(ec.ECDH(), owner)
        master = _sev_kdf(z, b"sev-master-secret", nonce)
        kek, kik = _sev_kdf(master, b"sev-kek", b""), _sev_kdf(master, b"sev-kik", b"")
        if not hmac.compare_digest(hmac.new(kik, wrap_tk, hashlib.sha256).digest(), wrap_mac):
            raise FirmwareError("BAD_MEASUREMENT: the wrapped keys' MAC does not verify")
        dec = Cipher(algorithms.AES(kek), modes.CTR(wrap_iv)).decryptor()
        keys = dec.update(wrap_tk) + dec.finalize()
        tek, tik = keys[:16], keys[16:]
        if not hmac.compare_digest(hmac.new(tik, struct.pack("<I", policy), hashlib.sha256).digest(), policy_mac):
            raise FirmwareError("POLICY_FAILURE: the policy MAC does not verify")
        self.guest = {"tek": tek, "tik": tik, "policy": policy}
        return self.guest

    def anchors(self):
        """The test ARK and ASK as the verifier's trust anchors: {name: (ARK, ASK)}."""
        from vscen_attest.certs import parse_ca_cert

        return {"testgen": (parse_ca_cert(self.ark), parse_ca_cert(self.ask))}
