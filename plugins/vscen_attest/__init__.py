"""``vscen attest``: the guest owner's side of AMD SEV launch attestation.

session      the guest owner's Diffie-Hellman certificate and launch session blob, from the
             platform's PDH and certificate chain verified up to AMD's root keys (session.py,
             certs.py); with --domain put into a defined guest's <launchSecurity>
set-session  a session made elsewhere (its public files) put into a guest, by the host's
             administrator
launch       start a guest paused, compare its launch measurement with the expected one, resume
             only when they match (launch.py, the measurement in measure.py)
inject       a secret into a verified guest, in the SEV secret table format (secret.py)
verify       an offline check of a reported measurement, with virt-qemu-sev-validate's options

The commands are in session_cli.py and verify_cli.py, loaded only when ``vscen attest`` runs
(cli.py); all take the owner's keys as --tk (TEK then TIK, 32 bytes, mode 600) and the host as
--connect. docs/secure-vm.md walks a guest owner through them."""

from __future__ import annotations

from vscen import Command, hookimpl

VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_commands(register):
    register(Command(name="attest", summary="AMD SEV launch attestation for the guest owner: session, launch, inject, verify.",
                     app="vscen_attest.cli:app"))
