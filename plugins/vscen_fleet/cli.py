"""``vscen fleet plan|apply|destroy FLEET.toml``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Many guests on many hosts from a fleet file: plan, apply, destroy.")

FleetArg = Annotated[Path, typer.Argument(help="The fleet file (TOML): [placement], [hosts.NAME], [[guests]].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
OutputOpt = Annotated[Optional[Path], typer.Option(help="Where the guests' directories are (default: $XDG_DATA_HOME/vscen).")]
ConfigOpt = Annotated[Optional[Path], typer.Option(help="A TOML config file (above the user and system ones): named hosts, defaults.")]
WaitOpt = Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait while another vscen changes the same guest.")]
ParallelOpt = Annotated[int, typer.Option("--parallel", min=1, max=64, help="Hosts worked on at once.")]


def _load(path: Path, config: Path | None):
    from vscen import named_hosts
    from vscen_fleet.spec import load

    return load(path, named_hosts(config))


def _err(text: str) -> None:
    typer.echo(text, err=True)


@app.command()
def plan(fleet: FleetArg, json_: JsonOpt = False, output: OutputOpt = None, config: ConfigOpt = None):
    """Where each guest goes and why, or why no host can take it; changes nothing. Exit 4
    when some guest cannot be placed."""
    from vscen_fleet.placement import make_plan
    from vscen_fleet.view import plan_data, plan_text, refuse

    result = make_plan(_load(fleet, config), output=output, config=config)
    if json_:
        typer.echo(json.dumps(plan_data(result), indent=2))
    else:
        typer.echo(plan_text(result))
    refuse(result)


@app.command()
def apply(fleet: FleetArg, parallel: ParallelOpt = 4, json_: JsonOpt = False, output: OutputOpt = None,
          config: ConfigOpt = None,
          wait: WaitOpt = 60.0):
    """Make the fleet's guests where the plan puts them, hosts in parallel, each guest as
    'vscen run' makes one (a failure rolls back that guest only); guests that exist as asked are
    left as they are. Nothing is made when the plan refuses a guest."""
    from vscen import VscenError
    from vscen_fleet.placement import make_plan
    from vscen_fleet.run import apply_plan
    from vscen_fleet.view import apply_text, refuse

    result = make_plan(_load(fleet, config), output=output, config=config)
    refuse(result, doing="nothing was made", show=True)
    rows = apply_plan(result, parallel=parallel, output=output, config=config, wait=wait,
                      progress=None if json_ else lambda r: _err(f"{r['name']} on {r['host']}: {r['status']}"))
    typer.echo(json.dumps(rows, indent=2) if json_ else apply_text(rows))
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise VscenError(f"fleet apply: {len(failed)} of {len(rows)} guests failed (each rolled back): "
                         + "; ".join(f"{r['name']} on {r['host']}: {r['error']}" for r in failed))


@app.command()
def destroy(fleet: FleetArg, parallel: ParallelOpt = 4, json_: JsonOpt = False, output: OutputOpt = None,
            config: ConfigOpt = None,
            keep_storage: Annotated[bool, typer.Option("--keep-storage", help="Keep the disks vscen created.")] = False,
            wait: WaitOpt = 60.0):
    """Remove what vscen made for the fleet's guests, as 'vscen destroy' does, hosts in parallel."""
    from vscen import VscenError
    from vscen_fleet.run import destroy_fleet
    from vscen_fleet.view import destroy_text

    rows = destroy_fleet(_load(fleet, config), parallel=parallel, output=output, keep_storage=keep_storage, wait=wait)
    typer.echo(json.dumps(rows, indent=2) if json_ else destroy_text(rows))
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise VscenError(f"fleet destroy: {len(failed)} guests could not be removed entirely: "
                         + "; ".join(f"{r['name']}: {r['error']}" for r in failed))
