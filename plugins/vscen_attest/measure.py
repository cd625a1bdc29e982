"""The AMD SEV launch measurement, computed as the platform (the PSP) computes it.

AMD SEV API specification (publication 55766), section 6.5, LAUNCH_MEASURE::

    MEASURE = HMAC-SHA256(0x04 || API_MAJOR || API_MINOR || BUILD || GCTX.POLICY ||
                          GCTX.LD || MNONCE; key GCTX.TIK)

``GCTX.LD`` is the launch digest: SHA-256 over every page QEMU gave LAUNCH_UPDATE_DATA, in
order, then (SEV-ES, policy bit 2) every vCPU's save area given to LAUNCH_UPDATE_VMSA. QEMU
measures the whole firmware image (OVMF's code), then, for a direct kernel boot with
``kernelHashes='yes'``, the SEV hashes table it writes into the firmware's reserved page
(``sev_add_kernel_loader_hashes`` in QEMU's ``target/i386/sev.c``). libvirt reports the
measurement as base64 of MEASURE (32 bytes) || MNONCE (16 bytes).

The vCPU save areas (VMSA, Linux's ``struct sev_es_save_area``) are the reset state KVM and
QEMU give a vCPU, with the host CPU's signature in RDX; the boot CPU starts at the reset
vector, the others at the address OVMF's SEV info block names. This is the model libvirt's
``virt-qemu-sev-validate`` uses (QEMU/KVM of its time); ``--vmsa-cpu0/1`` take save areas
dumped elsewhere when a newer kernel or QEMU lays them out otherwise.

Nothing here needs more than the standard library: the measurement is HMAC-SHA256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from uuid import UUID

from vscen import UsageError, VscenError

#: the policy bit that makes a guest SEV-ES (the VMSAs are measured)
POLICY_ES = 1 << 2

# OVMF's table of GUIDed entries, just below the reset vector at the end of the image
OVMF_FOOTER_GUID = UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
SEV_INFO_BLOCK_GUID = UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
SEV_SECRET_GUID = UUID("4c2eb361-7d9b-4cc3-8081-127c90d3d294")  # where QEMU injects a launch secret

# QEMU's SEV hashes table (target/i386/sev.c)
HASHES_TABLE_GUID = UUID("9438d606-4f22-4cc9-b479-a793d411fd21")
KERNEL_GUID = UUID("4de79437-abd2-427f-b835-d5b172d2045b")
INITRD_GUID = UUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
CMDLINE_GUID = UUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")

VMSA_SIZE = 4096
KEY_SIZE = 16


class AttestationError(VscenError):
    """The reported measurement is not the expected one: the guest is not trustworthy."""


@dataclass(frozen=True)
class Keys:
    """The guest owner's transport keys: TIK (integrity, the HMAC key) and TEK (encryption)."""

    tik: bytes
    tek: bytes | None = None

    def __repr__(self) -> str:  # never in a traceback or a log
        return "Keys(<secret>)"


@dataclass(frozen=True)
class Reported:
    """What the platform reports for a launched guest (``virDomainGetLaunchSecurityInfo``)."""

    measurement: bytes  # MEASURE, 32 bytes
    mnonce: bytes  # 16 bytes
    api_major: int
    api_minor: int
    build_id: int
    policy: int

    @property
    def sev_es(self) -> bool:
        return bool(self.policy & POLICY_ES)


