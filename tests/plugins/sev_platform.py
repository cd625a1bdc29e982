"""A software model of an AMD SEV host, written from the SEV API specification (AMD 55766:
"LAUNCH_START", "LAUNCH_MEASURE", "LAUNCH_SECRET", "Key Derivation", appendix C "Certificate
Formats"), for testing the guest owner's code (vscen_attest) without the hardware. One model for
all the attest tests:

- ``Platform``: one chip. It holds what a chip holds: its own key pairs (CEK, OCA, PEK, PDH) and
  a certificate chain up to an AMD-like root (a test ARK and ASK, RSA-PSS, made here: the real
  AMD anchors are tested with real exported chains); ``launch_start`` does what the firmware
  does with a guest owner's DH certificate and session blob and gives a ``GuestContext``.
- ``GuestContext``: one guest's launch context (GCTX): its TEK, TIK and policy;
  ``measure`` is LAUNCH_MEASURE, ``launch_secret`` LAUNCH_SECRET (checks the packet's MAC over
  the ciphertext and the measurement with the TIK, decrypts with the TEK).
- ``SevHost``: QEMU and libvirt on an SEV host, put in front of libvirt's real
  ``test:///default`` driver (``install``): ``getSEVInfo`` exports the chip's PDH and chain; a
  domain started with ``<launchSecurity type='sev'>`` goes through LAUNCH_START with its
  ``<dhCert>`` and ``<session>``, and its launch is measured over the firmware file its
  ``<loader>`` names (SEV-ES: and its vCPUs' state, laid out by libvirt's own
  ``virt-qemu-sev-validate``); ``launchSecurityInfo`` reports the measurement and
  ``setLaunchSecurityState`` injects a secret. The domain's states (paused, running, shut off)
  are libvirt's own.

It shares no code with the guest owner's side: only ``anchors()`` hands the test root keys over
in the verifier's own type.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.machinery
import importlib.util
import os
import struct
import uuid
from pathlib import Path

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


class GuestContext:
    """One guest's launch context on the chip (GCTX): TEK, TIK, policy; LAUNCH_MEASURE and
    LAUNCH_SECRET. Made by ``Platform.launch_start``, or directly with keys an owner gave some
    other way (``sevctl session``), as the offline tests do."""

    def __init__(self, tik: bytes, tek: bytes | None = None, policy: int = 0x1, api=(1, 51), build: int = 3):
        self.tik, self.tek, self.policy, self.api, self.build = tik, tek, policy, api, build
        self.secret_area: bytes | None = None  # what LAUNCH_SECRET wrote, as the guest finds it

    def measure(self, launch_data: bytes) -> str:
        """LAUNCH_MEASURE over *launch_data* (what QEMU gave LAUNCH_UPDATE_DATA/VMSA), base64 of
        MEASURE || MNONCE as libvirt reports it."""
        mnonce = os.urandom(16)
        msg = (bytes([0x04, self.api[0], self.api[1], self.build]) + self.policy.to_bytes(4, "little")
               + hashlib.sha256(launch_data).digest() + mnonce)
        return base64.b64encode(hmac.new(self.tik, msg, "sha256").digest() + mnonce).decode()

    def launch_secret(self, header: bytes, ciphertext: bytes, measurement: bytes) -> None:
        """LAUNCH_SECRET: the header (FLAGS, IV, MAC) checked with the TIK against this launch's
        *measurement*, the payload decrypted with the TEK into the guest's secret area."""
        if len(header) != 52 or struct.unpack("<I", header[:4])[0] != 0:
            raise FirmwareError("INVALID_PARAM: the packet header is 52 bytes with FLAGS 0")
        iv, mac = header[4:20], header[20:52]
        msg = (b"\x01" + header[:4] + iv + struct.pack("<II", len(ciphertext), len(ciphertext)) + ciphertext
               + measurement)
        if not hmac.compare_digest(hmac.new(self.tik, msg, "sha256").digest(), mac):
            raise FirmwareError("BAD_MEASUREMENT: the packet header's MAC does not check")
        dec = Cipher(algorithms.AES(self.tek), modes.CTR(iv)).decryptor()
        self.secret_area = dec.update(ciphertext) + dec.finalize()


