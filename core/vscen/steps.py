"""The core's own steps of a plan: the guest's directory, its domain XML file, the define and
the start (or the transient create), each with the undo that takes its record back, proving
first that what it takes back is what vscen made."""

from __future__ import annotations

import os
from pathlib import Path

from vscen.errors import ExistsError, LibvirtError, UsageError, VscenError
from vscen.model import Step
from vscen.ownership import BACKUP_MARK

#: the owner name of the core's own records in a journal
CORE = "vscen"
#: the namespace of the metadata in which vscen stores the digest of the XML it defined
METADATA_NS = "https://vscen.dev/xmlns/guest/1"


def digest(xml: str) -> str:
    """What tells that a domain on the host is the one this XML defines."""
    from vscen.files import sha256

    return sha256(xml.encode()).hexdigest()


def make_dirs(path: Path) -> Step:
    """Create *path* and its missing parents, private (0700); a directory another run made
    meanwhile is that run's, not recorded here."""

    def do():
        created = []
        for p in reversed([path, *path.parents]):
            if p.exists():
                continue
            try:
                p.mkdir(mode=0o700)
            except FileExistsError:
                continue
            created.append(p)
        return {"kind": "dirs", "paths": [str(p) for p in created]} if created else None

    return Step(f"create {path}", do, CORE)


def _home(home, what: str) -> Path:
    if home is None:
        raise VscenError(f"{what}: the guest's directory is not known; not touched")
    return Path(home)


def _undo_dirs(_conn, record, home) -> None:
    from vscen.journal import FILENAME, LOGNAME, lock_path
    from vscen.ownership import check_record

    what = "vscen dirs"
    check_record(record, {"paths": list}, what)
    home = _home(home, what)
    paths = record["paths"]
    if not paths or not all(isinstance(p, str) for p in paths) or len(paths) > 64:
        raise UsageError(f"{what}: the journal's 'paths' is not a list of directories; not touched")
    # only the guest's directory and the parents made for it, each the parent of the next
    chain = [str(p) for p in (home, *home.parents)]
    if paths[-1] not in chain or any(str(Path(b).parent) != a for a, b in zip(paths, paths[1:], strict=False)):
        raise UsageError(f"{what}: {paths[-1]} is not this guest's directory {home} or its parents; not touched")
    for p in map(Path, reversed(paths)):
        if p.is_symlink() or not p.is_dir():
            continue
        if p == home:
            # the journal itself is the last thing in the guest's directory
            for name in (FILENAME, LOGNAME):
                (p / name).unlink(missing_ok=True)
            for backup in p.glob(f".*{BACKUP_MARK}*"):
                backup.unlink(missing_ok=True)
            p.rmdir()
            lock_path(p).unlink(missing_ok=True)
            continue
        try:
            p.rmdir()
        except OSError:
            pass  # a parent that holds something else now (another guest): it stays


#: the mark of the copy of a file vscen replaced, beside it in the guest's directory


def write_file(path: Path, text: str) -> Step:
    """Write *path* (in the guest's directory); a file there before is kept beside it (a hard
    link, so the very same file comes back at undo). The record holds the identity (device,
    inode, size, sha256) of both: undo touches the file only while it is still that one."""
    from vscen.ownership import replace_file

    def do():
        if path.exists() and path.read_text() == text:
            return None  # another run wrote the same meanwhile
        return {"kind": "file", "path": str(path), **replace_file(path, text)}

    return Step(f"write {path}", do, CORE)


def _undo_file(_conn, record, home) -> None:
    from vscen.ownership import IDENTITY, check_record, file_identity, safe_path, same_file

    what = "vscen file"
    if isinstance(record, dict) and "identity" not in record and "previous" in record:
        # recorded by a vscen before 0.2, without the file's identity: gone is fine, else the
        # user decides (its "previous" text is never written back)
        path = safe_path(record.get("path"), [_home(home, what)], what)
        if path.exists() or path.is_symlink():
            raise VscenError(f"{what}: {path} was recorded by an older vscen without its identity; left in "
                             "place (remove it yourself if it is not wanted, then run vscen destroy again)")
        return
    check_record(record, {"path": str, "identity": dict, "backup?": (str, type(None)),
                          "previous?": (dict, type(None))}, what)
    home = _home(home, what)
    path = safe_path(record["path"], [home], what)
    check_record(record["identity"], IDENTITY, what)
    backup = safe_path(record["backup"], [home], what, pattern=f".*{BACKUP_MARK}*") if record.get("backup") else None
    same = same_file(path, record["identity"])
    if same is False:
        raise VscenError(f"{what}: {path} changed since vscen wrote it; left in place (remove it yourself "
                         "if it is not wanted, then run vscen destroy again)")
    if backup is None:
        path.unlink(missing_ok=True)
        return
    kept = file_identity(backup)
    if kept is None:
        path.unlink(missing_ok=True)  # the copy is gone: nothing to put back
        return
    if not same_file(backup, record.get("previous")):
        raise VscenError(f"{what}: {backup} is not the file vscen replaced; not touched")
    os.replace(backup, path)


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


