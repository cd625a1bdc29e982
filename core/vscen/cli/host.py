"""``vscen host``: what the host offers, the host checks of chosen scenarios, and snapshots.

``vscen host`` shows the host facts vscen builds guests from (libvirt's capabilities and
domain capabilities, and on a local host what the kernel and sysfs say); ``vscen host check``
runs only the host validators the chosen scenarios and features name, as ``vscen run`` would;
``vscen host snapshot`` prints a ``<hostFacts>`` document that ``--host-facts`` reads back.
Heavy imports stay inside the commands, for a lean start-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from vscen.cli.common import ConnectOpt, HostFactsOpt, JsonOpt, err, split_features

# `vscen host` alone shows the host, so this group has no no_args_is_help
app = typer.Typer(help="What the host offers, whether it is ready for scenarios, and snapshots of it.",
                  rich_markup_mode=None)

_MARK = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def _open(connect: str | None):
    """The connection ``vscen run`` would use: --connect, the config's connect, else
    LIBVIRT_DEFAULT_URI or qemu:///system, else the embedded driver (said on stderr)."""
    from vscen.config import config_layers
    from vscen.host.connect import open_connection

    if not connect:
        conf: dict = {}
        for _, values in config_layers(None):
            conf.update(values)
        connect = conf.get("connect")
    connection = open_connection(connect)
    if connection.note:
        err(f"note: {connection.note}")
    return connection


def _facts(connect: str | None, host_facts: list[Path] | None, reg, pm):
    """(facts, connection URI or None) for the view, with the plugins' facts (*reg*'s
    providers; one that fails is a warning in *pm*)."""
    from vscen.host import facts as hf
    from vscen.host.providers import read_provided

    if host_facts:
        return read_provided(hf.load_files(host_facts), reg, pm=pm), None
    from vscen.hosts import facts_of

    connection = _open(connect)
    try:
        return facts_of(connection, reg, pm), connection.uri
    finally:
        connection.close()


# ------------------------------------------------------------------------------------------
# vscen host
# ------------------------------------------------------------------------------------------


@app.callback(invoke_without_command=True)
def show(
    ctx: typer.Context,
    json_: JsonOpt = False,
    connect: ConnectOpt = None,
    host_facts: HostFactsOpt = None,
):
    """Show the host: CPU, NUMA and huge pages, KVM, firmware, machine types, versions, and the
    plugins' host facts (confidential computing...)."""
    if ctx.invoked_subcommand:
        if json_ or connect or host_facts:
            from vscen.errors import UsageError

            raise UsageError(f"host: give --json, --connect and --host-facts after the subcommand "
                             f"(vscen host {ctx.invoked_subcommand} ... --json)")
        return
    from vscen import pipeline
    from vscen.validate import Support

    pm, reg = pipeline.load(pipeline.Request(scenarios=[]))
    facts, uri = _facts(connect, host_facts, reg, pm)
    for line in pm.warnings():
        err(f"warning: {line}")
    data = view(facts, uri)
    if json_:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(table(data, plugin_rows(facts, reg, Support.installed(), pm)))


def plugin_rows(facts, reg, support, pm=None) -> list[tuple[str, str]]:
    """The rows of ``vscen host`` that the plugins' fact providers show (``FactProvider.show``);
    one that fails is left out, with a warning."""
    rows: list[tuple[str, str]] = []
    for name, provider in reg.facts.items():
        if provider.show is None:
            continue
        try:
            rows += [(str(label), str(text)) for label, text in provider.show(facts.extra.get(name), facts, support)]
        except Exception as exc:  # the plugin's fault: named, and the view carries on
            err(f"warning: plugin '{reg.plugin_of(name, 'facts')}': fact '{name}' could not be shown: "
                f"{type(exc).__name__}: {exc}")
    return rows


def _cpulist(cpus) -> str:
    """0,1,2,3,8 -> 0-3,8"""
    out, run = [], []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out) or "none"


def _size(kib: int) -> str:
    for unit, scale in (("TiB", 1 << 30), ("GiB", 1 << 20), ("MiB", 1 << 10)):
        if kib >= scale:
            value = kib / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{kib} KiB"