class Platform:
    """One SEV chip: key pairs, certificates, and LAUNCH_START."""

    def __init__(self, api=(1, 51), build: int = 3):
        self.api, self.build = api, build
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
        self.guest: GuestContext | None = None

    @property
    def cert_chain(self) -> bytes:
        """What SEV_PDH_CERT_EXPORT gives next to the PDH, and libvirt's cert-chain: PEK, OCA, CEK."""
        return self.pek + self.oca + self.cek

    def sev_info(self) -> dict:
        """``virNodeGetSEVInfo``'s values for this chip (base64 certificates, as libvirt gives them)."""
        return {"pdh": base64.b64encode(self.pdh).decode(), "cert-chain": base64.b64encode(self.cert_chain).decode(),
                "cbitpos": 51, "reduced-phys-bits": 1, "max-guests": 15, "max-es-guests": 494}

    def launch_start(self, policy: int, dh_cert: bytes | None = None, session: bytes | None = None) -> GuestContext:
        """LAUNCH_START: with a guest owner's DH certificate and session, the guest context with
        the TEK and TIK they wrap, or FirmwareError as the firmware refuses; without them, a
        context with keys the firmware makes itself (nobody else knows them)."""
        if dh_cert is None and session is None:
            self.guest = GuestContext(os.urandom(16), os.urandom(16), policy, self.api, self.build)
            return self.guest
        if dh_cert is None or session is None or len(dh_cert) != 2084 or len(session) != 128:
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
        self.guest = GuestContext(tik, tek, policy, self.api, self.build)
        return self.guest

    def anchors(self):
        """The test ARK and ASK as the verifier's trust anchors: {name: (ARK, ASK)}."""
        from vscen_attest.certs import parse_ca_cert

        return {"testgen": (parse_ca_cert(self.ark), parse_ca_cert(self.ask))}

    def export(self, directory: Path) -> dict[str, Path]:
        """The host administrator's export (``virsh nodesevinfo``'s pdh and cert-chain, base64)
        and the ASK and ARK the owner trusts for this test chip (AMD's layout: ASK then ARK)."""
        files = {"pdh": directory / "pdh.b64", "chain": directory / "cert-chain.b64", "roots": directory / "ask_ark.cert"}
        files["pdh"].write_text(self.sev_info()["pdh"] + "\n")
        files["chain"].write_text(self.sev_info()["cert-chain"] + "\n")
        files["roots"].write_bytes(self.ask + self.ark)
        return files


# -- QEMU's side: what it hands the chip ----------------------------------------------------

VALIDATE = Path("/usr/bin/virt-qemu-sev-validate")
SEV_SECRET_GUID = uuid.UUID("4c2eb361-7d9b-4cc3-8081-127c90d3d294")


def libvirt_module():
    """libvirt's virt-qemu-sev-validate as a module (its classes lay out what QEMU measures)."""
    loader = importlib.machinery.SourceFileLoader("virt_qemu_sev_validate", str(VALIDATE))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def fake_ovmf(size: int = 256 * 1024, reset: int = 0x80B004, secret_area: tuple[int, int] = (0x80D000, 0x1000)) -> bytes:
    """A firmware image with OVMF's GUIDed footer table holding an SEV info block and a launch
    secret area (base, size; (0, 0) as OVMF's generic builds have it)."""
    info = struct.pack("<I", reset) + struct.pack("<H", 22) + uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e").bytes_le
    other = struct.pack("<II", *secret_area) + struct.pack("<H", 26) + SEV_SECRET_GUID.bytes_le
    entries = other + info
    footer = entries + struct.pack("<H", len(entries) + 18) + uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
    body = os.urandom(size - len(footer) - 32)
    return body + footer + b"\x90" * 32


