"""``vscen example``: the plugin's own command group."""

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, help="vscen-example's tools: describe a build box vscen made.")


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="The guest's name.")],
    output: Annotated[Optional[Path], typer.Option(help="Where the guest's directory is (default: vscen's).")] = None,
):
    """Say what vscen made for guest NAME and how it is tuned (its domain XML beside the journal)."""
    from lxml import etree

    from vscen import UsageError, guest_journal

    journal = guest_journal(name, output, command="example describe")  # only guests vscen made
    xml = journal.path.parent / "domain.xml"
    try:
        root = etree.parse(str(xml)).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise UsageError(f"example describe: cannot read {xml} ({exc})") from None
    made = sorted({e["owner"] for e in journal.entries})
    typer.echo(f"{name}: {root.findtext('description') or 'no description'}")
    typer.echo(f"  cpu shares {root.findtext('cputune/shares') or 'default'}, "
               f"block I/O weight {root.findtext('blkiotune/weight') or 'default'}")
    typer.echo(f"  on {journal.uri}; vscen made: {', '.join(made) or 'nothing'}")
