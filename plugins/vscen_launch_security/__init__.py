"""Confidential computing: encrypted guest memory (AMD SEV family, Intel TDX).

- ``launch-security``: ``<launchSecurity>`` of the strongest type that the host offers *and*
  the installed libvirt can express: SEV-SNP (integrity-protected memory and attestation
  reports) or TDX, else SEV-ES (registers encrypted too), else SEV. A host offers one family,
  so "SNP before TDX" never has to choose between them. The SEV family's ``cbitpos`` and
  ``reducedPhysBits`` are the host's (from its domain capabilities): they differ per CPU
  generation and a wrong value fails the launch. Policies: ``0x0003`` for SEV (no debugging,
  no key sharing with other guests), ``0x0007`` for SEV-ES (the same plus the ES bit; libvirt
  spells SEV-ES as ``type='sev'`` with that policy), ``0x00030000`` for SNP (the reserved bit
  17 that must be set, plus SMT allowed), ``0x10000000`` for TDX (SEPT_VE_DISABLE: the guest
  is not told about EPT violations it could be tricked with). Where nothing fits nothing is
  written: the ``confidential-computing`` host check fails the run and says what to enable.
  The types, their ranking, labels, policies and the libvirt releases that know them are one
  table (:mod:`vscen_launch_security.types`); what the host offers is this plugin's fact
  ``launch-security.host``, and ``vscen host`` shows it through the provider's ``show``.
  The feature pulls in UEFI (the guest measures its boot), ``iommu-platform`` and locked
  memory (encrypted pages must never be swapped), and conflicts with what would cross the
  confidentiality boundary.
  SMM and Secure Boot: SEV-ES, SEV-SNP and TDX guests cannot have System Management Mode (KVM
  and QEMU refuse it; the type table cites where), so the feature writes ``<smm state='off'/>``
  for them, which also keeps libvirt's firmware auto-selection off the SMM-only builds. The
  host check ``launch-security-smm`` refuses, before anything is built, a feature whose firmware
  needs SMM (``secure-boot``: every Secure Boot OVMF the distributions ship keeps its variable
  store in SMM) together with such a type, and the domain check ``launch-security-firmware``
  refuses SMM or Secure Boot firmware in the finished XML (``--set`` included). Plain SEV keeps
  Secure Boot with SMM: OVMF's SMM build supports SEV.
- ``iommu-platform``: an encrypted guest's virtio devices cannot read guest memory directly;
  ``iommu='on'`` (VIRTIO_F_ACCESS_PLATFORM) makes them use the DMA API, so the guest bounces
  I/O through shared, unencrypted buffers. Applied in ``finish``, after every feature has added
  its devices; a virtio-serial controller is added explicitly where there are virtio channels,
  because libvirt's implicit one would not get the flag.
"""

from __future__ import annotations

from vscen import Conflict, FactProvider, Feature, Validator, hookimpl
from vscen_launch_security.types import BY_NAME, FACT, SEV_FAMILY, from_domcaps, host_offers, label, pick, read_kernel


def choose(ctx) -> str | None:
    """The strongest type the host offers (the ``launch-security.host`` fact, strongest
    first) that the installed libvirt knows; notes the stronger ones it had to pass over."""
    sectype, skipped = pick(ctx.host, ctx.support)
    if sectype is not None:
        for other in skipped:
            ctx.note(f"launch-security: {label(other)} is offered by the host but the "
                     f"installed libvirt's schema does not know it: using {label(sectype)}")
        return sectype
    if skipped:
        ctx.note(f"launch-security: the host offers {', '.join(label(t) for t in skipped)} but the installed "
                 "libvirt knows none of them: no launch security is written")
    else:
        ctx.note("launch-security: the host offers no launch security type (SEV, SEV-ES, "
                 "SEV-SNP or TDX): no launch security is written")
    return None


def apply_launch_security(domain, ctx) -> None:
    sectype = choose(ctx)
    if sectype is None:
        return
    kind = BY_NAME[sectype]
    ls = domain.ensure("launchSecurity")
    ls.set(type=kind.libvirt_type)
    if sectype in SEV_FAMILY:
        sev = host_offers(ctx.host)["sev"]
        if sev is not None:
            ls.ensure("cbitpos").text(sev["cbitpos"])
            ls.ensure("reducedPhysBits").text(sev["reduced_phys_bits"])
        else:
            ctx.note("launch-security: the host facts carry no SEV parameters: libvirt fills "
                     "in cbitpos and reducedPhysBits")
    ls.ensure("policy").text(kind.policy)
    ctx.note(f"launch-security: using {kind.label} (policy {kind.policy}), the "
             "strongest type the host offers and the installed libvirt knows")


def finish_smm(domain, ctx) -> None:
    """SMM stated off for a type that cannot have it, not left to QEMU's "auto": libvirt's
    firmware auto-selection then never picks a build that requires SMM. In ``finish``, after
    every feature: where one turned SMM on (an OS profile asking for Secure Boot), it is left
    for the ``launch-security-firmware`` check to refuse with the reason."""
    sectype, _ = pick(ctx.host, ctx.support)
    if sectype is None or not BY_NAME[sectype].no_smm or domain.find("launchSecurity") is None:
        return
    if domain.find("features/smm") is None:
        domain.ensure("features/smm").set(state="off")


