"""The launch-security types, once: their ranking, labels, policies, the libvirt releases that
know them, and what a host offers, read from its domain capabilities.

Every other part of vscen that needs to know about SEV, SEV-ES, SEV-SNP or TDX asks this table
(or the ``launch-security.host`` fact read with it), so the ranking cannot disagree anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the fact this plugin's provider reads (``ctx.host.fact(FACT)``)
FACT = "launch-security.host"


@dataclass(frozen=True)
class SecType:
    """One launch-security type as vscen writes it."""

    name: str
    #: the name users know, for notes and the host view
    label: str
    #: the value of ``<launchSecurity type=...>``: SEV-ES is libvirt's ``sev`` with the ES bit
    libvirt_type: str
    #: ``<policy>``: see the plugin's docstring for the bits
    policy: str
    #: the first libvirt release that accepts ``libvirt_type``
    libvirt_since: str
    #: "amd" or "intel": whose CPUs offer it (which kernel module enables it)
    vendor: str
    #: the KVM module parameter that enables it, "<module>.<parameter>"
    kernel_param: str
    #: the feature a QEMU firmware descriptor lists for a build that can boot this type (what
    #: libvirt's firmware auto-selection looks for, ``qemuFirmwareMatchDomain``)
    firmware: str = ""
    #: why the guest cannot have System Management Mode, "" where it can; SMM is what keeps a
    #: Secure Boot variable store out of the guest OS's reach, so no SMM means no Secure Boot
    #: with the distributions' OVMF (see ``SMM_SOURCES``)
    no_smm: str = ""
    #: an x86 type: the guest needs q35 (PCIe, SMM) and UEFI (OVMF measures the boot)
    x86: bool = True


#: strongest first: SNP and TDX protect memory integrity too, SEV-ES the registers, SEV memory
#: only. A host offers one family, so "SNP before TDX" never has to choose between them.
#:
#: ``no_smm``, where each refusal comes from (the launch fails there, not in vscen):
#:
#: - SEV-ES: KVM reports no SMM for an SEV-ES VM (Linux arch/x86/kvm/svm/svm.c,
#:   ``svm_has_emulated_msr``: "SEV-ES guests do not support SMM"), QEMU checks that per VM
#:   (QEMU commit "kvm/i386: Use a per-VM check for SMM capability") and exits with "System
#:   Management Mode not supported by this hypervisor." for ``smm=on`` (hw/i386/x86.c,
#:   ``x86_machine_is_smm_enabled``); QEMU's docs/system/i386/amd-memory-encryption.rst: an
#:   SEV-ES guest "does not support SMM - SMM support requires updating the guest register state".
#: - SEV-SNP: QEMU target/i386/sev.c, ``sev_snp_kvm_init``: "SEV-SNP does not support SMM."
#: - TDX: QEMU target/i386/kvm/tdx.c, ``tdx_kvm_init``: "TDX VM doesn't support SMM"; TDVF is
#:   loaded with -bios, never as pflash, since TDX has no read-only memory slots
#:   (docs/system/i386/tdx.rst), so there is no flash variable store to protect either.
#: - plain SEV keeps SMM: OVMF's SMM_REQUIRE build handles SEV (edk2 OvmfPkg/PlatformPei/AmdSev.c
#:   decrypts the initial SMRAM save state map for SMBASE relocation and re-encrypts it), and
#:   the distributions' Secure Boot descriptors list ``amd-sev`` next to ``requires-smm``
#:   (Debian's ovmf: /usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json).
#:
#: ``firmware``: libvirt (src/qemu/qemu_firmware.c) matches SEV to a descriptor listing
#: ``amd-sev``, SEV-ES (the policy's ES bit) to ``amd-sev-es``, SEV-SNP to ``amd-sev-snp`` and
#: TDX to ``intel-tdx``; Debian 12's ovmf lists only ``amd-sev``.
_NO_SMM_ES = ("KVM gives an SEV-ES guest no SMM: its register state is encrypted, and entering or "
              "leaving SMM means the hypervisor rewriting it")
TYPES = (
    SecType("sev-snp", "SEV-SNP", "sev-snp", "0x00030000", "10.5", "amd", "kvm_amd.sev_snp",
            firmware="amd-sev-snp", no_smm="QEMU refuses SMM for an SEV-SNP guest (\"SEV-SNP does not support SMM\")"),
    SecType("tdx", "TDX", "tdx", "0x10000000", "11.6", "intel", "kvm_intel.tdx",
            firmware="intel-tdx", no_smm="QEMU refuses SMM for a TDX guest (\"TDX VM doesn't support SMM\"), and TDVF "
                                     "runs from guest memory with no flash variable store"),
    SecType("sev-es", "SEV-ES", "sev", "0x0007", "4.5", "amd", "kvm_amd.sev_es",
            firmware="amd-sev-es", no_smm=_NO_SMM_ES),
    SecType("sev", "SEV", "sev", "0x0003", "4.5", "amd", "kvm_amd.sev", firmware="amd-sev"),
)
BY_NAME = {t.name: t for t in TYPES}
#: the SEV family: written with the host's cbitpos and reducedPhysBits
SEV_FAMILY = tuple(t.name for t in TYPES if t.vendor == "amd")
#: the ``<launchSecurity type=...>`` values of x86 types
X86_LIBVIRT_TYPES = frozenset(t.libvirt_type for t in TYPES if t.x86)


def label(name: str) -> str:
    return BY_NAME[name].label if name in BY_NAME else name


def ranked(names) -> list[str]:
    """*names* strongest first; names this table does not know (s390-pv...) last, as given."""
    names = list(names)
    return [t.name for t in TYPES if t.name in names] + [n for n in names if n not in BY_NAME]


def known_by(support) -> list[str]:
    """The types the installed libvirt's schema accepts, strongest first."""
    accepted = support.values("launchSecurity", "type")
    return [t.name for t in TYPES if t.libvirt_type in accepted]


