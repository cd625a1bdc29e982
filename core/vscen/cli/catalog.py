"""The listings (``vscen list``, ``plugins``, ``rules``) and ``vscen validate``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from vscen.cli.common import loaded, registry, rules_of


class Kind(StrEnum):
    scenarios = "scenarios"
    features = "features"
    validators = "validators"
    host_actions = "host-actions"


def list_(
    kind: Annotated[Kind, typer.Argument(help="What to list.")] = Kind.scenarios,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """List scenarios, features, validators or host actions."""
    reg = registry()
    rows = []
    for name, obj in sorted(reg.table(kind.value).items()):
        row = {"name": name, "plugin": reg.plugin_of(name, kind.value), "summary": obj.summary}
        if kind in (Kind.scenarios, Kind.features):
            row |= rules_of(obj) | {"details": obj.details}
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


def list_app(subjects: dict) -> typer.Typer:
    """``vscen list [SUBJECT]``: the core's subjects (scenarios, the default, features,
    validators, host-actions), then what plugins list (*subjects*: name -> (summary, the
    function of their command, ``vscen.Command.listing``), with its own options)."""
    app = typer.Typer(help="List scenarios (the default), features, validators, host actions"
                      + "".join(f", {name}" for name in subjects) + ".")

    @app.callback(invoke_without_command=True)
    def default(ctx: typer.Context, json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
        if ctx.invoked_subcommand is None:
            list_(Kind.scenarios, json_)

    for kind in Kind:
        app.command(kind.value, help=f"List the {kind.value.replace('-', ' ')}.")(_lister(kind))
    for name, (summary, function) in subjects.items():
        app.command(name, help=None if function.__doc__ else summary)(function)
    return app


def _lister(kind: Kind):
    def command(json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
        list_(kind, json_)

    return command


def plugins(json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """Installed plugins: name, distribution, version, what they register, hooks, status."""
    pm, _ = loaded()
    registry()  # says which plugins are broken
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


def rules(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the rules matrix (docs/rules-matrix.md) as Markdown.")] = False,
):
    """The compatibility rules of every feature and scenario, and which scenarios compose."""
    from vscen.docs import rules_matrix, scenario_pairs

    reg = registry()
    if markdown:
        typer.echo(rules_matrix(reg), nl=False)
        return
    items = {name: {"kind": item.kind, **rules_of(item)} for name, item in sorted(reg.items().items())}
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


def validate(
    file: Annotated[Path, typer.Argument(help="A libvirt domain XML file.")],
    host_facts: Annotated[Optional[list[Path]], typer.Option("--host-facts", help="Recorded host facts to check devices against.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Validate a domain XML file: libvirt's schema, then the domain validator plugins."""
    from lxml import etree

    from vscen.context import Context
    from vscen.declared import declared_defaults
    from vscen.errors import InvalidDomainError, UsageError
    from vscen.host.facts import HostFacts, load_files
    from vscen.resolve import Resolution
    from vscen.settings import Settings
    from vscen.validate import Support, domain_validators, run_domain_validators, schema_errors

    try:
        text = file.read_bytes().decode("utf-8")
        root = etree.fromstring(text.encode())
    except OSError as exc:
        raise UsageError(f"validate: cannot read '{file}' ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"validate: '{file}' is not UTF-8 text (libvirt's XML is UTF-8)") from None
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise UsageError(f"validate: '{file}' is not well-formed XML ({exc})") from None
    reg = registry()
    errors = schema_errors(text)
    facts = load_files(host_facts) if host_facts else HostFacts(source="unknown host")
    ctx = Context(settings=Settings(name=root.findtext("name") or "?", memory=0, vcpu=1,
                                    extras=declared_defaults(reg.settings)), host=facts,
                  resolution=Resolution(), support=Support.installed(), registry=reg, xml=root)
    checks = run_domain_validators(ctx, domain_validators(reg, ctx.resolution))
    fails = errors + [f"{c.element or 'domain'}: {c.message} [{c.validator}]" for c in checks if c.status == "fail"]
    if json_:
        typer.echo(json.dumps({"file": str(file), "valid": not fails, "schema_errors": errors,
                               "checks": [c.__dict__ for c in checks]}, indent=2))
    elif not fails:
        typer.echo(f"{file}: valid (libvirt schema and {len(checks)} check findings, none failing)")
    if fails:
        raise InvalidDomainError(f"{file}: " + "; ".join(fails), fails)
