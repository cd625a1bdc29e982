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
"""

from __future__ import annotations

from vscen import Feature, hookimpl

X86 = ("x86_64", "i686")


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


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
