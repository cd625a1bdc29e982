"""``--hugepages persistent``: keep the pages across reboots with ``vm.nr_hugepages`` in
``/etc/sysctl.d/90-vscen-hugepages.conf`` (the default page size only; other sizes are
reported with the kernel parameters that reserve them), and take the file back."""

from __future__ import annotations

import os
from pathlib import Path

from vscen import (
    ExistsError,
    HostError,
    Step,
    VscenError,
    host_identity,
    on_this_machine,
    replace_file,
    restore_file,
)
from vscen_hugepages.guest import DEFAULT_HUGE_KIB, Need, size_text
from vscen_hugepages.pools import backends, default_huge_kib

SYSCTL_CONF = Path("/etc/sysctl.d/90-vscen-hugepages.conf")
SYSCTL_HEADER = ("# Huge pages for guests made by vscen, reserved at boot. Written by 'vscen run "
                 "--hugepages persistent';\n# 'vscen destroy' takes it back.\n")


def _sysctl_text(total: int) -> str:
    return f"{SYSCTL_HEADER}vm.nr_hugepages = {total}\n"


def _sysctl_value(text: str | None) -> int | None:
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "vm.nr_hugepages":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _sysctl_step(connection, n: Need, planned: int) -> Step:
    path = SYSCTL_CONF

    def do():
        total = planned
        for pools in backends(connection):
            try:
                total = sum(pools.totals(n.size).values())
                break
            except VscenError:
                continue
        old = path.read_text() if path.exists() else None
        if (_sysctl_value(old) or 0) >= total:
            return None
        text = _sysctl_text(total)
        # the very file replaced comes back at undo (never text from the journal)
        return {"kind": "hugepages-sysctl", "path": str(path), **replace_file(path, text), "written": text,
                "host": host_identity(connection)}

    return Step(f"write {path}: vm.nr_hugepages = {planned} (keeps the huge pages across reboots)", do)


def plan_persistent(ctx, n: Need) -> list[Step]:
    connection = ctx.connection
    planned = n.total + n.missing
    boot = f"hugepagesz={size_text(n.size)} hugepages={planned}"
    local = on_this_machine(connection)
    if connection is None or connection.is_test:
        ctx.note(f"hugepages: --hugepages persistent: {ctx.uri or 'no connection'} is not a real "
                 f"host, so nothing is kept across reboots (a host would need vm.nr_hugepages = {planned})")
        return []
    if n.size != (default_huge_kib() if local else DEFAULT_HUGE_KIB):
        ctx.note(f"hugepages: {n.size} KiB pages can only be reserved across reboots by the kernel: "
                 f"add the kernel parameters '{boot}' on {connection.uri} and reboot it (vscen "
                 "never changes kernel parameters)")
        return []
    if n.cells and len(ctx.host.cells) > 1:
        ctx.note(f"hugepages: at boot the kernel spreads vm.nr_hugepages over every NUMA node; to "
                 f"have the pages in {n.where} use the kernel parameters 'hugepagesz="
                 f"{size_text(n.size)} hugepages={n.cells[0]}:{n.pages}' (Linux >= 5.16) instead")
    if not connection.is_local:
        ctx.note(f"hugepages: remote host {connection.uri}: to keep the pages across reboots, put "
                 f"'vm.nr_hugepages = {planned}' in {SYSCTL_CONF} there")
        return []
    if not SYSCTL_CONF.parent.is_dir():
        ctx.note(f"hugepages: {SYSCTL_CONF.parent} does not exist: to keep the pages across "
                 f"reboots, add 'vm.nr_hugepages = {planned}' to /etc/sysctl.conf")
        return []
    try:
        old = SYSCTL_CONF.read_text() if SYSCTL_CONF.exists() else None
    except OSError as exc:
        raise HostError(f"hugepages: cannot read {SYSCTL_CONF} ({exc.strerror})") from None
    if old is not None and not old.startswith(SYSCTL_HEADER) and not ctx.force:
        raise ExistsError(f"hugepages: {SYSCTL_CONF} exists and was not written by vscen "
                          "(use --force to replace it)",
                          [f"hugepages: {SYSCTL_CONF} exists and was not written by vscen "
                           "(use --force to replace it)"])
    if (_sysctl_value(old) or 0) >= planned:
        ctx.note(f"hugepages: {SYSCTL_CONF} keeps {_sysctl_value(old)} pages across reboots: unchanged")
        return []
    if not os.access(SYSCTL_CONF.parent, os.W_OK):
        raise HostError(f"hugepages: cannot write {SYSCTL_CONF} (--hugepages persistent needs root)")
    return [_sysctl_step(connection, n, planned)]


def undo_sysctl(connection, record: dict) -> None:
    """Remove the file vscen wrote, or put back the one it replaced: only while it is still the
    one vscen wrote, on the machine where it did, never through a test driver."""
    restore_file(connection, record, SYSCTL_CONF, "hugepages sysctl", "*vscen*.conf")
