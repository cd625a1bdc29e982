"""``vscen os list`` and ``vscen os show``: what the osinfo database knows.

Imported whenever vscen's command line is built: the database module only when a command runs.
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, help="What the osinfo database knows of operating systems (vscen run --os).")


def _gib(n) -> str:
    return f"{n / 1024**3:g}GiB" if n else "-"


def _matches(info, family: str | None) -> bool:
    if not family:
        return True
    return info.is_windows if family == "windows" else info.family == family


def _need_db():
    from vscen import UsageError
    from vscen_os import osdb

    if not any((d / "os").is_dir() for d in osdb.db_dirs()):
        raise UsageError("os: no osinfo database found (install the package osinfo-db)")
    return osdb


#: what ``--json`` gives of an OS (``vscen os show --json``; ``vscen list os --json`` a list of
#: them): a stable shape, documented in the command's help and checked by the tests
JSON_KEYS = ("short_id", "short_ids", "id", "name", "version", "vendor", "family", "distro", "release_date",
             "eol_date", "derives_from", "upgrades", "arch", "minimum", "recommended", "firmware", "requires_efi",
             "devices")


@app.command("list")
def list_(
    family: Annotated[Optional[str], typer.Option(help="Only this family: linux, windows (winnt, win9x, win16), freebsd...")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: a list of objects, as 'vscen os show --json'.")] = False,
):
    """The OSes of the osinfo database, by short-id: also 'vscen list os'.

    Text: one line each, short-id, family and name. With --json a list, by short-id, of
    objects with the keys short_id, short_ids, id (the osinfo id), name, version, vendor,
    family, distro, release_date, eol_date (dates YYYY-MM-DD, "" where unknown), derives_from,
    upgrades (osinfo ids or null), arch ("x86_64": the arch of what follows), minimum and
    recommended ({"ram": bytes, "n_cpus": count, "storage": bytes}, null where unknown),
    firmware ({"efi": true, "bios": false}: supported or not), requires_efi and devices
    (device names the OS has drivers for).
    """
    from vscen import UsageError

    osdb = _need_db()
    every = osdb.all_os()
    families = sorted({o.family for o in every if o.family} | {"windows"})
    if family and family not in families:
        raise UsageError(f"family: '{family}' is not one of {', '.join(families)}")
    found = [o for o in every if _matches(o, family)]
    if as_json:
        typer.echo(json.dumps([o.as_dict() for o in found], indent=2))
        return
    for o in found:
        typer.echo(f"{o.short_id:<24} {o.family:<8} {o.name}")


@app.command()
def show(
    short_id: Annotated[str, typer.Argument(metavar="SHORTID", help="An osinfo short-id: win11, debian11.")],
    arch: Annotated[str, typer.Option(help="The architecture whose resources and firmware are shown.")] = "x86_64",
    as_json: Annotated[bool, typer.Option("--json", help="JSON: one object, with the keys 'vscen os list' describes.")] = False,
):
    """What vscen knows of one OS: resources, firmware, drivers, as --os applies them."""
    from vscen import UsageError

    osdb = _need_db()
    from vscen_os import parse_os

    try:
        parse_os(short_id)
    except ValueError as exc:
        raise UsageError(f"os: '{short_id}' {exc}") from None
    data = osdb.lookup(short_id).as_dict(arch)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    lo, rec = data["minimum"], data["recommended"]
    rows = [
        ("name", data["name"]), ("id", data["id"]), ("family", data["family"]),
        ("short ids", ", ".join(data["short_ids"])), ("derives from", data["derives_from"] or "-"),
        ("released", data["release_date"] or "-"), ("end of life", data["eol_date"] or "-"),
        (f"minimum ({arch})", f"memory {_gib(lo['ram'])}, {lo['n_cpus'] or '-'} vCPU, disk {_gib(lo['storage'])}"),
        (f"recommended ({arch})", f"memory {_gib(rec['ram'])}, {rec['n_cpus'] or '-'} vCPU, disk {_gib(rec['storage'])}"),
        ("firmware", ", ".join(f"{k}{'' if v else ' (unsupported)'}" for k, v in data["firmware"].items()) or "-"),
        ("devices", ", ".join(data["devices"]) or "-"),
    ]
    for key, value in rows:
        typer.echo(f"{key + ':':<22} {value}")
