"""``vscen attest session``: the guest owner's DH certificate and launch session blob."""

from __future__ import annotations