def launch_data(firmware: bytes, policy: int, kernel: bytes | None = None, initrd: bytes | None = None,
                cmdline: str | None = None, cpus: int = 1, cpu=None, mod=None) -> bytes:
    """What QEMU hands the chip for a launch (firmware; QEMU's hashes table for a measured
    kernel; SEV-ES: each vCPU's state for host CPU *cpu*), laid out by libvirt's own classes."""
    if kernel is None and not policy & 4:
        return firmware
    mod = mod or libvirt_module()
    cvm = mod.OfflineConfidentialVM(policy=policy, num_cpus=cpus)
    cvm.firmware = firmware
    if kernel is not None:
        cvm.kernel_table.kernel = hashlib.sha256(kernel).digest()
        cvm.kernel_table.initrd = hashlib.sha256(initrd or b"").digest()
        cvm.kernel_table.load_cmdline(cmdline or "")
    if policy & 4:
        cvm.build_vmsas(*cpu)
    return cvm.get_measured_data()


def read_secret_table(table: bytes) -> dict[uuid.UUID, bytes]:
    """The secret area as the guest reads it (Linux drivers/virt/coco/efi_secret)."""
    assert uuid.UUID(bytes_le=table[:16]) == uuid.UUID("1e74f542-71dd-4d66-963e-ef4287ff173b")
    (total,) = struct.unpack_from("<I", table, 16)
    assert total <= len(table) and len(table) % 16 == 0
    secrets, pos = {}, 20
    while pos < total:
        guid = uuid.UUID(bytes_le=table[pos:pos + 16])
        (length,) = struct.unpack_from("<I", table, pos + 16)
        assert length >= 20 and pos + length <= total
        secrets[guid] = table[pos + 20:pos + length]
        pos += length
    assert not any(table[total:]), "the padding is zeros"
    return secrets


# -- the host: QEMU and libvirt in front of test:///default ---------------------------------

def _libvirt_error(message: str):
    """A libvirtError as libvirt-python raises it for a failed call, *message* its error message."""
    import libvirt

    class ModelError(libvirt.libvirtError):
        def get_error_message(self):
            return message

        def get_error_code(self):
            return libvirt.VIR_ERR_OPERATION_FAILED

    return ModelError(message)


class Launch:
    """One launch of a guest on the host: its context on the chip and what was measured."""

    def __init__(self, guest: GuestContext, data: bytes):
        self.guest, self.report, self.finished = guest, guest.measure(data), False


class SevHost:
    """An SEV host: the *platform* chip, a host CPU (family, model, stepping), and the launches
    of the guests it started. *guest* and *data* preset what LAUNCH_START and QEMU give every
    launch (a chip context with known keys; another image than the guest's <loader>), for tests
    that take one of them out of the picture."""

    def __init__(self, platform: Platform | None = None, cpu=(25, 1, 1), guest: GuestContext | None = None,
                 data: bytes | None = None):
        self.platform, self.cpu, self.preset, self.data = platform, cpu, guest, data
        self.launches: dict[str, Launch] = {}

    def install(self, monkeypatch) -> SevHost:
        """Put this host in front of every ``test:`` connection libvirt-python opens."""
        import libvirt

        opened = libvirt.open

        def open_(uri=None):
            conn = opened(uri)
            return HostConnection(conn, self) if (uri or "").startswith("test:") else conn

        monkeypatch.setattr(libvirt, "open", open_)
        return self

    def start(self, dom) -> Launch:
        """QEMU's start of an SEV guest: LAUNCH_START with the domain's session, then
        LAUNCH_UPDATE_DATA/VMSA and LAUNCH_MEASURE. A libvirtError as libvirt reports QEMU's failure."""
        import libvirt
        from lxml import etree

        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
        ls = root.find("launchSecurity")
        if ls is None or ls.get("type") != "sev":
            raise _libvirt_error("model: only SEV guests are started by this host")
        policy = int(ls.findtext("policy"), 16)
        try:
            if self.preset is not None:
                guest = self.preset
            else:
                blobs = [base64.b64decode(ls.findtext(tag)) if ls.findtext(tag) else None for tag in ("dhCert", "session")]
                guest = self.platform.launch_start(policy, *blobs)
        except FirmwareError as exc:
            raise _libvirt_error(f"internal error: qemu unexpectedly closed the monitor: "
                                       f"sev_launch_start: LAUNCH_START ret=-5 fw_error ({exc})") from None
        data = self.data
        if data is None:
            loader = root.findtext("os/loader")
            try:
                firmware = Path(loader).read_bytes()
            except (TypeError, OSError):
                raise _libvirt_error(f"model: cannot read the guest's <loader> {loader!r}") from None
            data = launch_data(firmware, policy, cpus=int(root.findtext("vcpu")), cpu=self.cpu)
        return Launch(guest, data)


