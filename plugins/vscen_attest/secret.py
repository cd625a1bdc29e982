"""A secret for a verified guest, as the SEV API's LAUNCH_SECRET takes it and OVMF hands it on.

The payload is OVMF's EFI secret table (the layout Linux's ``efi_secret`` driver and GRUB's
``efisecret`` read from the SEV launch secret area): a header GUID, a u32 length of the whole
table, then entries of GUID, u32 length (header included) and the secret's bytes, the whole
padded with zeros to 16 bytes. It is encrypted with the TEK in AES-128-CTR under a fresh IV.

The packet header (SEV API, section 6.6, table "LAUNCH_SECRET Packet Header Buffer") is
FLAGS (u32, 0) || IV (16 bytes) || MAC (32 bytes), where::

    MAC = HMAC-SHA256(0x01 || FLAGS || IV || GUEST_LENGTH || TRANS_LENGTH || DATA || MEASURE;
                      key TIK)

DATA being the ciphertext and MEASURE the guest's launch measurement: a packet is good for
that one launch only. libvirt's ``virDomainSetLaunchSecurityState`` takes header and payload
base64 encoded (``sev-secret-header``, ``sev-secret``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass
from uuid import UUID

from vscen import UsageError, VscenError

SECRET_TABLE_GUID = UUID("1e74f542-71dd-4d66-963e-ef4287ff173b")
#: names for the GUIDs the guest's consumers look for
ALIASES = {"luks-key": UUID("736869e5-84f0-4973-92ec-06879ce3da0b")}  # GRUB's cryptodisk (efisecret)
#: OVMF's launch secret area is one page; the table must fit
MAX_TABLE = 4096
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def guid_of(value: str) -> UUID:
    """A GUID from ``luks-key`` or ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``."""
    if value in ALIASES:
        return ALIASES[value]
    if not _GUID.match(value or ""):
        raise UsageError(f"--guid: '{value}' is not allowed (a GUID such as "
                         f"736869e5-84f0-4973-92ec-06879ce3da0b, or one of: {', '.join(ALIASES)})")
    return UUID(value)


def secret_table(secrets: list[tuple[UUID, bytes]]) -> bytes:
    """The EFI secret table holding *secrets* (GUID, bytes), padded to 16 bytes."""
    if not secrets:
        raise UsageError("--secret-file: no secret given: nothing to inject")
    seen = set()
    body = b""
    for guid, value in secrets:
        if guid in seen:
            raise UsageError(f"--guid: {guid} is given twice (one secret per GUID)")
        seen.add(guid)
        body += guid.bytes_le + struct.pack("<I", 20 + len(value)) + value
    table = SECRET_TABLE_GUID.bytes_le + struct.pack("<I", 20 + len(body)) + body
    table += bytes(-len(table) % 16)
    if len(table) > MAX_TABLE:
        raise UsageError(f"--secret-file: {len(table)} bytes packed is not allowed (the guest's secret area "
                         f"holds {MAX_TABLE} bytes)")
    return table


@dataclass(frozen=True)
class Packet:
    """A LAUNCH_SECRET packet: the header and the encrypted table (bytes; base64 for libvirt)."""

    header: bytes
    payload: bytes

    def params(self) -> dict[str, str]:
        """``virDomainSetLaunchSecurityState``'s parameters."""
        import base64

        return {"sev-secret-header": base64.b64encode(self.header).decode(),
                "sev-secret": base64.b64encode(self.payload).decode()}

    def __repr__(self) -> str:
        return f"Packet(<{len(self.payload)} encrypted bytes>)"


def header_mac(tik: bytes, flags: int, iv: bytes, guest_length: int, ciphertext: bytes, measurement: bytes) -> bytes:
    message = (b"\x01" + struct.pack("<I", flags) + iv + struct.pack("<II", guest_length, len(ciphertext))
               + ciphertext + measurement)
    return hmac.new(tik, message, hashlib.sha256).digest()


def pack(tik: bytes, tek: bytes, measurement: bytes, secrets: list[tuple[UUID, bytes]],
         iv: bytes | None = None) -> Packet:
    """The packet injecting *secrets* into the guest whose launch measurement is *measurement*."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        raise VscenError("attest: a secret is encrypted with the 'cryptography' package, which is not "
                         "installed: pip install 'vscen[attest]'") from None

    table = secret_table(secrets)
    iv = os.urandom(16) if iv is None else iv
    encryptor = Cipher(algorithms.AES(tek), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(table) + encryptor.finalize()
    flags = 0
    mac = header_mac(tik, flags, iv, len(table), ciphertext, measurement)
    return Packet(struct.pack("<I", flags) + iv + mac, ciphertext)
