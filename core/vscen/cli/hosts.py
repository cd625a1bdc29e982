"""``vscen hosts``: the named hosts of the config files (``[hosts.NAME]``), whether each is
reachable, and what it offers: KVM, NUMA, memory, huge pages, and the rows the plugins' fact
providers show (confidential computing...), as ``vscen host`` shows one host."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from vscen.cli.common import JsonOpt, err


def hosts(
    json_: JsonOpt = False,
    config: Annotated[Optional[Path], typer.Option(help="A TOML config file (above the user and system ones).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each host's libvirt.")] = 15.0,
):
    """The named hosts ([hosts.NAME] in the config files): URI, reachable, and what each offers."""
    from vscen.hosts import named_hosts

    named = named_hosts(config)
    results: dict[str, dict] = {}
    threads = [threading.Thread(target=_look, args=(host, config, results), daemon=True) for host in named.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    rows = [results.get(name) or {"name": name, "uri": h.uri, "facts": [str(f) for f in h.facts],
                                  "reachable": False, "error": f"no answer within {timeout:g} s", "offers": None}
            for name, h in named.items()]
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        err("no named hosts: add [hosts.NAME] tables with uri = \"...\" (and facts = \"FILE\") to "
            "~/.config/vscen/config.toml")
        return
    typer.echo("\n\n".join(_text(r) for r in rows))


def _look(host, config, results: dict) -> None:
    """What *host* offers (its recorded facts, else its live ones) and whether it answers."""
    from vscen.errors import VscenError
    from vscen.hosts import read_host

    row = {"name": host.name, "uri": host.uri, "facts": [str(f) for f in host.facts],
           "reachable": None, "error": None, "offers": None}
    try:
        facts = read_host(host.uri, host.facts, config=config)
        if not host.facts:
            row["reachable"] = True
        row["offers"] = offers(facts, config)
    except VscenError as exc:
        row["error"] = str(exc)
        row["reachable"] = False if not host.facts else None
    if host.facts:
        from vscen.host.connect import open_connection

        try:
            open_connection(host.uri).close()
            row["reachable"] = True
        except VscenError as exc:
            row["reachable"], row["error"] = False, row["error"] or str(exc)
    results[host.name] = row


def offers(facts, config=None) -> dict:
    """What a host offers, as data: arch, KVM, CPUs, NUMA cells, memory, huge pages, and the
    plugins' rows (``FactProvider.show``)."""
    from vscen.cli.host import plugin_rows
    from vscen.guests import loaded
    from vscen.validate import Support

    pm, reg = loaded(config)
    pages: dict[int, list] = {}
    for cell in facts.cells:
        for size, total in cell.pages.items():
            if size > 4:
                entry = pages.setdefault(size, [0, 0 if cell.free_pages is not None else None])
                entry[0] += total
                if entry[1] is not None:
                    entry[1] += cell.free(size)
    return {"arch": facts.arch, "kvm": facts.kvm, "cpus": facts.cpus if facts.has_caps else None,
            "numa_cells": len(facts.cells) if facts.has_caps else None,
            "memory_kib": sum(c.memory_kib for c in facts.cells) if facts.has_caps else None,
            "hugepages": [{"size_kib": s, "total": t, "free": f} for s, (t, f) in sorted(pages.items())],
            "rows": [[label, text] for label, text in plugin_rows(facts, reg, Support.installed(), pm)]}


def _text(row: dict) -> str:
    from vscen.cli.host import _columns, _size

    lines = [("host", f"{row['name']}: {row['uri']}" + (f" (facts: {', '.join(row['facts'])})" if row["facts"] else ""))]
    reach = {True: "yes", False: "no", None: "not tried"}[row["reachable"]]
    lines.append(("reachable", reach + (f": {row['error']}" if row["error"] and not row["reachable"] else "")))
    o = row["offers"]
    if o is None:
        lines.append(("offers", "unknown: " + (row["error"] or "no facts")))
        return _columns(lines)
    lines.append(("kvm", f"{'yes' if o['kvm'] else 'no (TCG only)'}, {o['arch']}"))
    if o["numa_cells"] is None:
        lines.append(("numa", "unknown (domain capabilities only)"))
    else:
        lines.append(("numa", f"{o['numa_cells']} cell{'s' if o['numa_cells'] != 1 else ''}, {o['cpus']} CPUs, "
                              f"{_size(o['memory_kib'])}"))
    hp = "; ".join(f"{_size(p['size_kib'])}: {p['total']} pages, "
                   + ("free unknown" if p["free"] is None else f"{p['free']} free") for p in o["hugepages"])
    lines.append(("huge pages", hp or "none"))
    lines += [(label, text) for label, text in o["rows"]]
    return _columns(lines)
