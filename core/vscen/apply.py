"""Apply a plan step by step, journalling each change; on any failure, take back what this
run did, newest first, so that a failed run leaves the host as it found it.

Taking back goes through the records only (the owner's ``undo(connection, record)``), the same
path ``vscen destroy`` takes later: what rollback does is what destroy does.
"""

from __future__ import annotations

from pathlib import Path

from vscen.errors import LibvirtError, VscenError
from vscen.files import atomic_write
from vscen.model import Step

CORE = "vscen"
#: the namespace of the metadata in which vscen stores the digest of the XML it defined
METADATA_NS = "https://vscen.dev/xmlns/guest/1"


def digest(xml: str) -> str:
    """What tells that a domain on the host is the one this XML defines."""
    import hashlib

    return hashlib.sha256(xml.encode()).hexdigest()


def apply(plan, journal, connection, registry, progress=None) -> list[dict]:
    """Run *plan*'s steps; returns the journal entries this run added."""
    added: list[dict] = []
    for i, step in enumerate(plan.steps, 1):
        if progress:
            progress(i, len(plan.steps), step)
        try:
            record = step.do()
        except BaseException as exc:
            problems = rollback(added, journal, connection, registry)
            if isinstance(exc, KeyboardInterrupt):
                raise
            msg = str(exc) if isinstance(exc, VscenError) else f"{type(exc).__name__}: {exc}"
            tail = f"; rolling back failed too: {'; '.join(problems)}" if problems else "; rolled back what this run did"
            cls = type(exc) if isinstance(exc, VscenError) else VscenError
            raise cls(f"{step.description}: {msg}{tail}") from exc
        if record:
            added.append(journal.add(step.owner or CORE, record))
    return added


def rollback(entries: list[dict], journal, connection, registry, keep_storage: bool = False) -> list[str]:
    """Take back *entries*, newest first; returns what could not be taken back."""
    problems = []
    for entry in reversed(entries):
        if keep_storage and entry["record"].get("storage"):
            continue
        if _is_dirs(entry) and any(not _is_dirs(e) for e in journal.entries):
            # the guest's directory holds the journal of what is still there: it stays
            continue
        try:
            undo_entry(entry, connection, registry)
            journal.remove(entry)
        except Exception as exc:  # keep taking back the rest; report what stays
            problems.append(f"{entry['owner']} {entry['record'].get('kind', '')}: {exc}")
    return problems


def _is_dirs(entry: dict) -> bool:
    return entry["owner"] == CORE and entry["record"].get("kind") == "dirs"


def undo_entry(entry: dict, connection, registry) -> None:
    owner, record = entry["owner"], entry["record"]
    if owner == CORE:
        UNDO[record["kind"]](connection, record)
        return
    action = registry.host_actions.get(owner) if registry else None
    if action is None:
        raise VscenError(f"no plugin provides host action '{owner}' to take back {record}")
    action.undo(connection, record)


# -- the core's own steps ----------------------------------------------------------------------


def make_dirs(path: Path) -> Step:
    def do():
        created = [p for p in reversed([path, *path.parents]) if not p.exists()]
        for p in created:
            p.mkdir()
        return {"kind": "dirs", "paths": [str(p) for p in created]} if created else None

    return Step(f"create {path}", do, CORE)


def _undo_dirs(_conn, record) -> None:
    from vscen.journal import FILENAME

    for p in map(Path, reversed(record["paths"])):
        if p.is_dir():
            # the journal itself is the last thing in the guest's directory
            (p / FILENAME).unlink(missing_ok=True)
            p.rmdir()


def write_file(path: Path, text: str) -> Step:
    def do():
        old = path.read_text() if path.exists() else None
        atomic_write(path, text)
        return {"kind": "file", "path": str(path), "previous": old}

    return Step(f"write {path}", do, CORE)


def _undo_file(_conn, record) -> None:
    path = Path(record["path"])
    if record.get("previous") is not None:
        atomic_write(path, record["previous"])
    else:
        path.unlink(missing_ok=True)


