"""``vscen shell``: build a guest interactively (to be written)."""

from __future__ import annotations


def shell() -> None:
    """An interactive shell to choose a scenario, change settings, see the XML and run it."""
    raise SystemExit("vscen shell is not written yet")