def view(facts, uri: str | None, support=None) -> dict:
    """The host view as JSON-able data; :func:`table` renders it. *support* is no longer read
    (what libvirt knows is in the plugins' rows, :func:`plugin_rows`): kept for callers."""
    local = facts.local
    by_node: dict[int, dict[int, tuple[int, int]]] = {}
    for p in local.hugepages if local else ():
        by_node.setdefault(p.node, {})[p.size_kib] = (p.total, p.free)
    cells = []
    for cell in facts.cells:
        pages = []
        for size in sorted(s for s in set(cell.pages) | set(by_node.get(cell.id, {})) if s > 4):
            total, free = by_node.get(cell.id, {}).get(
                size, (cell.pages.get(size, 0), None if cell.free_pages is None else cell.free_pages.get(size, 0)))
            pages.append({"size_kib": size, "total": total, "free": free})
        cells.append({"id": cell.id, "memory_kib": cell.memory_kib, "cpus": list(cell.cpus),
                      "hugepages": pages})

    return {
        "source": facts.source,
        "connection": uri,
        "local": local is not None,
        "libvirt_version": facts.libvirt_version or None,
        "hypervisor_version": facts.hypervisor_version or None,
        "arch": facts.arch,
        "domain_type": facts.domain_type,
        "machine": facts.machine or None,
        "emulator": facts.emulator or None,
        "max_vcpu": facts.max_vcpu,
        "cpu": {"vendor": facts.cpu_vendor or None, "model": facts.cpu_model or None,
                "host_model": facts.host_model or None, "sockets": facts.sockets,
                "dies": facts.dies, "cores": facts.cores, "threads": facts.threads,
                "count": facts.cpus,
                # the host-model CPU's flags, with those its named model implies (cpu_map)
                "flags": list(facts.cpu_flags)},
        "numa": cells,
        "kvm": {"offered": facts.kvm, "device": local.kvm_device if local else None,
                "usable": local.kvm_usable if local else None,
                "modules": list(local.modules) if local else None},
        "iommu": {"capabilities": facts.iommu if facts.has_caps else None,
                  "groups": local.iommu_groups if local else None},
        "firmware": {
            "types": sorted(facts.firmware), "secure_boot": sorted(facts.secure_boot),
            "images": list(facts.firmware_images),
            "descriptors": None if local is None else [
                {"file": d.file, "executable": d.executable, "nvram_template": d.nvram_template,
                 "interfaces": list(d.interfaces), "architectures": list(d.architectures),
                 "machines": list(d.machines), "features": list(d.features)}
                for d in local.firmware],
        },
        "machines": [{"name": m.name, "canonical": m.canonical or None, "max_cpus": m.max_cpus,
                      "deprecated": m.deprecated} for m in facts.machines],
        "thp": None if local is None else {"enabled": local.thp_enabled or None,
                                           "defrag": local.thp_defrag or None},
        "ksm": None if local is None else {"run": local.ksm_run, "state": local.ksm},
        "programs": None if local is None else {"swtpm": local.swtpm or None,
                                                "virtiofsd": local.virtiofsd or None},
        "cmdline": local.cmdline if local else None,
        # the plugins' facts (``vscen.FactProvider``) by name, as ``vscen host snapshot`` records them
        "facts": dict(sorted(facts.extra.items())),
    }


def _yn(value, yes="yes", no="no", unknown="unknown") -> str:
    return unknown if value is None else yes if value else no


