"""Open the libvirt connection, or fall back to the embedded ``test:///default`` driver.

The URI comes from ``--connect``, the config file, ``LIBVIRT_DEFAULT_URI``, else
``qemu:///system``. Only when none was given explicitly and that daemon cannot be reached does
vscen say so and use the embedded driver (no daemon needed) with its reference host profile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vscen.errors import LibvirtError

DEFAULT_URI = "qemu:///system"
EMBEDDED_URI = "test:///default"


@dataclass
class Connection:
    """An open libvirt connection, with the URI asked for and whether it is the embedded driver."""

    uri: str
    conn: object  # libvirt.virConnect
    embedded: bool
    note: str = ""

    @property
    def is_test(self) -> bool:
        return self.uri.startswith("test:")

    @property
    def is_local(self) -> bool:
        """A connection to this machine (no host part in the URI)."""
        from urllib.parse import urlparse

        return not urlparse(self.uri).hostname

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # closing a dropped connection is not worth an error
            pass


def on_this_machine(connection) -> bool:
    """Whether *connection* reaches this very machine through a real driver (not the embedded
    test driver, not a remote host): where vscen may read and write the host's own files."""
    return connection is not None and connection.is_local and not connection.is_test


def _silence(libvirt) -> None:
    # libvirt prints every error on stderr by default; vscen reports them itself
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _import_libvirt():
    """libvirt-python, its C library bound lazily: Python loads extensions with RTLD_NOW, which
    resolves every function of libvirt and of the fifty libraries it needs before the first
    call (a sixth of the cost of importing it); a command calls a few dozen of them."""
    import sys

    if "libvirt" in sys.modules or not hasattr(os, "RTLD_LAZY"):
        import libvirt

        return libvirt
    flags = sys.getdlopenflags()
    sys.setdlopenflags((flags & ~os.RTLD_NOW) | os.RTLD_LAZY)
    try:
        import libvirt
    finally:
        sys.setdlopenflags(flags)
    return libvirt


def open_connection(uri: str | None) -> Connection:
    """Open *uri*; with no explicit URI, fall back to the embedded driver when unreachable."""
    libvirt = _import_libvirt()
    _silence(libvirt)
    explicit = uri or os.environ.get("LIBVIRT_DEFAULT_URI")
    target = explicit or DEFAULT_URI
    try:
        return Connection(target, libvirt.open(target), embedded=target.startswith("test:"))
    except libvirt.libvirtError as exc:
        if explicit:
            raise LibvirtError(f"connect: cannot open '{target}': {exc.get_error_message()}") from None
        note = (
            f"no libvirt daemon at {target} ({exc.get_error_message()}); using the embedded "
            f"{EMBEDDED_URI} driver with vscen's reference host"
        )
    return Connection(EMBEDDED_URI, libvirt.open(EMBEDDED_URI), embedded=True, note=note)
