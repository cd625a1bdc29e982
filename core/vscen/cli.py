"""The ``vscen`` command line (Typer).

Errors are formatted here only: the pipeline raises ``VscenError`` carrying the message and
an exit code; ``main()`` prints ``error: ...`` on stderr and exits with that code. Tracebacks
only with ``--debug``. Every listing has ``--json``.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from vscen import __version__
from vscen.cli_guest import app as snapshot_app
from vscen.cli_host import app as host_app
from vscen.cli_plugin import app as plugin_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=True,
    help="Prepare a KVM host and a libvirt guest for a scenario: secure-vm, desktop, computation...",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# command groups that live in their own modules
app.add_typer(host_app, name="host")
app.add_typer(plugin_app, name="plugin")
app.add_typer(snapshot_app, name="snapshot")
_state = {"debug": False}


def _version(value: bool):
    if value:
        typer.echo(f"vscen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
):
    """vscen: tuned libvirt guests for scenarios, from plugins."""
    _state["debug"] = debug


def err(text: str) -> None:
    typer.echo(text, err=True)


# ------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------


@app.command(no_args_is_help=True)
def run(
    scenarios: Annotated[list[str], typer.Argument(help="Scenarios to combine (see 'vscen list scenarios').",
                                                   autocompletion=lambda incomplete: _complete("scenarios", incomplete))],
    name: Annotated[Optional[str], typer.Option(help="Guest name (default: the scenario names).")] = None,
    memory: Annotated[Optional[str], typer.Option(help="Memory, e.g. 4GiB, 512MiB (a bare number is MiB).")] = None,
    vcpu: Annotated[Optional[str], typer.Option(help="Number of virtual CPUs.")] = None,
    machine: Annotated[Optional[str], typer.Option(help="Machine type: q35, pc, virt, pc-q35-8.2...")] = None,
    boot: Annotated[Optional[str], typer.Option(help="Boot devices in order: hd, cdrom, network (comma-separated).")] = None,
    arch: Annotated[Optional[str], typer.Option(help="Guest architecture (default: the host's).")] = None,
    virt_type: Annotated[Optional[str], typer.Option("--virt-type", help="kvm or qemu (TCG); default: kvm where the host offers it.")] = None,
    firmware: Annotated[Optional[str], typer.Option(help="efi or bios.")] = None,
    disk: Annotated[Optional[list[str]], typer.Option(help="Disk: path=/x.qcow2,size=20G,format=qcow2,bus=virtio,cache=none,io=native, or 'none'. Repeatable.")] = None,
    cdrom: Annotated[Optional[str], typer.Option(help="ISO image to attach as a CD-ROM.")] = None,
    network: Annotated[Optional[str], typer.Option(help="network=NAME, bridge=NAME, user or none (,model=MODEL).")] = None,
    graphics: Annotated[Optional[str], typer.Option(help="spice, vnc or none.")] = None,
    filesystem: Annotated[Optional[list[str]], typer.Option(help="Share a host directory: source=/DIR,target=TAG[,readonly=yes]. Repeatable.")] = None,
    feature: Annotated[Optional[list[str]], typer.Option("--feature", "-f", help="+NAME adds a feature, -NAME removes one. Repeatable.",
                                                         autocompletion=lambda incomplete: _complete("features", incomplete))] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Customise the finished XML: XPATH=VALUE (./devices/graphics/@type=vnc). Repeatable.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="A TOML config file (above the user and system ones).")] = None,
    host_facts: Annotated[Optional[list[Path]], typer.Option("--host-facts", help="Recorded host facts: libvirt capabilities and/or domcapabilities XML. Repeatable.")] = None,
    connect: Annotated[Optional[str], typer.Option("--connect", "-c", help="libvirt URI (default: the config's connect, LIBVIRT_DEFAULT_URI or qemu:///system).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Directory for <name>/domain.xml (default: $XDG_DATA_HOME/vscen).")] = None,
    disk_size: Annotated[Optional[str], typer.Option("--disk-size", help="Size of new disks, e.g. 40G.")] = None,
    pool: Annotated[Optional[str], typer.Option(help="libvirt storage pool for new disks (default: the pool of their directory).")] = None,
    encrypt_disk: Annotated[bool, typer.Option("--encrypt-disk", help="LUKS-encrypt new disks; the passphrase comes from --passphrase-file, $VSCEN_DISK_PASSPHRASE or a prompt.")] = False,
    passphrase_file: Annotated[Optional[Path], typer.Option("--passphrase-file", help="File holding the disk passphrase (mode 600).")] = None,
    hugepages: Annotated[Optional[str], typer.Option(help="auto: use free huge pages; reserve: reserve what is missing; persistent: also across reboots.")] = None,
    peer: Annotated[Optional[list[str]], typer.Option("--peer", help="Another host the guest must run on: a libvirt URI or recorded host facts. Repeatable.")] = None,
    hostdev: Annotated[Optional[list[str]], typer.Option("--hostdev", help="Assign a host device: PCI address, pci:VENDOR:PRODUCT or usb:VENDOR:PRODUCT. Repeatable.")] = None,
    transient: Annotated[bool, typer.Option("--transient", help="Start a transient guest: never defined, gone when it stops.")] = False,
    tune_host: Annotated[bool, typer.Option("--tune-host", help="Apply the host tuning the scenarios ask for (THP, KSM); undone by 'vscen destroy'.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the XML and the plan; change nothing.")] = False,
    explain: Annotated[bool, typer.Option(help="Show which plugin set each element and value.")] = False,
    force: Annotated[bool, typer.Option(help="Replace what exists and differs: the output file, the domain, vscen's own leftovers (never a disk).")] = False,
    start: Annotated[bool, typer.Option(help="Start the guest once defined.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
):
    """Build, validate and define a guest for SCENARIOS."""
    from vscen.pipeline import Request, render

    add, remove = _split_features(feature or [])
    options = {"name": name, "memory": memory, "vcpu": vcpu, "machine": machine, "boot": boot,
               "arch": arch, "virt_type": virt_type, "firmware": firmware, "cdrom": cdrom,
               "network": network, "graphics": graphics, "filesystem": filesystem or None,
               "disk.size": disk_size, "pool": pool, "hugepages": hugepages,
               "disk.encrypt": "yes" if encrypt_disk else None, "peers": peer or None,
               "hostdev": hostdev or None, "transient": "yes" if transient else None}
    from vscen.secrets import default_source

    request = Request(scenarios=list(scenarios), add=add, remove=remove, options=options,
                      disks=disk or None, config=config, sets=set_ or [],
                      host_facts=host_facts or [], connect=connect, force=force,
                      tune_host=tune_host, passphrase_source=default_source(passphrase_file))
    result = render(request)
    if result.connection is not None and result.connection.note:
        err(f"note: {result.connection.note}")  # stderr: the fallback is not the guest's business
    for line in result.warnings:
        err(f"warning: {line}")
    from vscen.plan import make_plan, output_dir

    plan = make_plan(result, output_dir(output, config), force=force, start=start)
    if dry_run:
        typer.echo(result.xml, nl=False)
    if explain:
        _print_explain(result)
    summary = _summary(result, plan)
    if dry_run:
        _report(summary, json_, dry_run=True)
        return
    from vscen.apply import apply
    from vscen.journal import Journal

    def progress(i, total, step):
        if not json_:
            err(f"[{i}/{total}] {step.description}")

    journal = Journal.open(plan.out_dir, result.settings.name, result.ctx.uri)
    apply(plan, journal, result.connection, result.ctx.registry, progress)
    summary["applied"] = [s.description for s in plan.steps]
    summary["journal"] = str(journal.path) if journal.entries else None
    _report(summary, json_, dry_run=False)


def _complete(kind: str, incomplete: str) -> list[str]:
    """Shell completion of scenario names, or of +/-feature names."""
    try:
        from vscen.pipeline import Request, load

        _, reg = load(Request(scenarios=[]))
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    if kind == "scenarios":
        return [n for n in sorted(reg.scenarios) if n.startswith(incomplete)]
    sign = incomplete[:1] if incomplete[:1] in "+-" else "+"
    stem = incomplete.lstrip("+-")
    return [sign + n for n in sorted(reg.features) if n.startswith(stem)]


def _split_features(values: list[str]) -> tuple[list[str], list[str]]:
    add, remove = [], []
    for v in values:
        for item in filter(None, (x.strip() for x in v.split(","))):
            (remove if item.startswith("-") else add).append(item.lstrip("+-"))
    return add, remove


def _summary(result, plan) -> dict:
    ctx = result.ctx
    return {
        "name": ctx.settings.name,
        "connection": ctx.uri,
        "host": ctx.host.source,
        "scenarios": [s.name for s in ctx.resolution.scenarios],
        "features": [{"name": f.name, "why": ctx.resolution.why[f.name]} for f in ctx.resolution.features],
        "checks": [{"validator": c.validator, "status": c.status, "message": c.message, "fix": c.fix}
                   for c in result.checks],
        "notes": list(ctx.notes),
        "connection_note": result.connection.note if result.connection is not None else "",
        "customised": [{"path": p, "value": v} for p, v in result.customised],
        "xml": str(plan.xml_path) if plan.xml_path else None,
        "plan": [s.description for s in plan.steps],
        "unchanged": list(plan.unchanged),
    }


_MARK = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def _report(summary: dict, as_json: bool, dry_run: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary | {"dry_run": dry_run}, indent=2))
        return
    lines = [f"guest {summary['name']} on {summary['connection']} (host facts: {summary['host']})",
             f"scenarios: {', '.join(summary['scenarios']) or '-'}",
             "features:  " + ", ".join(f"{f['name']} ({f['why']})" for f in summary["features"])]
    for c in summary["checks"]:
        fix = f" -- fix: {c['fix']}" if c["fix"] and c["status"] != "pass" else ""
        lines.append(f"check {_MARK[c['status']]} {c['validator']}: {c['message']}{fix}")
    lines += [f"note: {n}" for n in summary["notes"]]
    lines += [f"set:  {c['path']} = {c['value']}" for c in summary["customised"]]
    if dry_run:
        lines += [f"would: {s}" for s in summary["plan"]] or ["would: nothing (all up to date)"]
    else:
        lines += [f"done: {s}" for s in summary.get("applied", [])]
    lines += [f"unchanged: {u}" for u in summary["unchanged"]]
    if not dry_run and not summary.get("applied"):
        lines.append("nothing to do: everything is up to date")
    lines.append(f"xml: {summary['xml']}")
    # the XML goes to stdout in a dry run, so the summary goes to stderr there
    for line in lines:
        typer.echo(line, err=dry_run)


def _print_explain(result) -> None:
    rows = result.ctx.domain.explain()
    custom = dict(result.customised)
    width = max(len(r[0]) for r in rows)
    for path, value, who in rows:
        if path in custom and value:  # a value row, not the row of the element itself
            value, who = custom[path], f"user (--set), was '{value}' from {who}"
        typer.echo(f"{path:<{width}}  {value!s:<24}  {who}", err=True)


@app.command()
def destroy(
    name: Annotated[str, typer.Argument(help="The guest's name.")],
    keep_storage: Annotated[bool, typer.Option("--keep-storage", help="Keep the disks (volumes, pools, secrets) vscen created.")] = False,
    output: Annotated[Optional[Path], typer.Option(help="Where the guest's directory is (default: $XDG_DATA_HOME/vscen).")] = None,
    connect: Annotated[Optional[str], typer.Option("--connect", "-c", help="libvirt URI (default: the one the guest was made on).")] = None,
):
    """Remove exactly what vscen created for guest NAME, newest first."""
    from vscen.apply import rollback
    from vscen.errors import UsageError, VscenError, raise_all
    from vscen.host.connect import open_connection
    from vscen.journal import FILENAME, Journal
    from vscen.plan import output_dir
    from vscen.settings import check_name

    path = output_dir(output) / check_name(name) / FILENAME
    if not path.exists():
        raise UsageError(f"destroy: vscen made no guest '{name}' here (no {path})")
    journal = Journal.load(path)
    _, reg = _load()
    conn = open_connection(connect or journal.uri)
    total = len(journal.entries)
    problems = rollback(list(journal.entries), journal, conn, reg, keep_storage=keep_storage)
    raise_all(VscenError, f"destroy {name}: some things could not be removed", problems)
    kept = len(journal.entries)
    typer.echo(f"destroyed {name}: removed {total - kept} things vscen made"
               + (f", kept {kept} (storage; the journal stays at {path})" if kept else ""))


@app.command()
def status(
    name: Annotated[Optional[str], typer.Argument(help="One guest (default: all).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Where the guests' directories are.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """The guests vscen made: where, what it created for them, and their state."""
    from vscen.journal import FILENAME, Journal
    from vscen.plan import output_dir

    base = output_dir(output)
    paths = [base / name / FILENAME] if name else sorted(base.glob(f"*/{FILENAME}"))
    rows = []
    for path in paths:
        if not path.exists():
            from vscen.errors import UsageError

            raise UsageError(f"status: vscen made no guest '{name}' here (no {path})")
        journal = Journal.load(path)
        made: dict[str, int] = {}
        for entry in journal.entries:
            what = entry["owner"] if entry["owner"] != "vscen" else entry["record"]["kind"]
            made[what] = made.get(what, 0) + 1
        rows.append({"name": journal.name, "uri": journal.uri, "state": _state_of(journal),
                     "made": made, "directory": str(path.parent)})
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no guests made by vscen under {base}")
    for r in rows:
        made = ", ".join(f"{k}: {v}" for k, v in sorted(r["made"].items()))
        typer.echo(f"{r['name']}  {r['state']}  on {r['uri']}  ({made})")


_connections: dict = {}


def _state_of(journal) -> str:
    import libvirt

    from vscen.host.connect import open_connection

    if journal.uri.startswith("test:"):
        return "unknown (embedded driver: gone with the process)"
    try:
        conn = _connections.get(journal.uri) or open_connection(journal.uri)
        _connections[journal.uri] = conn
        dom = conn.conn.lookupByName(journal.name)
    except libvirt.libvirtError:
        return "not defined"
    except Exception as exc:
        return f"unreachable ({exc})"
    return "running" if dom.isActive() else "shut off"


# ------------------------------------------------------------------------------------------
# listings
# ------------------------------------------------------------------------------------------


class Kind(StrEnum):
    scenarios = "scenarios"
    features = "features"
    validators = "validators"
    host_actions = "host-actions"


def _load():
    from vscen.pipeline import Request, load

    pm, reg = load(Request(scenarios=[]))
    for line in pm.warnings():
        err(f"warning: {line}")
    return pm, reg


def _rules(item) -> dict:
    return {"requires": list(item.requires), "implies": list(item.pulls()),
            "conflicts": [{"name": c.name, "reason": c.reason} for c in item.conflicts],
            "arches": list(item.arches), "validators": list(item.validators),
            "host_actions": list(item.host_actions)}


@app.command("list")
def list_(
    kind: Annotated[Kind, typer.Argument(help="What to list.")] = Kind.scenarios,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """List scenarios, features, validators or host actions."""
    _, reg = _load()
    rows = []
    for name, obj in sorted(reg.table(kind.value).items()):
        row = {"name": name, "plugin": reg.plugin_of(name, kind.value), "summary": obj.summary}
        if kind in (Kind.scenarios, Kind.features):
            row |= _rules(obj) | {"details": obj.details}
            if kind is Kind.features:
                row["category"] = obj.category
            else:
                row["defaults"] = dict(obj.defaults)
        if kind is Kind.validators:
            row["kind"] = obj.kind
        rows.append(row)
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no {kind.value} registered")
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        extra = f" [{r['category']}]" if "category" in r else f" [{r['kind']}]" if "kind" in r else ""
        typer.echo(f"{r['name']:<{width}}  {r['summary']}{extra}  (plugin {r['plugin']})")


@app.command()
def plugins(json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """Installed plugins: name, distribution, version, what they register, hooks, status."""
    pm, _ = _load()
    infos = sorted(pm.infos.values(), key=lambda i: i.name)
    if json_:
        typer.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    for i in infos:
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(i.registers.items())) or "nothing"
        typer.echo(f"{i.name} ({i.distribution} {i.version}) {i.status}: {what}")
        if i.reason:
            typer.echo(f"    reason: {i.reason}")
        if i.hooks:
            typer.echo(f"    hooks: {', '.join(i.hooks)}")


@app.command()
def rules(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the rules matrix (docs/rules-matrix.md) as Markdown.")] = False,
):
    """The compatibility rules of every feature and scenario, and which scenarios compose."""
    from vscen.docs import rules_matrix, scenario_pairs

    _, reg = _load()
    if markdown:
        typer.echo(rules_matrix(reg), nl=False)
        return
    items = {name: {"kind": item.kind, **_rules(item)} for name, item in sorted(reg.items().items())}
    pairs = scenario_pairs(reg)
    if json_:
        typer.echo(json.dumps({"items": items, "scenario_pairs": pairs}, indent=2))
        return
    for name, r in items.items():
        parts = [f"{k}: {', '.join(v)}" for k, v in r.items() if k not in ("kind", "conflicts") and v]
        parts += [f"conflicts: {c['name']} ({c['reason']})" for c in r["conflicts"]]
        typer.echo(f"{r['kind']} {name}" + ("".join(f"\n    {p}" for p in parts) if parts else ""))
    typer.echo("\nscenario pairs:")
    for p in pairs:
        verdict = "composes" if p["composes"] else "refused"
        typer.echo(f"  {' + '.join(p['scenarios'])}: {verdict}")
        for problem in p["problems"]:
            typer.echo(f"      {problem}")


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="A libvirt domain XML file.")],
    host_facts: Annotated[Optional[list[Path]], typer.Option("--host-facts", help="Recorded host facts to check devices against.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Validate a domain XML file: libvirt's schema, then the domain validator plugins."""
    from lxml import etree

    from vscen.context import Context
    from vscen.errors import InvalidDomainError, UsageError
    from vscen.host.facts import HostFacts, load_files
    from vscen.resolve import Resolution
    from vscen.settings import Settings
    from vscen.validate import Support, run_domain_validators, schema_errors

    try:
        text = file.read_text()
        root = etree.fromstring(text.encode())
    except OSError as exc:
        raise UsageError(f"validate: cannot read '{file}' ({exc.strerror})") from None
    except etree.XMLSyntaxError as exc:
        raise UsageError(f"validate: '{file}' is not well-formed XML ({exc})") from None
    _, reg = _load()
    errors = schema_errors(text)
    facts = load_files(host_facts) if host_facts else HostFacts(source="unknown host")
    ctx = Context(settings=Settings(name=root.findtext("name") or "?", memory=0, vcpu=1), host=facts,
                  resolution=Resolution(), support=Support.installed(), registry=reg, xml=root)
    checks = run_domain_validators(ctx, [v for v in reg.validators.values() if v.kind == "domain"])
    fails = errors + [f"{c.element or 'domain'}: {c.message} [{c.validator}]" for c in checks if c.status == "fail"]
    if json_:
        typer.echo(json.dumps({"file": str(file), "valid": not fails, "schema_errors": errors,
                               "checks": [c.__dict__ for c in checks]}, indent=2))
    elif not fails:
        typer.echo(f"{file}: valid (libvirt schema and {len(checks)} check findings, none failing)")
    if fails:
        raise InvalidDomainError(f"{file}: " + "; ".join(fails), fails)


# the interactive shell, listed after the commands it builds on; its machinery (a module of
# its own) is imported only when it starts


@app.command()
def shell(
    scenarios: Annotated[Optional[list[str]], typer.Argument(help="Scenarios to start with (see 'vscen list scenarios').")] = None,
    connect: Annotated[Optional[str], typer.Option("--connect", "-c", help="libvirt URI to start with (the 'connect' setting).")] = None,
):
    """An interactive shell: choose scenarios, features and settings with tab completion, see the XML, the plan and the host, and run it."""
    from vscen.cli_shell import start

    start(scenarios, connect)


# ------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------


def main() -> None:
    from vscen.errors import VscenError

    try:
        # standalone: Typer reports usage errors itself (exit 2); our errors propagate here
        app()
    except VscenError as exc:
        if _state["debug"]:
            raise
        if exc.summary and len(exc.problems) > 1:
            err(f"error: {exc.summary} ({len(exc.problems)} problems):")
            for problem in exc.problems:
                err(f"  - {problem}")
        else:
            err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err("error: interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: one line unless --debug
        if _state["debug"]:
            raise
        err(f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