def _with_uuid(xml: str, uuid: str) -> str:
    """*xml* with ``<uuid>`` *uuid* after ``<name>``, unless it has a UUID already."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    if root.find("uuid") is not None:
        return xml
    el = etree.Element("uuid")
    el.text = uuid
    name = root.find("name")
    if name is not None:
        name.addnext(el)
    else:
        root.insert(0, el)
    return etree.tostring(root, encoding="unicode")


def define(conn, xml: str, existing) -> Step:
    import libvirt

    def do():
        text, old = xml, None
        if existing is not None:
            old = existing.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
            # libvirt redefines a domain of the same name only under the same UUID
            text = _with_uuid(xml, existing.UUIDString())
        try:
            dom = conn.conn.defineXMLFlags(text, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, f'<guest digest="{digest(xml)}"/>',
                            "vscen", METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"libvirt refused the domain: {exc.get_error_message()}") from None
        return {"kind": "domain", "name": dom.name(), "uuid": dom.UUIDString(), "previous": old}

    verb = "redefine" if existing is not None else "define"
    return Step(f"{verb} domain on {conn.uri}", do, CORE)


def _lookup(conn, record):
    import libvirt

    try:
        return conn.conn.lookupByUUIDString(record["uuid"]) if record.get("uuid") else conn.conn.lookupByName(record["name"])
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None  # gone already
        raise


def _undo_domain(conn, record) -> None:
    import libvirt

    if record.get("previous"):
        conn.conn.defineXML(record["previous"])
        return
    dom = _lookup(conn, record)
    if dom is None:
        return
    if dom.isActive():
        dom.destroy()
    # the NVRAM and TPM state were made for this domain: they go with it; so does the metadata
    # of its snapshots (libvirt refuses to undefine a domain that has some without the flag)
    meta = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_TPM", 0) | meta
    try:
        dom.undefineFlags(flags)
    except libvirt.libvirtError:
        dom.undefineFlags(meta)  # a driver without NVRAM or TPM state refuses those flags


def start(conn, name: str) -> Step:
    import libvirt

    def do():
        dom = conn.conn.lookupByName(name)
        if dom.isActive():
            return None
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"libvirt could not start '{name}': {exc.get_error_message()}") from None
        return {"kind": "running", "name": name, "uuid": dom.UUIDString()}

    return Step(f"start domain {name}", do, CORE)


def _undo_running(conn, record) -> None:
    dom = _lookup(conn, record)
    if dom is not None and dom.isActive():
        dom.destroy()


def create_transient(conn, xml: str) -> Step:
    """Create and start a transient domain: never defined, gone when it stops."""
    import libvirt

    def do():
        from lxml import etree

        flags = libvirt.VIR_DOMAIN_START_VALIDATE
        if not conn.is_test:
            # libvirt 9.0 keeps a transient guest's NVRAM file after it stops: a later guest
            # of the same name would boot with its variables, so every start is a first one
            flags |= getattr(libvirt, "VIR_DOMAIN_START_RESET_NVRAM", 0)
        try:
            dom = conn.conn.createXML(xml, flags)
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"libvirt could not create the transient domain: {exc.get_error_message()}") from None
        try:
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, f'<guest digest="{digest(xml)}"/>',
                            "vscen", METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            live = etree.fromstring(dom.XMLDesc(0).encode())
        except libvirt.libvirtError as exc:
            dom.destroy()
            raise LibvirtError(f"transient domain {dom.name()}: {exc.get_error_message()}") from None
        return {"kind": "transient", "name": dom.name(), "uuid": dom.UUIDString(),
                "nvram": live.findtext("os/nvram")}

    return Step(f"create and start transient domain on {conn.uri} (never defined; gone when it stops)", do, CORE)


def _undo_transient(conn, record) -> None:
    import libvirt

    dom = _lookup(conn, record)
    if dom is not None and dom.isActive():
        dom.destroy()
    nvram = record.get("nvram")
    if not nvram or not conn.is_local or conn.is_test:
        return  # on a remote host libvirt keeps the file; nothing reaches it through the API
    try:
        conn.conn.lookupByName(record["name"])
        return  # a domain of that name exists again and may use the file
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    Path(nvram).unlink(missing_ok=True)


UNDO = {"dirs": _undo_dirs, "file": _undo_file, "domain": _undo_domain, "running": _undo_running,
        "transient": _undo_transient}
