"""``vscen snapshot`` (the os-testing plugin's command): the libvirt snapshots of a guest vscen made, and going back to the one
vscen took.

A host action that takes a snapshot journals it as ``{"kind": "snapshot", "domain", "uuid",
"name", "before_first_boot"}``. ``vscen snapshot revert NAME`` goes back to the newest such
snapshot: the guest is stopped if it runs, libvirt reverts its disks (and its definition) to
the snapshot, and, for a snapshot taken before the first boot, the firmware variables (NVRAM)
and the TPM state go too, since neither existed then and no disk snapshot holds them: the
domain is undefined with them (``VIR_DOMAIN_UNDEFINE_NVRAM | _TPM``, keeping the snapshots'
data) and defined again with its snapshots, so libvirt makes both afresh at the next start, as
at the first. Only guests vscen made (a journal under the output directory) are touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Snapshots of a guest vscen made: revert to the state before its first boot.")

NameArg = Annotated[str, typer.Argument(help="The guest's name.")]
OutputOpt = Annotated[Optional[Path], typer.Option(help="Where the guest's directory is (default: $XDG_DATA_HOME/vscen).")]
WAIT_HELP = "Seconds to wait while another vscen changes the guest (0: refuse at once as busy)."
ConnectOpt = Annotated[Optional[str], typer.Option("--connect", "-c", help="libvirt URI (default: the one the guest was made on).")]


def _guest(name: str, output: Path | None, connect: str | None):
    """(journal, connection, domain) of guest *name* vscen made; refuses any other."""
    import libvirt

    from vscen import LibvirtError, guest_journal, open_connection

    journal = guest_journal(name, output, command="snapshot")
    connection = open_connection(connect or journal.uri)
    try:
        dom = connection.conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        connection.close()
        raise LibvirtError(f"snapshot: domain '{name}' is not on {connection.uri}: {exc.get_error_message()}") from None
    return journal, connection, dom


def _taken(journal) -> list[dict]:
    """The snapshot records of the journal, oldest first (of the shape vscen writes)."""
    return [e["record"] for e in journal.entries if e["record"].get("kind") == "snapshot"
            and isinstance(e["record"].get("name"), str) and isinstance(e["record"].get("uuid"), str)]


def _when(snap) -> str:
    import time

    from lxml import etree

    stamp = etree.fromstring(snap.getXMLDesc(0).encode()).findtext("creationTime")
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(int(stamp))) if stamp else "?"


@app.command("list")
def list_(name: NameArg, output: OutputOpt = None, connect: ConnectOpt = None,
          json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """The snapshots of guest NAME, and which one vscen took."""
    from lxml import etree

    journal, connection, dom = _guest(name, output, connect)
    ours = {r["name"]: r for r in _taken(journal)}
    rows = []
    try:
        for snap in dom.listAllSnapshots(0):
            root = etree.fromstring(snap.getXMLDesc(0).encode())
            record = ours.get(snap.getName(), {})
            rows.append({"name": snap.getName(), "created": _when(snap), "state": root.findtext("state"),
                         "current": bool(snap.isCurrent()), "vscen": bool(record),
                         "before_first_boot": bool(record.get("before_first_boot")),
                         "description": root.findtext("description") or ""})
    finally:
        connection.close()
    rows.sort(key=lambda r: r["created"])
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"{name} has no snapshots")
    for r in rows:
        marks = ", ".join(m for m, on in (("current", r["current"]), ("vscen's", r["vscen"]),
                                          ("before the first boot", r["before_first_boot"])) if on)
        typer.echo(f"{r['name']}  {r['created']}  {r['state']}" + (f"  ({marks})" if marks else ""))


@app.command()
def revert(name: NameArg, start: Annotated[bool, typer.Option(help="Start the guest once reverted.")] = False,
           output: OutputOpt = None, connect: ConnectOpt = None,
           wait: Annotated[float, typer.Option("--wait", min=0, help=WAIT_HELP)] = 60.0):
    """Revert guest NAME to the snapshot vscen took (stopping it if it runs)."""
    from vscen import guest_lock

    # run and destroy of the same guest wait for the revert, and it for them
    with guest_lock(name, output, wait, notify=lambda msg: typer.echo(msg, err=True)):
        _revert(name, start, output, connect)


def _revert(name: str, start: bool, output: Path | None, connect: str | None) -> None:
    import libvirt

    from vscen import LibvirtError, UsageError

    journal, connection, dom = _guest(name, output, connect)
    try:
        records = _taken(journal)
        if not records:
            raise UsageError(f"snapshot: vscen took no snapshot of '{name}' (none of its features asked for one): "
                             "nothing to revert to")
        record = records[-1]
        if dom.UUIDString() != record.get("uuid"):
            raise UsageError(f"snapshot: domain '{name}' on {connection.uri} is not the one vscen made (UUID "
                             f"{dom.UUIDString()}, not {record.get('uuid')}); it is left alone")
        try:
            snap = dom.snapshotLookupByName(record["name"])
        except libvirt.libvirtError:
            raise LibvirtError(f"snapshot: {record['name']} of '{name}' is gone from {connection.uri} (deleted "
                               "outside vscen): nothing to revert to") from None
        try:
            if dom.isActive():
                dom.destroy()
                typer.echo(f"stopped {name} (it was running)")
            dom.revertToSnapshot(snap, 0)
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"snapshot: libvirt could not revert '{name}' to {record['name']}: "
                               f"{exc.get_error_message()}") from None
        what = f"reverted {name} to {record['name']} (taken {_when(snap)})"
        if record.get("before_first_boot"):
            dom, reset = _forget_firmware_state(connection, dom, record["name"])
            what += ": its disks as before its first boot; " + (
                "its firmware variables and TPM state removed, made afresh at the next start" if reset
                else f"{connection.uri} keeps no firmware variables or TPM state")
        typer.echo(what)
        if start:
            try:
                dom.create()
            except libvirt.libvirtError as exc:
                raise LibvirtError(f"snapshot: reverted, but libvirt could not start '{name}': "
                                   f"{exc.get_error_message()}") from None
            typer.echo(f"started {name}")
    finally:
        connection.close()


def _forget_firmware_state(connection, dom, current: str):
    """Undefine *dom* with its NVRAM and TPM state, keeping its snapshots' data, and define it
    again with its snapshots; returns the new domain object, and whether libvirt took the state
    (a driver that keeps none refuses the flags)."""
    import libvirt

    from vscen import LibvirtError

    name = dom.name()
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    snaps = [(s.getName(), s.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE))
             for s in dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)]
    meta = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA  # libvirt's records only: the data stays
    reset = True
    try:
        try:
            dom.undefineFlags(meta | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_TPM", 0))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            dom.undefineFlags(meta)
            reset = False
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"snapshot: reverted, but libvirt could not reset the firmware and TPM state of "
                           f"'{name}': {exc.get_error_message()}") from None
    try:
        dom = connection.conn.defineXML(xml)
        for snap_name, snap_xml in snaps:
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            if snap_name == current:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
            dom.snapshotCreateXML(snap_xml, flags)
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"snapshot: '{name}' was undefined to reset its firmware state, and libvirt could not "
                           f"define it (or its snapshots) again: {exc.get_error_message()}") from None
    return dom, reset