class HostConnection:
    """libvirt's ``virConnect`` on the model host: the test driver's, with the SEV calls."""

    def __init__(self, conn, host: SevHost):
        self._conn, self._host = conn, host

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def getSEVInfo(self, flags=0):  # noqa: N802 (libvirt's name)

        if self._host.platform is None:
            raise _libvirt_error("model: this host exports no SEV certificates")
        return self._host.platform.sev_info()

    def lookupByName(self, name):  # noqa: N802
        return SevDomain(self._conn.lookupByName(name), self._host)

    def getCapabilities(self):  # noqa: N802
        """The test driver's, with the host CPU's signature as libvirt (8.10+) reports it."""
        from lxml import etree

        caps = etree.fromstring(self._conn.getCapabilities().encode())
        cpu = caps.find("host/cpu")
        etree.SubElement(cpu, "signature", family=str(self._host.cpu[0]), model=str(self._host.cpu[1]),
                         stepping=str(self._host.cpu[2]))
        return etree.tostring(caps, encoding="unicode")


class SevDomain:
    """A test:///default domain with the model host in front: what QEMU on an SEV host does for
    libvirt's launch-security calls. The launch outlives the object (it is the host's)."""

    def __init__(self, dom, host: SevHost):
        self.dom, self.host = dom, host

    def __getattr__(self, name):
        return getattr(self.dom, name)

    @property
    def launch(self) -> Launch | None:
        return self.host.launches.get(self.dom.name())

    def createWithFlags(self, flags=0):  # noqa: N802
        import libvirt

        launch = self.host.start(self.dom)
        self.dom.create()
        self.dom.suspend()  # test:///default cannot start paused; nothing runs in it anyway
        self.host.launches[self.dom.name()] = launch
        if not flags & libvirt.VIR_DOMAIN_START_PAUSED:
            self.resume()
        return 0

    def create(self):
        return self.createWithFlags(0)

    def launchSecurityInfo(self, flags=0):  # noqa: N802

        launch = self.launch
        if launch is None or not self.dom.isActive():
            raise _libvirt_error("Requested operation is not valid: domain is not running")
        guest = launch.guest
        return {"sev-measurement": launch.report, "sev-api-major": guest.api[0], "sev-api-minor": guest.api[1],
                "sev-build-id": guest.build, "sev-policy": guest.policy}

    def setLaunchSecurityState(self, params, flags=0):  # noqa: N802
        import libvirt

        launch = self.launch
        if launch is None or launch.finished or self.dom.info()[0] != libvirt.VIR_DOMAIN_PAUSED:
            raise _libvirt_error("Requested operation is not valid: LAUNCH_SECRET comes before LAUNCH_FINISH")
        try:
            launch.guest.launch_secret(base64.b64decode(params["sev-secret-header"]),
                                       base64.b64decode(params["sev-secret"]), base64.b64decode(launch.report)[:32])
        except FirmwareError as exc:
            raise _libvirt_error(f"internal error: sev_inject_launch_secret: fw_error ({exc})") from None
        return 0

    def resume(self):
        if self.launch is not None:
            self.launch.finished = True  # LAUNCH_FINISH
        return self.dom.resume()

    def destroy(self):
        self.host.launches.pop(self.dom.name(), None)
        return self.dom.destroy()
