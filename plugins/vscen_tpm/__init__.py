"""A virtual TPM 2.0.

``tpm``: an emulated TPM (swtpm, state kept by libvirt per guest) for measured boot, disk
encryption keys sealed to the boot state, and Windows 11. The model is ``tpm-crb`` on x86 (the
simpler command/response buffer interface that TPM 2.0 guests prefer) and ``tpm-tis`` off x86,
where CRB does not exist; an x86 host that offers only ``tpm-tis`` gets that, with a note.
Version 2.0 because 1.2 is obsolete and unsupported by current guests. The ``tpm-emulator``
host check fails where the host has no emulator backend.
"""

from __future__ import annotations

from vscen import Feature, hookimpl

X86 = ("x86_64", "i686")


def apply_tpm(domain, ctx) -> None:
    arch = ctx.settings.arch or ctx.host.arch
    model = "tpm-crb" if arch in X86 else "tpm-tis"
    # off x86 there is no CRB to fall back to
    if model == "tpm-crb" and not ctx.host.offers("tpm.model", model) and ctx.host.offers("tpm.model", "tpm-tis"):
        ctx.note("tpm: the host does not offer the tpm-crb TPM model: using tpm-tis")
        model = "tpm-tis"
    tpm = domain.ensure("devices").child("tpm").set(model=model)
    tpm.ensure("backend").set(type="emulator", version="2.0")


FEATURES = (
    Feature(
        name="tpm",
        summary="emulated TPM 2.0",
        category="tpm",
        validators=("tpm-emulator",),
        details="<tpm model='tpm-crb'> (tpm-tis off x86) <backend type='emulator' version='2.0'/>",
        apply=apply_tpm,
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