def table(d: dict, extra_rows=()) -> str:
    """The host view as label / value lines; *extra_rows*, the plugins' (:func:`plugin_rows`),
    follow KVM."""
    unknown = ("unknown (recorded facts)" if d["connection"] is None
               else "unknown (remote host: only read on the host itself)"
               if not d["local"] and not d["connection"].startswith("test:")
               else "unknown (embedded driver: a reference host, not this machine)"
               if not d["local"] else "")
    rows: list[tuple[str, str]] = []
    add = rows.append
    how = ("recorded" if d["connection"] is None else
           f"on the embedded driver {d['connection']}" if d["connection"].startswith("test:") else
           "live" if d["connection"] == d["source"] else f"live, {d['connection']}")
    add(("host", f"{d['source']}, {how}"))
    add(("libvirt", f"{d['libvirt_version'] or 'unknown'}, QEMU {d['hypervisor_version'] or 'unknown'}"))
    add(("arch", f"{d['arch']}, domain type {d['domain_type']}"
                 + (f", machine {d['machine']}" if d["machine"] else "")
                 + (f", up to {d['max_vcpu']} vCPUs" if d["max_vcpu"] else "")))
    if d["emulator"]:
        add(("emulator", d["emulator"]))
    c = d["cpu"]
    model = " ".join(x for x in (c["vendor"], c["model"]) if x) or "unknown"
    if c["host_model"] and c["host_model"] != c["model"]:
        model += f" (host-model {c['host_model']})"
    add(("cpu", f"{model}: sockets {c['sockets']}, dies {c['dies']}, cores {c['cores']}, "
                f"threads {c['threads']} ({c['count']} CPUs)"))
    for cell in d["numa"]:
        pages = "; ".join(
            f"{_size(p['size_kib'])} pages: {p['total']} total, "
            + ("free unknown" if p["free"] is None else f"{p['free']} free")
            for p in cell["hugepages"]) or "no huge pages"
        add((f"numa cell {cell['id']}", f"{_size(cell['memory_kib'])}, CPUs {_cpulist(cell['cpus'])}; {pages}"))
    if not d["numa"]:
        add(("numa", "unknown (no capabilities)"))
    k = d["kvm"]
    kvm = "offered by libvirt" if k["offered"] else "not offered by libvirt (TCG only)"
    if d["local"]:
        kvm += ("; /dev/kvm " + ("usable (opens read/write)" if k["usable"] else
                                 "present but not usable (cannot open it read/write)" if k["device"]
                                 else "absent") + f"; modules: {', '.join(k['modules']) or 'none'}")
    add(("kvm", kvm))
    rows += extra_rows
    local = d["local"]
    io = d["iommu"]
    add(("iommu", f"capabilities: {_yn(io['capabilities'])}"
                  + (f"; IOMMU groups: {io['groups']}" if local else "")))
    fw = d["firmware"]
    add(("firmware", f"{', '.join(fw['types']) or 'none'}"
                     + (f"; secure boot: {', '.join(fw['secure_boot'])}" if fw["secure_boot"] else "")))
    for image in fw["images"]:
        add(("firmware image", image))
    for desc in fw["descriptors"] or ():
        add(("firmware descriptor", f"{Path(desc['file']).name}: {desc['executable'] or '?'} "
                                    f"[{', '.join(desc['features']) or 'no features'}]"))
    aliases = [f"{m['name']} = {m['canonical']}" for m in d["machines"] if m["canonical"]]
    names = [m["name"] for m in d["machines"] if not m["canonical"]]
    if d["machines"]:
        add(("machine types", (", ".join(aliases) + "; " if aliases else "")
             + f"{len(names)} type{'s' if len(names) != 1 else ''}: {_condense(names)}"))
    else:
        add(("machine types", "unknown (no capabilities)"))
    if local:
        add(("transparent hugepages", f"enabled {d['thp']['enabled'] or '?'}, defrag {d['thp']['defrag'] or '?'}"))
        add(("KSM", d["ksm"]["state"]))
        for name, path in d["programs"].items():
            add((name, path or "not installed"))
        add(("kernel cmdline", d["cmdline"] or "?"))
    else:
        for label in ("transparent hugepages", "KSM", "swtpm", "virtiofsd"):
            add((label, unknown))
    return _columns(rows)


def _condense(names: list[str]) -> str:
    """pc-q35-2.4 ... pc-q35-7.2 as 'pc-q35-2.4 ... 7.2 (25)'; the JSON has every name."""
    import re

    families: dict[str, list[str]] = {}
    for name in names:
        found = re.match(r"^(.*-)(\d+(?:\.\d+)+)$", name)
        families.setdefault(found.group(1) if found else name, []).append(name)
    out = []
    for prefix, members in families.items():
        if len(members) > 2:
            out.append(f"{members[0]} ... {members[-1][len(prefix):]} ({len(members)})")
        else:
            out += members
    return ", ".join(out)


