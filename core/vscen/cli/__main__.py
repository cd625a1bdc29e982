"""``python -m vscen.cli``."""

from vscen.cli import entry

entry()