def _int(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def from_domcaps(features: dict) -> dict:
    """What the host offers, from domcaps' ``<features>`` (``HostFacts.domcaps_features``):
    ``{"offered": [types, strongest first], "sev": {cbitpos...} or None}``. domcaps' sectype
    enum (libvirt >= 10.5) is authoritative where present."""
    def supported(name):
        feat = features.get(name)
        return feat if feat and feat.get("supported") == "yes" else None

    sev, tdx, ls = supported("sev"), supported("tdx"), supported("launchSecurity")
    listed = set(ls.get("enums", {}).get("sectype", ())) if ls else ({"sev"} if sev else set())
    offered = set()
    if tdx and (not listed or "tdx" in listed):
        offered.add("tdx")
    if sev and "sev-snp" in listed:
        offered.add("sev-snp")
    if sev and "sev" in listed:
        offered.add("sev")
        if _int(sev.get("maxESGuests")) > 0:
            offered.add("sev-es")
    params = None if not sev else {
        "cbitpos": _int(sev.get("cbitpos")), "reduced_phys_bits": _int(sev.get("reducedPhysBits")),
        "max_guests": _int(sev.get("maxGuests")), "max_es_guests": _int(sev.get("maxESGuests"))}
    return {"offered": ranked(offered), "sev": params}


def read_kernel() -> dict:
    """The kernel's side of this machine: ``{"kernel": {"kvm_amd.sev": "Y"...} for the
    parameters that exist, as sysfs has them, "sev_device": /dev/sev exists}``."""
    from vscen import host_path

    kernel = {}
    for t in sorted(TYPES, key=lambda t: t.kernel_param):
        module, _, param = t.kernel_param.partition(".")
        try:
            kernel[t.kernel_param] = host_path(f"sys/module/{module}/parameters/{param}").read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
    return {"kernel": kernel, "sev_device": host_path("dev/sev").exists()}


def param(fact: dict, name: str) -> bool | None:
    """A boolean module parameter of the fact's kernel side ("kvm_amd.sev"): True/False, None
    where the module is not loaded or the kernel side is unknown."""
    value = (fact.get("kernel") or {}).get(name)
    if value is None:
        return None
    return value.strip().upper() in ("Y", "1", "YES", "ON")


def pick(host, support) -> tuple[str | None, list[str]]:
    """(the type vscen writes, the stronger ones the installed libvirt cannot write): the
    strongest type *host* offers that libvirt's schema (*support*) knows; (None, ...) where
    there is none. The feature and its validators ask this, so they agree on the type."""
    skipped = []
    known = known_by(support)
    for sectype in host_offers(host)["offered"]:
        if sectype not in BY_NAME:  # a type this plugin cannot write (s390-pv...)
            continue
        if sectype in known:
            return sectype, skipped
        skipped.append(sectype)
    return None, skipped


def of_xml(root) -> str | None:
    """The type a domain's XML asks for (``<launchSecurity>`` and its policy's ES bit, 0x4), or
    None where it has none or one this table does not know."""
    ls = root.find("launchSecurity")
    if ls is None:
        return None
    kind = ls.get("type")
    if kind == "sev":
        try:
            policy = int((ls.findtext("policy") or "0").strip(), 16)
        except ValueError:
            policy = 0
        return "sev-es" if policy & 0x4 else "sev"
    return kind if kind in BY_NAME else None


def host_offers(host) -> dict:
    """The ``launch-security.host`` fact of *host*; where it was not read (host facts built by
    hand, in tests), what its domain capabilities say, the kernel's side unknown."""
    return host.fact(FACT) or {**from_domcaps(host.domcaps_features), "kernel": None, "sev_device": None}
