"""Windows installed unattended (``--unattend admin-password-file=FILE``), as virt-install does.

virt-install's ``--unattended`` asks libosinfo for the OS's install scripts, and libosinfo
runs their XSLT templates, which the osinfo database ships
(``install-script/microsoft.com/windows-unattend-desktop.xml`` gives ``autounattend.xml``,
``windows-cmd-desktop.xml`` the ``windows.cmd`` it runs), on a document of the OS, the media,
the script and the settings. vscen runs the same templates on the same document with lxml,
so the files are those virt-install makes; quickemu writes a file of the same shape.

They go on a small ISO (ISO 9660 with Joliet, made by pycdlib), the host action
``unattend-media``: ``/var/lib/libvirt/images/NAME-unattend.iso``, mode 600 (libvirt gives
QEMU access while the guest runs), made at apply time, journalled and taken back by ``vscen
destroy``. The password is read from its file only then and written only into that ISO:
never on a command line, in a note, the plan or the journal. Windows Setup finds
``autounattend.xml`` on any drive; the ISO is the second CD-ROM (drive E:, which the
templates name), after the install ISO (D:).
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGES = Path("/var/lib/libvirt/images")
SCRIPTS = {"autounattend.xml": "microsoft.com/windows-unattend-desktop.xml",
           "windows.cmd": "microsoft.com/windows-cmd-desktop.xml"}
KEYS = ("admin-password-file", "product-key", "language")


def parse(text: str) -> dict:
    """``admin-password-file=FILE[,product-key=KEY][,language=en-US]``."""
    from vscen import check_path

    values = {}
    for part in filter(None, str(text).split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in KEYS or not value:
            raise ValueError(f"is not KEY=VALUE with KEY one of {', '.join(KEYS)}")
        values[key] = value
    if "admin-password-file" not in values:
        raise ValueError("needs admin-password-file=FILE (a file holding the Administrator's password)")
    path = check_path("unattend.admin-password-file", values["admin-password-file"])
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"names {path}, which is not a readable file")
    values["admin-password-file"] = path
    return values


def iso_path(settings) -> Path:
    return IMAGES / f"{settings.name}-unattend.iso"


def _template(rel: str):
    from lxml import etree

    from vscen_os import osdb

    for d in reversed(osdb.db_dirs()):  # the highest precedence first
        path = d / "install-script" / rel
        if path.is_file():
            root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
            return root, root.find(".//template/{http://www.w3.org/1999/XSL/Transform}stylesheet")
    from vscen import UsageError

    raise UsageError(f"unattend: the osinfo database has no install script {rel} (install osinfo-db)")


def generate(info, settings, password: str) -> dict[str, bytes]:
    """File name -> content of the unattended installation of *info* (an ``osdb.OsInfo``)."""
    from lxml import etree

    opts = settings.unattend
    out = {}
    for name, rel in SCRIPTS.items():
        _script, stylesheet = _template(rel)
        doc = etree.Element("install-script-config")
        os_el = etree.SubElement(doc, "os")
        for key, value in (("id", info.id), ("short-id", info.short_id), ("name", info.name),
                           ("version", info.version), ("family", info.family), ("distro", info.distro)):
            etree.SubElement(os_el, key).text = value
        etree.SubElement(doc, "media")
        script_el = etree.SubElement(doc, "script")
        etree.SubElement(script_el, "expected-filename").text = name
        etree.SubElement(script_el, "preferred-injection-method").text = "cdrom"
        etree.SubElement(script_el, "profile").text = "desktop"
        config = etree.SubElement(doc, "config")
        values = {"admin-password": password, "hardware-arch": settings.arch or "x86_64",
                  # a NetBIOS name: at most 15 characters
                  "hostname": settings.name[:15], "l10n-language": opts.get("language", "en-US"),
                  "reg-product-key": opts.get("product-key", ""), "user-realname": "vscen"}
        for key, value in values.items():
            etree.SubElement(config, key).text = value
        result = etree.XSLT(stylesheet)(doc)
        if name == "autounattend.xml" and not values["reg-product-key"]:
            _drop_empty_keys(result.getroot())
        out[name] = bytes(result)
    return out


def _drop_empty_keys(root) -> None:
    """Without a product key, no empty ``<ProductKey>``: Setup then asks for the edition (and
    key) itself, where an empty one fails its check of the answer file (virt-install requires a
    key for Windows instead)."""
    ns = "{urn:schemas-microsoft-com:unattend}"
    for el in list(root.iter(f"{ns}ProductKey")):
        if not "".join(el.itertext()).strip():
            el.getparent().remove(el)


def make_iso(path: Path, files: dict[str, bytes]) -> None:
    """A small ISO 9660 image with Joliet names holding *files*, written to *path* (mode 600,
    created: never over an existing file)."""
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, vol_ident="UNATTEND", sys_ident="", app_ident_str="vscen")
    for i, (name, data) in enumerate(sorted(files.items())):
        iso.add_fp(io.BytesIO(data), len(data), f"/F{i}.;1", joliet_path=f"/{name}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            iso.write_fp(f)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        iso.close()


# -- the feature and the host action ----------------------------------------------------------------


def _windows(ctx):
    from vscen import UsageError
    from vscen_os import os_info

    if not ctx.settings.get("os"):
        raise UsageError("unattend: name the Windows version with --os (win10, win11: 'vscen list os'), or give "
                         "its ISO as --cdrom to detect it")
    info = os_info(ctx)
    if not info.is_windows:
        raise UsageError(f"unattend: --unattend installs Windows; {info.short_id} is {info.name}")
    return info


def finish(domain, ctx) -> None:
    """The ISO as the next SATA CD-ROM (E:, after the install ISO)."""
    _windows(ctx)
    devices = domain.ensure("devices")
    used = {t.get("dev") for d in devices.findall("disk") for t in [d.find("target")] if t is not None}
    dev = next(f"sd{c}" for c in "abcdefghijklmnopqrstuvwxyz" if f"sd{c}" not in used)
    cd = devices.add("disk", type="file", device="cdrom")
    cd.add("driver", name="qemu", type="raw")
    cd.add("source", file=str(iso_path(ctx.settings)))
    cd.add("target", dev=dev, bus="sata")
    cd.add("readonly")
    ctx.note(f"unattend: Windows Setup reads autounattend.xml from {iso_path(ctx.settings)} (CD-ROM {dev}), "
             "made at apply time from the osinfo install scripts virt-install uses")


def plan(ctx):
    from vscen import Step, UsageError, file_identity

    info = _windows(ctx)
    if ctx.connection is not None and not ctx.connection.is_local:
        raise UsageError(f"unattend: the ISO is written on this machine; {ctx.uri} is another host")
    import importlib.util

    if importlib.util.find_spec("pycdlib") is None:
        raise UsageError("unattend: writing the ISO needs pycdlib: pip install 'vscen[cloud]' (or python3-pycdlib)")
    path = iso_path(ctx.settings)
    password_file = ctx.settings.unattend["admin-password-file"]
    if (path.exists() or path.is_symlink()) and not ctx.force:
        # a run again: the ISO made the first time (its journal takes it back)
        ctx.note(f"unattend: {path} exists: unchanged (give --force to write it anew, with the password file's "
                 "current content)")
        return []

    def do():
        with open(password_file, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
        files = generate(info, ctx.settings, password)
        if ctx.force:
            path.unlink(missing_ok=True)
        make_iso(path, files)
        return {"kind": "unattend-iso", "path": str(path), "identity": file_identity(path), "storage": True}

    return [Step(f"write {path} (autounattend.xml and windows.cmd for {info.name}, mode 600)", do)]


def undo(connection, record) -> None:
    from vscen import VscenError, check_record, safe_path, same_file

    check_record(record, {"path": str, "identity": dict}, "unattend-media")
    path = safe_path(record["path"], [IMAGES], "unattend-media", pattern="*-unattend.iso")
    same = same_file(path, record["identity"])
    if same is False:
        raise VscenError(f"unattend-media: {path} changed since vscen made it; left in place")
    if same:
        path.unlink()
