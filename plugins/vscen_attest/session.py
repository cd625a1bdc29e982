"""The guest owner's side of SEV's LAUNCH_START: a Diffie-Hellman certificate and a session blob.

What the firmware does with them (SEV API 55766, "LAUNCH_START" and "Key Derivation"): it
takes the owner's ECDH P-384 public key from the DH certificate and its own PDH private key to
a shared secret Z (the x coordinate of the shared point, big-endian, as ECDH gives it), then

    master = KDF(Z,      "sev-master-secret", NONCE)
    KEK    = KDF(master, "sev-kek",           "")
    KIK    = KDF(master, "sev-kik",           "")

with the SEV KDF: NIST SP 800-108 counter mode, HMAC-SHA256 as the PRF, each block
``HMAC(key, i || label || 0x00 || context || L)`` with ``i`` and ``L`` (bits) 32-bit
little-endian. It checks ``WRAP_MAC = HMAC-SHA256(KIK, WRAP_TK)``, decrypts
``WRAP_TK = AES-128-CTR(KEK, WRAP_IV, TEK || TIK)``, and checks ``POLICY_MAC =
HMAC-SHA256(TIK, POLICY)`` against the guest's policy (32 bits, little-endian). The blob is
those fields in that order: NONCE(16) WRAP_TK(32) WRAP_IV(16) WRAP_MAC(32) POLICY_MAC(32).

TEK and TIK are the guest owner's secrets: the launch measurement is an HMAC with the TIK and
injected secrets are encrypted with the TEK. They go only into a private file (``TEK || TIK``,
32 bytes, as ``virt-qemu-sev-validate --tk`` reads it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from vscen import ExistsError, UsageError

SESSION_SIZE = 128
#: SEV (not SNP) policy bits 0-5 are flags, 6-15 reserved, 16-31 the minimum firmware API version
POLICY_FLAGS = {0: "NODBG", 1: "NOKS", 2: "ES", 3: "NOSEND", 4: "DOMAIN", 5: "SEV"}


def kdf(key: bytes, label: bytes, context: bytes, length: int = 16) -> bytes:
    """The SEV KDF (SP 800-108 counter mode, HMAC-SHA256, little-endian counter and length)."""
    out = b""
    i = 1
    while len(out) < length:
        out += hmac.new(key, struct.pack("<I", i) + label + b"\0" + context + struct.pack("<I", length * 8),
                        hashlib.sha256).digest()
        i += 1
    return out[:length]


def parse_policy(text: str) -> int:
    """A launch policy as ``<policy>`` spells it (``0x0003``) or decimal."""
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"--policy: '{text}' is not a number (0x0003 for SEV, 0x0007 for SEV-ES)") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise UsageError(f"--policy: '{text}' is not a 32-bit value")
    if value & 0xFFC0:
        raise UsageError(f"--policy: '{text}' sets reserved bits 6-15 of an SEV policy (flags are bits 0-5: "
                         f"{', '.join(POLICY_FLAGS.values())}; bits 16-31 the minimum firmware version)")
    return value


def describe_policy(policy: int) -> str:
    flags = [name for bit, name in POLICY_FLAGS.items() if policy >> bit & 1]
    text = "+".join(flags) or "no flags"
    if policy >> 16:
        text += f", firmware >= {policy >> 16 & 0xFF}.{policy >> 24 & 0xFF}"
    return text


@dataclass(frozen=True)
class Session:
    """What LAUNCH_START takes from the guest owner, and the keys only the owner keeps."""

    policy: int
    dh_cert: bytes  # 2084 bytes, the owner's ECDH public key in the SEV format
    blob: bytes  # 128 bytes
    tek: bytes
    tik: bytes

    @property
    def dh_cert_b64(self) -> str:
        return base64.b64encode(self.dh_cert).decode()

    @property
    def session_b64(self) -> str:
        return base64.b64encode(self.blob).decode()

    @property
    def tk(self) -> bytes:
        """TEK || TIK, as ``virt-qemu-sev-validate --tk`` reads them."""
        return self.tek + self.tik


def wrap(z: bytes, policy: int, tek: bytes, tik: bytes, nonce: bytes, iv: bytes) -> bytes:
    """The session blob for shared secret *z* (deterministic: the randomness is the caller's)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    master = kdf(z, b"sev-master-secret", nonce)
    kek, kik = kdf(master, b"sev-kek", b""), kdf(master, b"sev-kik", b"")
    enc = Cipher(algorithms.AES(kek), modes.CTR(iv)).encryptor()
    wrap_tk = enc.update(tek + tik) + enc.finalize()
    wrap_mac = hmac.new(kik, wrap_tk, hashlib.sha256).digest()
    policy_mac = hmac.new(tik, struct.pack("<I", policy), hashlib.sha256).digest()
    return nonce + wrap_tk + iv + wrap_mac + policy_mac


def create(pdh, policy: int) -> Session:
    """A new session with platform key *pdh* (a verified :class:`certs.SevCert`): fresh TEK,
    TIK, nonce, IV and owner key pair from the OS's random source; the private key is used
    once and dropped."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from vscen_attest.certs import ALGO, USAGE, encode_sev_cert

    owner = ec.generate_private_key(ec.SECP384R1())
    z = owner.exchange(ec.ECDH(), pdh.public_key())
    tek, tik = os.urandom(16), os.urandom(16)
    blob = wrap(z, policy, tek, tik, os.urandom(16), os.urandom(16))
    dh_cert = encode_sev_cert(USAGE["PDH"], ALGO[("ecdh", "sha256")], owner.public_key())
    return Session(policy, dh_cert, blob, tek, tik)


class PrivateFile:
    """*data* staged for *path* (mode 600 from the start, written whole beside it), put in
    place by :meth:`commit` only once everything else succeeded, or dropped by :meth:`discard`:
    a failed run neither leaves a key file nor loses the one it was to replace."""

    def __init__(self, path: Path, data: bytes, force: bool = False):
        import tempfile

        self.path, self.force = Path(path), force
        if not self.path.parent.is_dir():
            raise UsageError(f"--tk: '{self.path}': the directory {self.path.parent} does not exist")
        self._check()
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)  # mode 600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            self.discard()
            raise

    def _check(self) -> None:
        if (self.path.exists() or self.path.is_symlink()) and not self.force:
            raise ExistsError(f"--tk: '{self.path}' exists (the TEK/TIK of another session?); give --force to replace it")

    def commit(self) -> None:
        try:
            if self.force:
                os.replace(self.tmp, self.path)
            else:
                os.link(self.tmp, self.path)  # fails if the name appeared meanwhile: nothing overwritten
                os.unlink(self.tmp)
        except FileExistsError:
            self.discard()
            raise ExistsError(f"--tk: '{self.path}' appeared meanwhile; give --force to replace it") from None

    def discard(self) -> None:
        Path(self.tmp).unlink(missing_ok=True)


def write_public(path: Path, text: str, what: str, force: bool = False) -> None:
    from vscen import atomic_write

    path = Path(path)
    if path.exists() and not force:
        raise ExistsError(f"{what}: '{path}' exists; give --force to replace it")
    if not path.parent.is_dir():
        raise UsageError(f"{what}: '{path}': the directory {path.parent} does not exist")
    atomic_write(path, text + "\n")


def launch_security_xml(session: Session) -> str:
    """The ``<launchSecurity>`` elements the session fills (the host's cbitpos and
    reducedPhysBits go beside them)."""
    return (f"<launchSecurity type='sev'>\n  <policy>{session.policy:#06x}</policy>\n"
            f"  <dhCert>{session.dh_cert_b64}</dhCert>\n  <session>{session.session_b64}</session>\n"
            "</launchSecurity>")
