"""``vscen destroy`` and ``vscen status``: the guests vscen made, by their journals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from vscen.cli.common import registry


def destroy(
    name: Annotated[str, typer.Argument(help="The guest's name.")],
    keep_storage: Annotated[bool, typer.Option("--keep-storage", help="Keep the disks (volumes, pools, secrets) vscen created.")] = False,
    output: Annotated[Optional[Path], typer.Option(help="Where the guest's directory is (default: $XDG_DATA_HOME/vscen).")] = None,
    connect: Annotated[Optional[str], typer.Option("--connect", "-c", help="libvirt URI (default: the one the guest was made on).")] = None,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait while another vscen changes the same guest (0: refuse at once as busy).")] = 60.0,
):
    """Remove exactly what vscen created for guest NAME, newest first: only what it can prove
    it made (see 'Reliability' in docs/host.md)."""
    from vscen.cli.common import err
    from vscen.guests import destroy_guest

    removed, kept, path = destroy_guest(name, output=output, connect=connect, keep_storage=keep_storage,
                                        wait=wait, notify=err, registry=registry())
    typer.echo(f"destroyed {name}: removed {removed} things vscen made"
               + (f", kept {kept} (storage; the journal stays at {path})" if kept else ""))


def status(
    name: Annotated[Optional[str], typer.Argument(help="One guest (default: all).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Where the guests' directories are.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """The guests vscen made: where, what it created for them, and their state."""
    from vscen.guests import guest_journal
    from vscen.journal import FILENAME, Journal
    from vscen.plan import output_dir

    base = output_dir(output)
    journals = [guest_journal(name, output, command="status")] if name else \
        [Journal.load(path) for path in sorted(base.glob(f"*/{FILENAME}"))]
    rows = []
    for journal in journals:
        path = journal.path
        made: dict[str, int] = {}
        for entry in journal.entries:
            kind = entry["record"].get("kind")
            what = entry["owner"] if entry["owner"] != "vscen" else kind if isinstance(kind, str) else "?"
            made[what[:64]] = made.get(what[:64], 0) + 1
        rows.append({"name": journal.name, "uri": journal.uri, "state": _state_of(journal),
                     "made": made, "directory": str(path.parent)})
    # closed here, not by the garbage collector at exit, where libvirt's bindings are half gone
    # and print a traceback ("Exception ignored in virConnect.__del__") on stderr
    while _connections:
        _connections.popitem()[1].close()
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no guests made by vscen under {base}")
    for r in rows:
        made = ", ".join(f"{k}: {v}" for k, v in sorted(r["made"].items()))
        typer.echo(f"{r['name']}  {r['state']}  on {r['uri']}  ({made})")


_connections: dict = {}
#: seconds ``status`` waits for a libvirt daemon to answer (a journal may name any URI)
STATE_TIMEOUT = 10.0


def _state_of(journal) -> str:
    """The domain's state, asked in a thread: status never hangs on a host that does not answer."""
    import threading

    if journal.uri.startswith("test:"):
        return "unknown (embedded driver: gone with the process)"
    if not journal.uri:
        return "unknown (no URI recorded)"
    answer: list[str] = []
    worker = threading.Thread(target=lambda: answer.append(_ask_state(journal)), daemon=True)
    worker.start()
    worker.join(STATE_TIMEOUT)
    return answer[0] if answer else f"unreachable ({journal.uri} did not answer in {STATE_TIMEOUT:g}s)"


def _ask_state(journal) -> str:
    import libvirt

    from vscen.host.connect import open_connection

    try:
        conn = _connections.get(journal.uri) or open_connection(journal.uri)
        _connections[journal.uri] = conn
        dom = conn.conn.lookupByName(journal.name)
        return "running" if dom.isActive() else "shut off"
    except libvirt.libvirtError:
        return "not defined"
    except Exception as exc:  # noqa: BLE001 -- any reason is the answer
        return f"unreachable ({exc})"