def define(conn, xml: str, existing, validated: bool = False) -> Step:
    """Define (or redefine) the domain; libvirt validates it against its schema unless
    *validated* says vscen did, against the same schema files (libvirtd on this machine)."""
    import libvirt
    from lxml import etree

    name = etree.fromstring(xml.encode()).findtext("name")

    def do():
        text, old = xml, None
        now = existing
        if now is None:
            # another run of this guest may have defined it between this run's plan and its
            # lock: the same definition is done already; another one is not this run's to replace
            try:
                now = conn.conn.lookupByName(name)
            except libvirt.libvirtError:
                now = None
            if now is not None:
                if stored_digest(now) == digest(xml):
                    return None
                raise ExistsError(f"domain: '{name}' was defined on {conn.uri} with another definition "
                                  "since this run's plan (another vscen?); run again, or use --force")
        if existing is not None:
            old = existing.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
            # libvirt redefines a domain of the same name only under the same UUID
            text = _with_uuid(xml, existing.UUIDString())
        try:
            dom = conn.conn.defineXMLFlags(text, 0 if validated else libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, f'<guest digest="{digest(xml)}"/>',
                            "vscen", METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"libvirt refused the domain: {exc.get_error_message()}") from None
        return {"kind": "domain", "name": dom.name(), "uuid": dom.UUIDString(), "previous": old,
                "digest": digest(xml)}

    verb = "redefine" if existing is not None else "define"
    return Step(f"{verb} domain on {conn.uri}", do, CORE)


def _lookup(conn, record):
    import libvirt

    try:
        return conn.conn.lookupByUUIDString(record["uuid"])
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None  # gone already
        raise


_DOMAIN = {"name": str, "uuid": str}


def _check_domain(record, what: str) -> None:
    import re

    from vscen.ownership import check_record

    check_record(record, _DOMAIN, what)
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", record["uuid"]):
        raise UsageError(f"{what}: the journal's uuid {record['uuid']!r} is not a UUID; not touched")


def stored_digest(dom, live: bool = False) -> str | None:
    """The digest vscen stored in *dom*'s metadata when it defined it; None if none."""
    import libvirt
    from lxml import etree

    which = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
    try:
        meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, which)
    except libvirt.libvirtError:
        return None
    return etree.fromstring(meta.encode()).get("digest")


def _ours(dom, record, live: bool = False) -> bool:
    """Whether *dom* carries the mark vscen sets on the domains it defines (and, where the
    record has it, the digest of the XML vscen defined)."""
    stored = stored_digest(dom, live=live)
    if stored is None and not live:
        stored = stored_digest(dom, live=True)
    return stored is not None and record.get("digest") in (None, stored)


def _undo_domain(conn, record, _home=None) -> None:
    import libvirt
    from lxml import etree

    what = f"vscen domain {record.get('name')!r}" if isinstance(record, dict) else "vscen domain"
    _check_domain(record, what)
    from vscen.ownership import check_record

    check_record(record, {"previous?": (str, type(None)), "digest?": str}, what)
    dom = _lookup(conn, record)
    if dom is None:
        return
    if not _ours(dom, record):
        raise VscenError(f"{what}: the domain of UUID {record['uuid']} on {conn.uri} is not the one vscen "
                         "defined (no vscen mark, or another definition); not touched")
    if record.get("previous"):
        try:
            old = etree.fromstring(record["previous"].encode())
        except etree.XMLSyntaxError:
            raise VscenError(f"{what}: the journal's previous definition is not XML; not touched") from None
        if old.tag != "domain" or old.findtext("name") != record["name"] or old.findtext("uuid") != record["uuid"]:
            raise VscenError(f"{what}: the journal's previous definition is not of this domain; not touched")
        conn.conn.defineXML(record["previous"])
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


def _stop_if_ours(conn, record, what: str) -> None:
    """Stop the running domain of the record's UUID, if vscen's mark says it made it."""
    dom = _lookup(conn, record)
    if dom is not None and dom.isActive():
        if not _ours(dom, record, live=True):
            raise VscenError(f"{what}: the domain of UUID {record['uuid']} on {conn.uri} is not one vscen "
                             "made; not stopped")
        dom.destroy()


def _undo_running(conn, record, _home=None) -> None:
    what = "vscen running"
    _check_domain(record, what)
    _stop_if_ours(conn, record, what)


def create_transient(conn, xml: str, validated: bool = False) -> Step:
    """Create and start a transient domain: never defined, gone when it stops (libvirt
    validates it unless *validated*, as for ``define``)."""
    import libvirt

    def do():
        from lxml import etree

        flags = 0 if validated else libvirt.VIR_DOMAIN_START_VALIDATE
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


#: where libvirt keeps the firmware variables of a (transient) domain on this machine
NVRAM_DIR = Path("/var/lib/libvirt/qemu/nvram")


def _undo_transient(conn, record, _home=None) -> None:
    import libvirt

    from vscen.ownership import check_record, safe_path

    what = "vscen transient"
    _check_domain(record, what)
    check_record(record, {"nvram?": (str, type(None))}, what)
    _stop_if_ours(conn, record, what)
    nvram = record.get("nvram")
    if not nvram or not conn.is_local or conn.is_test:
        return  # on a remote host libvirt keeps the file; nothing reaches it through the API
    nvram = str(safe_path(nvram, [NVRAM_DIR], what, pattern=f"{record['name']}_VARS*"))
    try:
        conn.conn.lookupByName(record["name"])
        return  # a domain of that name exists again and may use the file
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    Path(nvram).unlink(missing_ok=True)


UNDO = {"dirs": _undo_dirs, "file": _undo_file, "domain": _undo_domain, "running": _undo_running,
        "transient": _undo_transient}
