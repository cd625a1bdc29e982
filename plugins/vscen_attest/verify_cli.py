"""``vscen attest verify``, ``launch`` and ``inject``: measurements and secrets."""

from __future__ import annotations
