"""Platform features and what happens when the guest powers off, reboots or crashes.

- ``acpi``: ACPI and, on x86, the local APIC, which every modern guest OS expects: without
  ACPI a guest cannot be shut down gracefully (``virsh shutdown`` sends an ACPI power button
  press) and without the APIC it has no SMP interrupts.
- ``destroy-on-events``: power-off, reboot and crash all end the guest (``destroy``) instead
  of restarting it, so that a guest is only ever (re)started by its owner: a crashed or
  rebooted confidential guest is relaunched through its full attested launch, never reset in
  place.
- ``power-management``: lets the guest suspend to RAM and to disk (S3/S4), as a laptop-like
  desktop guest would; libvirt leaves them to QEMU's default otherwise. With UEFI firmware,
  suspend to disk is left out: libvirt's firmware auto-selection then demands a firmware that
  declares ``acpi-s4``, which the OVMF descriptors distributions ship (Debian 12's, Fedora's)
  do not, and the guest would not start ("Unable to find any firmware to satisfy 'efi'",
  seen with libvirt 9.0). Guests still hibernate: Linux powers off after writing the image,
  only the ACPI S4 state is missing.
"""

from __future__ import annotations

from vscen import Feature, hookimpl

X86 = ("x86_64", "i686")
EVENTS = ("on_poweroff", "on_reboot", "on_crash")


def apply_acpi(domain, ctx) -> None:
    domain.ensure("features/acpi")
    # the APIC is x86's interrupt controller; other architectures have their own (GIC...)
    if (ctx.settings.arch or ctx.host.arch) in X86:
        domain.ensure("features/apic")


def apply_destroy(domain, ctx) -> None:
    for event in EVENTS:
        domain.ensure(event).text("destroy")


def _uefi(ctx) -> bool:
    firmware = ctx.settings.firmware
    return firmware == "efi" or (firmware is None and ctx.has("uefi"))


def apply_pm(domain, ctx) -> None:
    pm = domain.ensure("pm")
    pm.ensure("suspend-to-mem").set(enabled="yes")
    if _uefi(ctx):
        ctx.note("power-management: no suspend-to-disk with UEFI (OVMF firmware descriptors do "
                 "not declare ACPI S4, so libvirt would find no firmware): suspend to RAM only")
        return
    pm.ensure("suspend-to-disk").set(enabled="yes")


FEATURES = (
    Feature(
        name="acpi",
        summary="ACPI and APIC",
        category="platform",
        details="<features><acpi/><apic/>",
        apply=apply_acpi,
    ),
    Feature(
        name="destroy-on-events",
        summary="power-off, reboot and crash end the guest",
        category="platform",
        details="on_poweroff, on_reboot, on_crash = destroy",
        apply=apply_destroy,
    ),
    Feature(
        name="power-management",
        summary="guest suspend to RAM and to disk",
        category="platform",
        details="<pm><suspend-to-mem enabled='yes'/><suspend-to-disk enabled='yes'/> "
                "(suspend-to-disk not with UEFI: OVMF descriptors do not declare ACPI S4)",
        apply=apply_pm,
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
