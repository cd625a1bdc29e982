"""``python -m vscen.cli``."""

from vscen.cli import main

main()