def _int(field: str, value, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise UsageError(f"{field}: {value!r} is not allowed (an integer from 0 to {(1 << bits) - 1})")
    return value


def reported(measurement: str, api_major, api_minor, build_id, policy) -> Reported:
    """The reported values checked: the measurement as libvirt gives it (base64 of 48 bytes),
    the API version and build id (one byte each), the policy (32 bits)."""
    text = (measurement or "").strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 48:
        shown = repr(text if len(text) <= 60 else text[:57] + "...")
        raise UsageError(f"--measurement: {shown} is not allowed (base64 of 48 bytes: the 32-byte "
                         "measurement and the 16-byte nonce, as libvirt reports 'sev-measurement')")
    return Reported(raw[:32], raw[32:], _int("--api-major", api_major, 8), _int("--api-minor", api_minor, 8),
                    _int("--build-id", build_id, 8), _int("--policy", policy, 32))


# -- the firmware ---------------------------------------------------------------------------

def ovmf_table(firmware: bytes) -> dict[UUID, bytes]:
    """OVMF's GUIDed table (ResetVector's footer): entries are data || u16 length || GUID,
    read backwards from the footer 32 bytes before the image's end."""
    if len(firmware) < 50 or firmware[-48:-32] != OVMF_FOOTER_GUID.bytes_le:
        return {}
    size = int.from_bytes(firmware[-50:-48], "little")
    if size < 18 or size + 32 > len(firmware):
        return {}
    table, entries = firmware[-(32 + size):-50], {}
    while len(table) >= 18:
        length = int.from_bytes(table[-18:-16], "little")
        if length < 18 or length > len(table):
            break
        entries[UUID(bytes_le=table[-16:])] = table[-length:-18]
        table = table[:-length]
    return entries


def ap_reset_address(firmware: bytes) -> int:
    """Where OVMF starts the application processors of an SEV-ES guest (its SEV info block)."""
    data = ovmf_table(firmware).get(SEV_INFO_BLOCK_GUID)
    if data is None or len(data) < 4:
        raise UsageError("--firmware: the image has no SEV info block (OVMF's table entry "
                         f"{SEV_INFO_BLOCK_GUID}), which an SEV-ES guest needs: use an OVMF built with SEV support")
    return int.from_bytes(data[:4], "little")


def secret_area(firmware: bytes) -> tuple[int, int] | None:
    """(base, size) of the firmware's SEV launch secret area, as QEMU finds it; None when the
    image reserves none (OVMF's generic builds carry the entry empty: only OvmfPkg/AmdSev
    builds reserve the page)."""
    data = ovmf_table(firmware).get(SEV_SECRET_GUID)
    if data is None or len(data) < 8:
        return None
    base, size = struct.unpack_from("<II", data)
    return (base, size) if base and size else None


def hashes_table(kernel: bytes, initrd: bytes | None, cmdline: str | None) -> bytes:
    """QEMU's SEV hashes table for a direct kernel boot, padded to 16 bytes as QEMU measures
    it: a header (GUID, u16 length) and three entries (GUID, u16 length, SHA-256): the command
    line (with its terminating NUL), the initrd, the kernel. A missing initrd hashes as empty,
    a missing command line as the NUL alone."""
    def entry(guid: UUID, digest: bytes) -> bytes:
        return guid.bytes_le + struct.pack("<H", 16 + 2 + len(digest)) + digest

    body = (entry(CMDLINE_GUID, hashlib.sha256((cmdline or "").encode() + b"\0").digest())
            + entry(INITRD_GUID, hashlib.sha256(initrd or b"").digest())
            + entry(KERNEL_GUID, hashlib.sha256(kernel).digest()))
    table = HASHES_TABLE_GUID.bytes_le + struct.pack("<H", 18 + len(body)) + body
    return table + bytes(-len(table) % 16)


# -- the vCPUs' save areas (SEV-ES) ---------------------------------------------------------

# offsets in Linux's struct sev_es_save_area (arch/x86/include/asm/svm.h)
_SEGMENTS = {name: 0x10 * i for i, name in
             enumerate(("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr"))}
_U64 = {"efer": 0xD0, "cr4": 0x148, "cr0": 0x158, "dr7": 0x160, "dr6": 0x168, "rflags": 0x170,
        "rip": 0x178, "g_pat": 0x268, "rdx": 0x310, "xcr0": 0x3E8}
# segment attributes in the save area's packed form (descriptor bits 8-15 and 20-23)
_CODE, _DATA = 0x9B, 0x93  # present, S, type: code execute/read accessed; data read/write accessed
_LDT, _TSS = 0x82, 0x8B  # present, type 2 (LDT); present, type 11 (busy 32-bit TSS)


def cpu_signature(family: int, model: int, stepping: int) -> int:
    """CPUID 1's EAX for a CPU family, model and stepping (what a vCPU finds in RDX at reset)."""
    if _int("--cpu-family", family, 16) > 0xF + 0xFF:
        raise UsageError(f"--cpu-family: {family} is not allowed (0 to 270: a base family of 15 plus an "
                         "8-bit extended family; AMD EPYC is 23, 25 or 26)")
    _int("--cpu-model", model, 8)
    _int("--cpu-stepping", stepping, 4)
    value = stepping | (model & 0xF) << 4 | (model >> 4) << 16
    return value | (0xF00 | (family - 0xF) << 20 if family > 0xF else family << 8)


def vmsa(signature: int, reset_address: int | None = None) -> bytes:
    """One vCPU's save area as QEMU/KVM hand it to LAUNCH_UPDATE_VMSA: the x86 reset state
    (AMD64 APM vol. 2, 14.1.3), KVM's EFER.SVME, CR4.MCE and PAT, QEMU's segment attributes.
    *reset_address* None: the boot CPU (reset vector 0xffff:fff0); else an AP's start address."""
    area = bytearray(VMSA_SIZE)

    def seg(name, selector=0, attrib=0, limit=0xFFFF, base=0):
        struct.pack_into("<HHIQ", area, _SEGMENTS[name], selector, attrib, limit, base)

    cs_base, rip = 0xFFFF0000, 0xFFF0
    if reset_address is not None:
        cs_base, rip = reset_address & 0xFFFF0000, reset_address & 0xFFFF
    seg("cs", 0xF000, _CODE, base=cs_base)
    for name in ("es", "ss", "ds", "fs", "gs"):
        seg(name, attrib=_DATA)
    seg("gdtr")
    seg("idtr")
    seg("ldtr", attrib=_LDT)
    seg("tr", attrib=_TSS)
    for name, value in {"efer": 0x1000, "cr4": 0x40, "cr0": 0x10, "dr7": 0x400, "dr6": 0xFFFF0FF0,
                        "rflags": 0x2, "rip": rip, "g_pat": 0x0007040600070406, "rdx": signature,
                        "xcr0": 0x1}.items():
        struct.pack_into("<Q", area, _U64[name], value)
    return bytes(area)


def vmsas(firmware: bytes, family: int, model: int, stepping: int) -> tuple[bytes, bytes]:
    """The boot CPU's and the other CPUs' save areas for a host CPU."""
    signature = cpu_signature(family, model, stepping)
    return vmsa(signature), vmsa(signature, ap_reset_address(firmware))


# -- the measurement ------------------------------------------------------------------------

def launch_digest(firmware: bytes, kernel_table: bytes = b"", cpu_areas: tuple[bytes, ...] = ()) -> bytes:
    """GCTX.LD: SHA-256 over what the guest was launched with, in QEMU's order."""
    digest = hashlib.sha256(firmware)
    digest.update(kernel_table)
    for area in cpu_areas:
        digest.update(area)
    return digest.digest()


def expected(tik: bytes, report: Reported, digest: bytes) -> bytes:
    """MEASURE as the platform computes it, with the reported nonce and parameters."""
    message = (bytes((0x04, report.api_major, report.api_minor, report.build_id))
               + struct.pack("<I", report.policy) + digest + report.mnonce)
    return hmac.new(tik, message, hashlib.sha256).digest()


@dataclass(frozen=True)
class Launch:
    """What the guest owner expects the guest to have been launched with."""

    firmware: bytes
    kernel: bytes | None = None
    initrd: bytes | None = None
    cmdline: str | None = None
    num_cpus: int | None = None
    cpu: tuple[int, int, int] | None = None  # the host CPU's family, model, stepping
    vmsa_cpu0: bytes | None = None
    vmsa_cpu1: bytes | None = None

    def cpu_areas(self, sev_es: bool) -> tuple[bytes, ...]:
        """The measured save areas: none for SEV; one per vCPU for SEV-ES."""
        if not sev_es:
            return ()
        if self.num_cpus is None:
            raise UsageError("--num-cpus: missing: an SEV-ES guest (policy bit 2) measures every vCPU's "
                             "state, so give the number of vCPUs it was started with")
        _int("--num-cpus", self.num_cpus, 16)
        if self.num_cpus < 1:
            raise UsageError(f"--num-cpus: {self.num_cpus} is not allowed (at least 1)")
        cpu0, cpu1 = self.vmsa_cpu0, self.vmsa_cpu1
        if self.cpu is not None:
            cpu0, cpu1 = vmsas(self.firmware, *self.cpu)
        if cpu0 is None:
            raise UsageError("--cpu-family/--cpu-model/--cpu-stepping: missing: an SEV-ES guest's vCPU state "
                             "holds the host CPU's signature; give them (or --vmsa-cpu0/--vmsa-cpu1)")
        if self.num_cpus > 1 and cpu1 is None:
            raise UsageError("--vmsa-cpu1: missing: a guest of more than one vCPU needs the other vCPUs' state too")
        return (cpu0,) + (cpu1,) * (self.num_cpus - 1)

    def digest(self, sev_es: bool) -> bytes:
        table = hashes_table(self.kernel, self.initrd, self.cmdline) if self.kernel is not None else b""
        return launch_digest(self.firmware, table, self.cpu_areas(sev_es))


def verify(keys: Keys, report: Reported, launch: Launch) -> None:
    """Nothing when the reported measurement is the one expected; an AttestationError otherwise."""
    computed = expected(keys.tik, report, launch.digest(report.sev_es))
    if not hmac.compare_digest(computed, report.measurement):
        kind = "SEV-ES" if report.sev_es else "SEV"
        launched = ["the expected firmware"]
        if launch.kernel is not None:
            launched.append("kernel, initrd and command line")
        if report.sev_es:
            launched.append(f"{launch.num_cpus} vCPU(s) of that CPU")
        raise AttestationError(
            f"measurement does not match: the {kind} guest was not launched with {', '.join(launched)} "
            f"under these keys (policy 0x{report.policy:x}, API {report.api_major}.{report.api_minor}, "
            f"build {report.build_id}): it is not trustworthy")
