"""Guest firmware: UEFI and Secure Boot.

- ``uefi``: ``<os firmware='efi'>`` lets libvirt pick the OVMF/AAVMF build and NVRAM template
  from the firmware descriptors the host has installed, instead of vscen naming paths that
  differ per distribution. The ``uefi-firmware`` host check fails where there is none.
- ``secure-boot``: asks libvirt's auto-selection for a firmware with Secure Boot *and* the
  Microsoft/distribution keys enrolled, so that the guest boots signed loaders only. On x86,
  Secure Boot firmware needs SMM (it keeps the variable store out of the guest OS's reach),
  hence ``<smm state='on'/>``. Where the host's firmware offers no Secure Boot, the guest keeps
  plain UEFI and a note says so.

Secure Boot and confidential guests: Secure Boot with SMM works with plain SEV (OVMF's SMM
build supports SEV) and with no launch security. SEV-ES, SEV-SNP and TDX guests cannot have
SMM (KVM and QEMU refuse it; the launch-security plugin's type table cites where), and no
distribution ships a Secure Boot OVMF for them without SMM, so the launch-security plugin
refuses ``secure-boot`` there before anything is built, with the reason; their firmware is
measured at launch instead, which the guest owner verifies.

The firmware libvirt will pick: on the host itself, the fact ``firmware.descriptors`` (named by
``uefi``) holds the installed QEMU firmware descriptors (:mod:`vscen_firmware.descriptors`),
and the domain check ``uefi-firmware-match`` looks, as libvirt's auto-selection does, for one
that offers what the finished XML asks: UEFI for its architecture and machine, the Secure Boot
features, no ``requires-smm`` where SMM is off, and the launch security's own (``amd-sev``,
``amd-sev-es``, ``amd-sev-snp``, ``intel-tdx``). Where none does, the guest could not start
("Unable to find 'efi' firmware that is compatible"): the check fails and says what to install
(Debian 12's ovmf, for one, lists ``amd-sev`` only: no SEV-ES, SEV-SNP or TDX firmware).
Where the descriptors are unknown (a recorded or remote host) it says nothing.
"""

from __future__ import annotations

from vscen import Check, FactProvider, Feature, Validator, hookimpl

X86 = ("x86_64", "i686")
#: the installed firmware descriptors (this plugin's fact)
FACT = "firmware.descriptors"


def apply_uefi(domain, ctx) -> None:
    domain.ensure("os").set(firmware="efi")


def apply_secure_boot(domain, ctx) -> None:
    host = ctx.host
    if host.has_domcaps and "yes" not in host.secure_boot:
        ctx.note("secure-boot: the host's UEFI firmware offers no Secure Boot: the guest boots "
                 "plain UEFI (install a Secure Boot OVMF build, e.g. ovmf / edk2-ovmf)")
        return
    fw = domain.ensure("os/firmware")
    fw.child("feature", name="secure-boot").set(enabled="yes")
    fw.child("feature", name="enrolled-keys").set(enabled="yes")
    arch = ctx.settings.arch or host.arch
    if arch in X86:
        domain.ensure("features/smm").set(state="on")
        machine = ctx.settings.machine or host.machine
        if machine and "q35" not in machine:
            ctx.note(f"secure-boot: machine '{machine}' has no SMM support for Secure Boot "
                     "firmware: use machine q35")


FEATURES = (
    Feature(
        name="uefi",
        summary="UEFI firmware, chosen by libvirt",
        category="firmware",
        validators=("uefi-firmware",),
        facts=(FACT,),
        details="<os firmware='efi'>: libvirt's firmware auto-selection",
        apply=apply_uefi,
    ),
    Feature(
        name="secure-boot",
        summary="UEFI Secure Boot with enrolled keys",
        category="firmware",
        implies=("uefi",),
        details="<os><firmware> features secure-boot and enrolled-keys; <features><smm state='on'/>",
        apply=apply_secure_boot,
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)


def _read(probe):
    from vscen_firmware.descriptors import read_descriptors

    return read_descriptors(probe)


def check_firmware_match(ctx):
    """A firmware descriptor libvirt can pick for the finished XML, where the host's are known."""
    from vscen_firmware.descriptors import matches, needs

    root = ctx.xml
    os_ = root.find("os")
    descriptors = ctx.host.fact(FACT)
    if os_ is None or os_.get("firmware") != "efi" or descriptors is None or (root.findtext("os/loader") or "").strip():
        return []
    os_type = root.find("os/type")
    arch = (os_type.get("arch") if os_type is not None else None) or ctx.host.arch
    machine = (os_type.get("machine") if os_type is not None else None) or ctx.host.machine or ""
    want, refuse = needs(root)
    hits = [d["file"] for d in descriptors if matches(d, arch, machine, want, refuse)]
    asked = ", ".join(sorted(want)) or "nothing more"
    if hits:
        return [Check("pass", f"libvirt can pick {hits[0]} (UEFI for {arch} {machine}; features: {asked})")]
    have = "; ".join(f"{d['file']} ({', '.join(d['features']) or 'no features'})" for d in descriptors) or "none"
    without = f", without {', '.join(sorted(refuse))}" if refuse else ""
    return [Check(
        "fail", f"no installed firmware descriptor offers UEFI for {arch} {machine} with {asked}{without}, so "
                f"libvirt finds no firmware to start the guest with; installed: {have}",
        fix="install a UEFI build that has them, with its descriptor (in /usr/share/qemu/firmware or "
            "/etc/qemu/firmware): SEV-ES needs an OVMF listing amd-sev-es, SEV-SNP a stateless OVMF "
            "(edk2 OvmfPkg/AmdSev) listing amd-sev-snp, TDX a TDVF listing intel-tdx; or drop what asks "
            "for the missing features",
        element=root.getroottree().getpath(os_))]


@hookimpl
def vscen_register_facts(register):
    register(FactProvider(
        name=FACT,
        summary="the QEMU firmware descriptors installed on the host (/usr/share/qemu/firmware, "
                "/etc/qemu/firmware), which libvirt's firmware auto-selection picks from; read "
                "on the host itself only, else None",
        read=_read,
        example=[{"file": "60-edk2-x86_64.json", "interfaces": ["uefi"], "device": "flash", "mode": "split",
                  "features": ["acpi-s3", "amd-sev", "verbose-dynamic"],
                  "targets": [{"architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"]}]}],
    ))


@hookimpl
def vscen_register_validators(register):
    register(Validator(name="uefi-firmware-match", kind="domain",
                       summary="an installed firmware descriptor offers what the UEFI guest asks for "
                               "(Secure Boot, SMM, launch security)",
                       check=check_firmware_match))