def _virtio_devices(devices):
    """Every device element in *devices* that is a virtio device and has a <driver>."""
    def model(el, attr="type"):
        found = el.find("model")
        return (found.get(attr) if found is not None else None) or ""

    for disk in devices.findall("disk"):
        target = disk.find("target")
        if target is not None and target.get("bus") == "virtio":
            yield disk
    for iface in devices.findall("interface"):
        if model(iface).startswith("virtio"):
            yield iface
    for tag in ("memballoon", "rng"):
        for dev in devices.findall(tag):
            if (dev.get("model") or "").startswith("virtio"):
                yield dev
    for video in devices.findall("video"):
        if model(video) == "virtio":
            yield video
    for fs in devices.findall("filesystem"):
        driver = fs.find("driver")
        if driver is not None and driver.get("type") == "virtiofs":
            yield fs
    for ctrl in devices.findall("controller"):
        if ctrl.get("type") == "virtio-serial" or (ctrl.get("model") or "").startswith("virtio"):
            yield ctrl
    yield from devices.findall("input", bus="virtio")


def finish_iommu(domain, ctx) -> None:
    devices = domain.find("devices")
    if devices is None:
        return
    virtio_ports = [el for tag in ("channel", "console") for el in devices.findall(tag)
                    if (t := el.find("target")) is not None and t.get("type") == "virtio"]
    if virtio_ports and devices.find("controller", type="virtio-serial") is None:
        devices.add("controller", type="virtio-serial", index=0)
    for dev in _virtio_devices(devices):
        dev.ensure("driver").set(iommu="on")


FEATURES = (
    Feature(
        name="launch-security",
        summary="encrypted guest memory: SEV-SNP/TDX, else SEV-ES, else SEV",
        category="launch security",
        implies=("uefi", "iommu-platform", "locked-memory"),
        conflicts=(
            Conflict("cpu-migratable", "a confidential guest cannot live-migrate"),
            Conflict("host-filesystem", "host file sharing crosses the confidentiality boundary"),
            Conflict("memballoon", "the host cannot reclaim encrypted memory"),
        ),
        validators=("confidential-computing", "launch-security-smm"),
        facts=(FACT,),
        details="<launchSecurity> of the strongest type offered by the host and known to "
                "libvirt; SEV family with the host's cbitpos and reducedPhysBits; "
                "<smm state='off'/> for SEV-ES, SEV-SNP and TDX, which cannot have SMM (in finish)",
        apply=apply_launch_security,
        finish=finish_smm,
    ),
    Feature(
        name="iommu-platform",
        summary="virtio devices go through the IOMMU (DMA API)",
        category="launch security",
        details="finish: iommu='on' on the <driver> of every virtio device; a virtio-serial "
                "controller with iommu='on' where there are virtio channels",
        finish=finish_iommu,
    ),
)


def read_host(probe):
    """The ``launch-security.host`` fact: what the host offers, from the domain capabilities
    the core read (live or recorded alike), and on the host itself the kernel's side (KVM
    module parameters, ``/dev/sev``); None knows neither."""
    if not probe.host.has_domcaps and not probe.local:
        return None
    kernel = read_kernel() if probe.local else {"kernel": None, "sev_device": None}
    return {**from_domcaps(probe.host.domcaps_features), **kernel}


def show_host(value, host, support):
    """The confidential-computing rows of ``vscen host``."""
    from vscen_launch_security.view import rows

    return rows(value, host, support)


def _validators():
    from vscen_launch_security import checks

    return (
        Validator(name="confidential-computing",
                  summary="the host offers launch security that the installed libvirt knows",
                  check=checks.check_confidential_computing),
        Validator(name="launch-security-smm",
                  summary="no feature that needs SMM (secure-boot) with a type that cannot have it "
                          "(SEV-ES, SEV-SNP, TDX)",
                  check=checks.check_smm_features),
        Validator(name="launch-security-platform", kind="domain",
                  summary="a confidential guest runs on q35 with UEFI",
                  check=checks.check_launch_security_platform),
        Validator(name="launch-security-firmware", kind="domain",
                  summary="no SMM and no SMM-backed Secure Boot firmware for SEV-ES, SEV-SNP and TDX",
                  check=checks.check_launch_security_firmware),
    )


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)


@hookimpl
def vscen_register_validators(register):
    for validator in _validators():
        register(validator)


@hookimpl
def vscen_register_facts(register):
    register(FactProvider(
        name=FACT,
        summary="the launch-security types the host offers, strongest first, the SEV family's "
                "parameters (from its domain capabilities) and, read on the host itself, the "
                "kernel's side (KVM module parameters, /dev/sev; else None)",
        read=read_host,
        example={"offered": ["sev-snp", "sev-es", "sev"],
                 "sev": {"cbitpos": 51, "reduced_phys_bits": 1, "max_guests": 59, "max_es_guests": 450},
                 "kernel": {"kvm_amd.sev": "Y", "kvm_amd.sev_es": "Y", "kvm_amd.sev_snp": "N"},
                 "sev_device": True},
        show=show_host,
    ))