def _columns(rows: list[tuple[str, str]], width: int = 100) -> str:
    import textwrap

    left = max(len(label) for label, _ in rows) + 2
    lines = []
    for label, value in rows:
        wrapped = textwrap.wrap(value, max(40, width - left), break_on_hyphens=False) or [""]
        lines.append(f"{label:<{left}}{wrapped[0]}")
        lines += [" " * left + w for w in wrapped[1:]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# vscen host check
# ------------------------------------------------------------------------------------------


@app.command()
def check(
    scenarios: Annotated[Optional[list[str]], typer.Argument(help="Scenarios to check the host for (see 'vscen list scenarios').")] = None,
    feature: Annotated[Optional[list[str]], typer.Option("--feature", "-f", help="+NAME adds a feature, -NAME removes one. Repeatable.")] = None,
    memory: Annotated[Optional[str], typer.Option(help="Guest memory, for the huge page count (default: the scenarios').")] = None,
    connect: ConnectOpt = None,
    host_facts: HostFactsOpt = None,
    json_: JsonOpt = False,
):
    """Run the host checks SCENARIOS (and --feature) need, as 'vscen run' would; exit 4 when one fails."""
    from vscen import pipeline
    from vscen.context import Context
    from vscen.errors import HostError, RulesError, UsageError, raise_all
    from vscen.resolve import resolve
    from vscen.validate import Support, host_validators

    scenarios = list(scenarios or [])
    add, remove = split_features(feature or [])
    if not scenarios and not add:
        raise UsageError("scenario: give at least one scenario (see 'vscen list scenarios')")
    request = pipeline.Request(scenarios=scenarios, add=add, remove=remove,
                               options={"memory": memory}, host_facts=host_facts or [],
                               connect=connect)
    pm, reg = pipeline.load(request)
    for line in pm.warnings():
        err(f"warning: {line}")
    resolution = resolve(reg, scenarios, add, remove)
    settings, uri = pipeline.request_settings(request, reg, resolution)
    # the same facts and connection as 'vscen run': recorded files check on the embedded driver
    before = len(pm.notes)
    facts, connection = pipeline._facts(request, uri, settings, reg, pm, resolution.facts())
    for line in pm.notes[before:]:  # fact providers that failed
        err(f"warning: {line}")
    try:
        if connection.note:
            err(f"note: {connection.note}")
        arch = settings.arch or facts.arch
        raise_all(RulesError, "architecture",
                  [f"{i.kind} '{i.name}' supports {', '.join(i.arches)}, not {arch}"
                   for i in resolution.items if i.arches and arch not in i.arches])
        ctx = Context(settings=settings, host=facts, resolution=resolution,
                      support=Support.installed(), registry=reg, uri=connection.uri,
                      connection=connection)
        host_checks = host_validators(reg, resolution)
        checks = pipeline.run_host_validators(ctx, reg, host_checks)
    finally:
        connection.close()
    names = [s.name for s in resolution.scenarios] + [f"+{n}" for n in add]
    failed = [c for c in checks if c.status == "fail"]
    if json_:
        typer.echo(json.dumps({
            "connection": connection.uri, "host": facts.source, "scenarios": [s.name for s in resolution.scenarios],
            "features": [{"name": f.name, "why": resolution.why[f.name]} for f in resolution.features],
            "validators": host_checks, "ready": not failed,
            "checks": [{"validator": c.validator, "status": c.status, "message": c.message, "fix": c.fix}
                       for c in checks]}, indent=2))
    else:
        typer.echo(f"host checks for {' '.join(names)} on {facts.source}:")
        if not checks:
            typer.echo("  none: the chosen scenarios and features name no host check")
        for c in checks:
            typer.echo(f"{_MARK[c.status]} {c.validator}: {c.message}")
            if c.fix and c.status != "pass":
                typer.echo(f"     fix: {c.fix}")
    if failed:
        which = ", ".join(dict.fromkeys(c.validator for c in failed))
        raise HostError(f"the host is not ready for {' '.join(names)}: {which} failed")
    if not json_:
        warned = sum(c.status == "warn" for c in checks)
        typer.echo(f"ready: {len(checks)} checks, none failing"
                   + (f", {warned} warning{'s' if warned > 1 else ''}" if warned else ""))


# ------------------------------------------------------------------------------------------
# vscen host snapshot
# ------------------------------------------------------------------------------------------


@app.command()
def snapshot(connect: ConnectOpt = None):
    """Print a <hostFacts> document of the host, for --host-facts: capabilities, domain
    capabilities (q35 on x86), versions, free huge pages, on a local host the kernel's side,
    and the facts the plugins read (their fact providers)."""
    from vscen import pipeline

    pm, reg = pipeline.load(pipeline.Request(scenarios=[]))
    connection = _open(connect)
    try:
        if connection.is_test:
            from vscen.host.facts import REFERENCE_HOST, reference

            err(f"note: {connection.uri} is libvirt's embedded test driver, not a host: this is "
                "vscen's reference host")
            from vscen.host.providers import read_provided

            facts = read_provided(reference(), reg, connection=connection, pm=pm)
            text = _with_facts(REFERENCE_HOST.read_text(), facts.extra)
        else:
            from vscen.host.probe import snapshot_of

            text = snapshot_of(connection, reg, pm)
    finally:
        connection.close()
    for line in pm.warnings():
        err(f"warning: {line}")
    typer.echo(text, nl=False)


def _with_facts(document: str, facts: dict) -> str:
    """*document* (a <hostFacts>) with the plugins' *facts* appended, its comments kept."""
    if not any(v is not None for v in facts.values()):
        return document
    from lxml import etree

    from vscen.host.factjson import facts_element

    tree = etree.fromstring(document.encode(), etree.XMLParser(remove_blank_text=True)).getroottree()
    tree.getroot().append(facts_element(facts))
    return etree.tostring(tree, pretty_print=True, encoding="unicode")
