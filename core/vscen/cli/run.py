"""``vscen run``: build, validate and define a guest; its options are the core's and those
every loaded plugin declares (``vscen.Setting``), added to the command's signature at start-up.

No ``from __future__ import annotations`` here: the signature is rebuilt at run time, and
Typer reads its annotations as objects.
"""

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from vscen.cli.common import complete, err, loaded, named_host, setting_param, split_features


def run(
    scenarios: Annotated[list[str], typer.Argument(help="Scenarios to combine (see 'vscen list scenarios').",
                                                   autocompletion=lambda incomplete: complete("scenarios", incomplete))],
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
    feature: Annotated[Optional[list[str]], typer.Option("--feature", "-f", help="+NAME adds a feature, -NAME removes one. Repeatable.",
                                                         autocompletion=lambda incomplete: complete("features", incomplete))] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Customise the finished XML: XPATH=VALUE (./devices/graphics/@type=vnc). Repeatable.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="A TOML config file (above the user and system ones).")] = None,
    host_facts: Annotated[Optional[list[Path]], typer.Option("--host-facts", help="Recorded host facts: libvirt capabilities and/or domcapabilities XML. Repeatable.")] = None,
    connect: Annotated[Optional[str], typer.Option("--connect", "-c", help="libvirt URI (default: the config's connect, LIBVIRT_DEFAULT_URI or qemu:///system).")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="A named host of the config files ([hosts.NAME]): its uri, and its recorded facts where it has them (not with --connect or --host-facts).",
                                                autocompletion=lambda incomplete: complete("hosts", incomplete))] = None,
    output: Annotated[Optional[Path], typer.Option(help="Directory for <name>/domain.xml (default: $XDG_DATA_HOME/vscen).")] = None,
    disk_size: Annotated[Optional[str], typer.Option("--disk-size", help="Size of new disks, e.g. 40G.")] = None,
    transient: Annotated[bool, typer.Option("--transient", help="Start a transient guest: never defined, gone when it stops.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the XML and the plan; change nothing.")] = False,
    explain: Annotated[bool, typer.Option(help="Show which plugin set each element and value.")] = False,
    force: Annotated[bool, typer.Option(help="Replace what exists and differs: the output file, the domain, vscen's own leftovers (never a disk).")] = False,
    start: Annotated[bool, typer.Option(help="Start the guest once defined.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait while another vscen changes the same guest (0: refuse at once as busy).")] = 60.0,
    **plugin_options,
):
    """Build, validate and define a guest for SCENARIOS."""
    from vscen.pipeline import Request, render

    add, remove = split_features(feature or [])
    if host is not None:
        connect, host_facts = named_host(host, connect, host_facts, config)
    options = {"name": name, "memory": memory, "vcpu": vcpu, "machine": machine, "boot": boot,
               "arch": arch, "virt_type": virt_type, "firmware": firmware, "cdrom": cdrom,
               "network": network, "graphics": graphics, "disk.size": disk_size,
               "transient": "yes" if transient else None}
    loaded_ = loaded(config)
    for setting in loaded_[1].settings.values():
        value = plugin_options.get(setting_param(setting))
        options[setting.name] = value if value not in ([], ()) else None
    request = Request(scenarios=list(scenarios), add=add, remove=remove, options=options,
                      disks=disk or None, config=config, sets=set_ or [],
                      host_facts=host_facts or [], connect=connect, force=force, loaded=loaded_)
    result = render(request)
    if result.connection is not None and result.connection.note:
        err(f"note: {result.connection.note}")  # stderr: the fallback is not the guest's business
    for line in result.warnings:
        err(f"warning: {line}")
    from vscen.plan import make_plan, output_dir

    plan = make_plan(result, output_dir(output, config), force=force, start=start)
    if dry_run and not json_:
        typer.echo(result.xml, nl=False)  # with --json, the XML is a member of the JSON
    if explain:
        _print_explain(result)
    summary = _summary(result, plan)
    if dry_run:
        if json_:
            summary["domain_xml"] = result.xml
        _report(summary, json_, dry_run=True)
        return
    from vscen.apply import apply
    from vscen.journal import Journal

    def progress(i, total, step):
        if not json_:
            err(f"[{i}/{total}] {step.description}")

    journal = Journal.open(plan.out_dir, result.settings.name, result.ctx.uri)
    apply(plan, journal, result.connection, result.ctx.registry, progress, wait=wait)
    summary["applied"] = [s.description for s in plan.steps]
    summary["journal"] = str(journal.path) if journal.entries else None
    _report(summary, json_, dry_run=False)


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
        "prepare_only": list(result.prepare_only),
    }


_MARK = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def _report(summary: dict, as_json: bool, dry_run: bool) -> None:
    if as_json:
        import json

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
    if summary["prepare_only"]:
        lines.append("no guest built: the host " + ("would be" if dry_run else "is") + " prepared by "
                     + ", ".join(summary["prepare_only"]) + "; reboot it, then run the same command again")
    else:
        lines.append(f"xml: {summary['xml']}")
    # the XML goes to stdout in a dry run, so the summary goes to stderr there
    for line in lines:
        typer.echo(line, err=dry_run)


def _print_explain(result) -> None:
    rows = result.ctx.domain.explain()
    width = max(len(r[0]) for r in rows)
    for path, value, who in rows:
        typer.echo(f"{path:<{width}}  {value!s:<24}  {who}", err=True)


def command(registry):
    """``run`` with one option for each plugin setting in *registry*, after the core's."""

    def run_command(**values):
        return run(**values)

    core = [p for p in inspect.signature(run).parameters.values() if p.kind is not p.VAR_KEYWORD]
    extra = [inspect.Parameter(setting_param(s), inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=_annotation(s, registry.plugin_of(name, "settings")))
             for name, s in sorted(registry.settings.items())]
    run_command.__signature__ = inspect.Signature(core + extra)
    run_command.__doc__ = run.__doc__
    run_command.__name__ = "run"
    return run_command


def _annotation(setting, plugin: str):
    help_ = setting.help
    if setting.choices:
        help_ += f" One of: {', '.join(setting.choices)}."
    if setting.example and not setting.flag:
        help_ += f" Example: {setting.cli_option} {setting.example}."
    help_ += f" [plugin {plugin}]"
    option = setting.cli_option
    if setting.flag:
        return Annotated[Optional[bool], typer.Option(f"{option}/--no-{option[2:]}", help=help_, show_default=False)]
    kind = Optional[list[str]] if setting.repeatable else Optional[str]
    metavar = setting.metavar or ("[" + "|".join(setting.choices) + "]" if setting.choices else "VALUE")
    return Annotated[kind, typer.Option(option, help=help_, metavar=metavar, show_default=False)]
