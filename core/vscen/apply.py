"""Apply a plan step by step; on any failure, undo what this run did, newest first.

Each step's ``do`` returns nothing and its ``undo`` puts back exactly what ``do`` changed, so a
failed run leaves the host as it found it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vscen.errors import LibvirtError, VscenError
from vscen.model import Step


def apply(plan, progress=None) -> list[Step]:
    done: list[Step] = []
    for i, step in enumerate(plan.steps, 1):
        if progress:
            progress(i, len(plan.steps), step)
        try:
            step.do()
        except Exception as exc:
            problems = rollback(done)
            msg = exc if isinstance(exc, VscenError) else f"{type(exc).__name__}: {exc}"
            tail = f"; rolling back failed too: {'; '.join(problems)}" if problems else "; rolled back"
            err = exc if isinstance(exc, VscenError) else VscenError(str(msg))
            raise type(err)(f"{step.description}: {msg}{tail}", getattr(err, "problems", [])) from exc
        done.append(step)
    return done


def rollback(done: list[Step]) -> list[str]:
    problems = []
    for step in reversed(done):
        if step.undo is None:
            continue
        try:
            step.undo()
        except Exception as exc:  # keep undoing the rest; report what could not be undone
            problems.append(f"undo '{step.description}': {exc}")
    return problems


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write *text* to *path* through a temporary file and rename: never half-written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_file(path: Path, text: str) -> Step:
    state: dict = {}

    def do():
        created = []
        for parent in reversed([path.parent, *path.parent.parents]):
            if not parent.exists():
                parent.mkdir()
                created.append(parent)
        state["dirs"] = created
        state["old"] = path.read_text() if path.exists() else None
        atomic_write(path, text)

    def undo():
        if state.get("old") is not None:
            atomic_write(path, state["old"])
        else:
            path.unlink(missing_ok=True)
        for parent in reversed(state.get("dirs", [])):
            parent.rmdir()

    return Step(f"write {path}", do, undo, owner="vscen")


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

    from vscen.plan import METADATA_NS, digest

    state: dict = {}

    def do():
        text = xml
        if existing is not None:
            state["old"] = existing.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
            # libvirt redefines a domain of the same name only under the same UUID
            text = _with_uuid(xml, existing.UUIDString())
        try:
            dom = conn.conn.defineXMLFlags(text, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, f'<guest digest="{digest(xml)}"/>',
                            "vscen", METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"libvirt refused the domain: {exc.get_error_message()}") from None
        state["dom"] = dom

    def undo():
        if state.get("old"):
            conn.conn.defineXML(state["old"])
        elif "dom" in state:
            # the NVRAM and TPM state were made for this domain by this run: remove them too
            flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_TPM", 0)
            try:
                state["dom"].undefineFlags(flags)
            except libvirt.libvirtError:
                state["dom"].undefine()

    verb = "redefine" if existing is not None else "define"
    return Step(f"{verb} domain on {conn.uri}", do, undo, owner="vscen")


def start(conn, name: str) -> Step:
    import libvirt

    state: dict = {}

    def do():
        dom = conn.conn.lookupByName(name)
        if dom.isActive():
            return
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"libvirt could not start '{name}': {exc.get_error_message()}") from None
        state["dom"] = dom

    def undo():
        if "dom" in state and state["dom"].isActive():
            state["dom"].destroy()

    return Step(f"start domain {name}", do, undo, owner="vscen")
