"""``vscen attest``: the guest owner's side of AMD SEV launch attestation.

session   the guest owner's Diffie-Hellman certificate and launch session blob, from the
          platform's PDH and certificate chain verified up to AMD's root keys (session.py)
launch    start a guest paused, compare its launch measurement with the expected one, resume
          only when they match (launch.py, the measurement in measure.py)
inject    a secret into a verified guest, in the SEV secret table format (secret.py)
verify    an offline check of a reported measurement, with virt-qemu-sev-validate's options
          (verify_cli.py holds the three commands)
"""

from __future__ import annotations

from vscen import Command, hookimpl


@hookimpl
def vscen_register_commands(register):
    register(Command(name="attest", summary="AMD SEV launch attestation for the guest owner: session, launch, inject, verify.",
                     app="vscen_attest.cli:app"))
