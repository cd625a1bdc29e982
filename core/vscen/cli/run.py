"""``vscen run``: build, validate and define a guest; its options are the core's (``OPTIONS``)
and those every loaded plugin declares (``vscen.Setting``).

The options are data, made into the command's parameters by Typer's own ``get_click_param``
(the types, flags, metavars and completion of a Typer command): Typer's ``@app.command``
would read them back from a function's signature of ``Annotated`` types, copying each four
times, at every start-up: about 20 M instructions of a dry run's 424 M.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vscen.cli.common import complete, err, loaded, named_host, setting_param, split_features

#: the core's options, after the SCENARIOS argument: (parameter, type, default, option names,
#: keywords of ``typer.Option``); no names: ``--PARAMETER`` (``--NAME/--no-NAME`` for a flag)
OPTIONS = (
    ("name", str, None, (), {"help": "Guest name (default: the scenario names)."}),
    ("memory", str, None, (), {"help": "Memory, e.g. 4GiB, 512MiB (a bare number is MiB)."}),
    ("vcpu", str, None, (), {"help": "Number of virtual CPUs."}),
    ("machine", str, None, (), {"help": "Machine type: q35, pc, virt, pc-q35-8.2..."}),
    ("boot", str, None, (), {"help": "Boot devices in order: hd, cdrom, network (comma-separated)."}),
    ("arch", str, None, (), {"help": "Guest architecture (default: the host's)."}),
    ("virt_type", str, None, ("--virt-type",), {"help": "kvm or qemu (TCG); default: kvm where the host offers it."}),
    ("firmware", str, None, (), {"help": "efi or bios."}),
    ("disk", list[str], None, (), {"help": "Disk: path=/x.qcow2,size=20G,format=qcow2,bus=virtio,cache=none,io=native, "
                                           "or 'none'. Repeatable."}),
    ("cdrom", str, None, (), {"help": "ISO image to attach as a CD-ROM."}),
    ("network", str, None, (), {"help": "network=NAME, bridge=NAME, user or none (,model=MODEL)."}),
    ("graphics", str, None, (), {"help": "spice, vnc or none."}),
    ("feature", list[str], None, ("--feature", "-f"), {
        "help": "+NAME adds a feature, -NAME removes one. Repeatable.",
        "autocompletion": lambda incomplete: complete("features", incomplete)}),
    ("set_", list[str], None, ("--set",), {
        "help": "Customise the finished XML: XPATH=VALUE (./devices/graphics/@type=vnc). Repeatable."}),
    ("config", Path, None, (), {"help": "A TOML config file (above the user and system ones)."}),
    ("host_facts", list[Path], None, ("--host-facts",), {
        "help": "Recorded host facts: libvirt capabilities and/or domcapabilities XML. Repeatable."}),
    ("connect", str, None, ("--connect", "-c"), {
        "help": "libvirt URI (default: the config's connect, LIBVIRT_DEFAULT_URI or qemu:///system)."}),
    ("host", str, None, ("--host",), {
        "help": "A named host of the config files ([hosts.NAME]): its uri, and its recorded facts where it has "
                "them (not with --connect or --host-facts).",
        "autocompletion": lambda incomplete: complete("hosts", incomplete)}),
    ("output", Path, None, (), {"help": "Directory for <name>/domain.xml (default: $XDG_DATA_HOME/vscen)."}),
    ("disk_size", str, None, ("--disk-size",), {"help": "Size of new disks, e.g. 40G."}),
    ("transient", bool, False, ("--transient",), {
        "help": "Start a transient guest: never defined, gone when it stops."}),
    ("dry_run", bool, False, ("--dry-run",), {"help": "Print the XML and the plan; change nothing."}),
    ("explain", bool, False, (), {"help": "Show which plugin set each element and value."}),
    ("force", bool, False, (), {"help": "Replace what exists and differs: the output file, the domain, vscen's own "
                                        "leftovers (never a disk)."}),
    ("start", bool, False, (), {"help": "Start the guest once defined."}),
    ("json_", bool, False, ("--json",), {"help": "Print the summary as JSON."}),
    ("wait", float, 60.0, ("--wait",), {
        "min": 0, "help": "Seconds to wait while another vscen changes the same guest (0: refuse at once as busy)."}),
)
SCENARIOS_HELP = "Scenarios to combine (see 'vscen list scenarios')."


def run(
    scenarios: list[str],
    name: str | None = None,
    memory: str | None = None,
    vcpu: str | None = None,
    machine: str | None = None,
    boot: str | None = None,
    arch: str | None = None,
    virt_type: str | None = None,
    firmware: str | None = None,
    disk: list[str] | None = None,
    cdrom: str | None = None,
    network: str | None = None,
    graphics: str | None = None,
    feature: list[str] | None = None,
    set_: list[str] | None = None,
    config: Path | None = None,
    host_facts: list[Path] | None = None,
    connect: str | None = None,
    host: str | None = None,
    output: Path | None = None,
    disk_size: str | None = None,
    transient: bool = False,
    dry_run: bool = False,
    explain: bool = False,
    force: bool = False,
    start: bool = False,
    json_: bool = False,
    wait: float = 60.0,
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
    """``run``, for ``app.command(cls=...)``: (the function Typer calls, the class of the
    command, which makes the parameters: the core's ``OPTIONS``, then one option for each
    plugin setting in *registry*)."""
    import inspect

    from typer.core import TyperCommand
    from typer.main import get_click_param
    from typer.models import ParamMeta

    made = [get_click_param(ParamMeta(name="scenarios", annotation=list[str], default=typer.Argument(
        help=SCENARIOS_HELP, autocompletion=lambda incomplete: complete("scenarios", incomplete))))]
    made += [get_click_param(ParamMeta(name=name, annotation=kind, default=typer.Option(default, *decls, **keywords)))
             for name, kind, default, decls, keywords in OPTIONS]
    made += [get_click_param(ParamMeta(name=setting_param(s), annotation=_kind(s),
                                       default=_option(s, registry.plugin_of(name, "settings"))))
             for name, s in sorted(registry.settings.items())]
    params = [param for param, _ in made]
    convertors = {param.name: convert for param, convert in made if convert is not None}

    def run_command(**values):
        for key, convert in convertors.items():
            if values.get(key) is not None:
                values[key] = convert(values[key])
        return run(**values)

    run_command.__signature__ = inspect.Signature()  # Typer makes no parameters: the class does
    run_command.__doc__ = run.__doc__
    run_command.__name__ = "run"

    def run_class(**keywords):
        return TyperCommand(**keywords | {"params": params})

    return run_command, run_class


def _kind(setting):
    if setting.flag:
        return bool
    return list[str] if setting.repeatable else str


def _option(setting, plugin: str):
    help_ = setting.help
    if setting.choices:
        help_ += f" One of: {', '.join(setting.choices)}."
    if setting.example and not setting.flag:
        help_ += f" Example: {setting.cli_option} {setting.example}."
    help_ += f" [plugin {plugin}]"
    option = setting.cli_option
    if setting.flag:
        return typer.Option(None, f"{option}/--no-{option[2:]}", help=help_, show_default=False)
    metavar = setting.metavar or ("[" + "|".join(setting.choices) + "]" if setting.choices else "VALUE")
    return typer.Option(None, option, help=help_, metavar=metavar, show_default=False)
