"""The pipeline, one stage per module: discover -> register -> resolve -> facts -> build ->
validate. ``render(request)`` runs it and changes nothing anywhere; ``vscen.plan`` and
``vscen.apply`` take the result to the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vscen.errors import HostError, PluginError, RulesError, UsageError, VscenError, raise_all


@dataclass
class Request:
    """What the user asks for: scenarios, features added or removed, settings and options."""

    scenarios: list[str]
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    #: settings given as options (None = not given)
    options: dict[str, Any] = field(default_factory=dict)
    disks: list[str] | None = None
    config: Path | None = None
    #: post-customisations ``XPATH=VALUE``, applied to the finished XML
    sets: list[str] = field(default_factory=list)
    host_facts: list[Path] = field(default_factory=list)
    connect: str | None = None
    #: the host's facts read already (``vscen.HostFacts``: many guests for one host): nothing
    #: is opened, the guest is rendered for *connect* (host actions, which need a connection,
    #: cannot plan from such a result)
    facts: Any = None
    #: plugins given in-process as (name, object), for tests and embedding
    plugins: tuple = ()
    entry_points: bool = True
    #: plugin names not to load (besides VSCEN_DISABLED_PLUGINS and the config's disabled_plugins)
    disabled: tuple = ()
    #: what libvirt knows (default: the installed one); for rendering for a newer libvirt
    support: Any = None
    #: validate against the installed libvirt's schema (off only when rendering for another)
    schema: bool = True
    force: bool = False
    #: (plugin manager, registry) loaded already (the command line loads them once)
    loaded: Any = None


@dataclass
class Result:
    """What the pipeline made: the domain XML, the context, the checks and the connection."""

    xml: str
    ctx: Any
    checks: list = field(default_factory=list)
    connection: Any = None
    customised: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the host actions that prepare the host for the failing host checks (``HostAction.prepares``):
    #: no guest was built (``xml`` is empty), the run prepares the host only
    prepare_only: tuple[str, ...] = ()
    #: the XML passed libvirt's schema, as installed on this machine
    schema_checked: bool = False

    @property
    def settings(self):
        return self.ctx.settings

    @property
    def resolution(self):
        return self.ctx.resolution


def load(request: Request):
    """discover + register: (plugin manager, registry)."""
    from vscen.registry import load as load_registry

    return load_registry(request.config, plugins=request.plugins, entry_points=request.entry_points,
                         disabled=request.disabled)


def render(request: Request, keep_connection: bool = True) -> Result:
    from vscen.context import Context
    from vscen.domain.build import build
    from vscen.resolve import resolve
    from vscen.validate import Support, check_schema, domain_validators, host_validators, run_domain_validators

    if not request.scenarios and not request.add:
        raise UsageError("scenario: give at least one scenario (see 'vscen list scenarios')")
    pm, reg = request.loaded or load(request)
    try:
        resolution = resolve(reg, request.scenarios, request.add, request.remove)
        rule_problems: list[str] = []
    except RulesError as exc:
        resolution, rule_problems = None, exc.problems

    settings, connect = request_settings(request, reg, resolution, rule_problems)
    resolution = _implied_by_settings(request, reg, resolution, settings)

    facts, connection = _facts(request, connect, settings, reg, pm, resolution.facts())
    arch = settings.arch or facts.arch
    bad_arch = [f"{i.kind} '{i.name}' supports {', '.join(i.arches)}, not {arch}"
                for i in resolution.items if i.arches and arch not in i.arches]
    raise_all(RulesError, "architecture", bad_arch)

    ctx = Context(settings=settings, host=facts, resolution=resolution,
                  support=request.support or Support.installed(), registry=reg,
                  uri=connection.uri if connection else (connect or ""), connection=connection,
                  force=request.force)
    ctx.notes.extend(facts.notes)
    ctx.notes.extend(settings.notes)
    _check_machine(settings, facts)
    if settings.virt_type is None and not facts.kvm:
        ctx.note(f"{facts.source} offers no KVM: domain type qemu (TCG, much slower)")

    checks = run_host_validators(ctx, reg, host_validators(reg, resolution))
    fails = [c for c in checks if c.status == "fail"]
    preparing = _preparing(ctx, reg, resolution, fails)
    if preparing:
        failing = ", ".join(dict.fromkeys(c.validator for c in fails))
        ctx.note(f"no guest is built: {failing} fails until the host is prepared ({', '.join(preparing)}) "
                 "and rebooted; then run the same command again")
        return Result(xml="", ctx=ctx, checks=checks, connection=connection, warnings=pm.warnings(),
                      prepare_only=preparing)
    raise_all(HostError, "the host is not ready",
              [f"{c.validator}: {c.message}" + (f" (fix: {c.fix})" if c.fix else "") for c in fails])

    domain = build(ctx)
    from vscen.host.providers import unused_notes

    for note in unused_notes(settings, reg, resolution.facts()):
        ctx.note(note)
    customised = domain.customise(request.sets)
    raise_all(RulesError, "plugins set different values on the same XML path", domain.conflicts())
    from lxml import etree

    root, _ = domain.render()  # rendered once: customise kept it current
    xml = etree.tostring(root, pretty_print=True, encoding="unicode")
    owner_of = _owners(domain, customised)
    if request.schema:
        check_schema(xml, owner_of=owner_of)
    ctx.xml = etree.fromstring(xml.encode())
    domain_checks = run_domain_validators(ctx, domain_validators(reg, resolution))
    fails = [c for c in domain_checks if c.status == "fail"]
    from vscen.errors import InvalidDomainError

    raise_all(InvalidDomainError, "the domain is not valid",
              [f"{c.element or 'domain'}"
               + (f" (set by {owner_of(c.element)})" if owner_of(c.element) else "")
               + f": {c.message} [{c.validator}]" for c in fails])
    if not keep_connection and connection is not None:
        connection.close()
        connection = ctx.connection = None
    return Result(xml=xml, ctx=ctx, checks=checks + domain_checks, connection=connection,
                  customised=customised, warnings=pm.warnings(), schema_checked=bool(request.schema))


def _owners(domain, customised):
    """Who set an element (XPath -> plugin, or the user's --set), for error messages: read
    from the model only where a message needs it."""
    owners = None

    def owner_of(path: str) -> str:
        nonlocal owners
        if owners is None:
            owners = {p: who for p, value, who in domain.explain() if not value}
            owners.update((p.rsplit("/@", 1)[0], domain.USER) for p, _value in customised)
        return owners.get(path, "")

    return owner_of


def _preparing(ctx, reg, resolution, fails) -> tuple[str, ...]:
    """The chosen host actions that prepare the host for every failing host check in this run
    (``HostAction.prepares``); () where some failure is left unaddressed."""
    if not fails:
        return ()
    covered, actions = set(), []
    for name in resolution.host_actions():
        action = reg.host_actions[name]
        if action.prepares is None:
            continue
        try:
            names = set(action.prepares(ctx) or ())
        except VscenError:
            raise
        except Exception as exc:  # a bug in the plugin: say whose
            raise PluginError(f"host action '{name}' of {reg.describe(name, 'host-actions')} failed in "
                              f"prepares: {type(exc).__name__}: {exc}") from exc
        if names:
            covered |= names
            actions.append(name)
    return tuple(actions) if actions and {c.validator for c in fails} <= covered else ()


def request_settings(request: Request, reg, resolution, rule_problems: list[str] = ()):
    """(settings, connect URI from the config files) for *request*, as ``render`` builds them:
    scenario defaults < config files < options. Raises RulesError with *rule_problems* and
    the scenarios' clashing defaults, all at once."""
    from vscen.config import config_layers
    from vscen.settings import build_settings

    layers = config_layers(request.config)
    file_conf: dict[str, Any] = {}
    for _, values in layers:
        file_conf.update(values)
    connect = request.connect or file_conf.pop("connect", None)
    ignored = ("connect", "output", "disabled_plugins", "hosts")  # not guest settings
    layers = [(label, {k: v for k, v in values.items() if k not in ignored}) for label, values in layers]
    chosen = resolution.scenarios if resolution else [reg.scenarios[n] for n in request.scenarios]
    defaults = [(s.name, dict(s.defaults)) for s in chosen]
    name = "-".join(request.scenarios) or "-".join(request.add)
    base = [("default", {"name": name})]
    options = [("option", {k: v for k, v in request.options.items() if v is not None})]
    settings, clashes = build_settings(defaults, base + layers + options, request.disks, reg.settings)
    # every reason at once: the rules' and the scenarios' clashing defaults
    raise_all(RulesError, "the chosen scenarios and features cannot be combined", list(rule_problems) + clashes)
    return settings, connect


def run_host_validators(ctx, reg, names: list[str]) -> list:
    from vscen.model import Check
    from vscen.validate import run_validator

    checks = []
    for name in names:
        v = reg.validators[name]
        if v.local_only and ctx.uri and not _is_local(ctx.uri):
            checks.append(Check("skip", f"{v.summary}: skipped, it reads local files and "
                                f"{ctx.uri} is remote", validator=name))
            continue
        checks.extend(run_validator(ctx, v, reg))
    return checks


def _implied_by_settings(request: Request, reg, resolution, settings):
    """The resolution with the features the given settings imply (``Setting.implies``: a
    ``--filesystem`` brings host-filesystem), or the same one where none is missing."""
    from vscen.resolve import resolve

    wanted: dict[str, str] = {}
    for name, setting in sorted(reg.settings.items()):
        value = settings.get(name)
        if not setting.implies or value in (None, False, (), setting.default):
            continue
        for item in setting.implies:
            if item in request.remove:
                if settings.source(name) == "detected":
                    continue  # found by its plugin (Setting.derive), not given: the removal wins
                raise RulesError(f"{setting.cli_option} needs {item}, which --feature -{item} removes")
            if not resolution.has(item):
                wanted.setdefault(item, setting.cli_option)
    if not wanted:
        return resolution
    implied = resolve(reg, request.scenarios, [*request.add, *wanted], request.remove)
    for item, option in wanted.items():
        implied.why[item] = f"implied by {option}"
    return implied


def _check_machine(settings, facts) -> None:
    """A machine type the host does not offer for the guest's arch is refused here, with what
    it offers, rather than by libvirt at define time."""
    if not settings.machine or not facts.machines or (settings.arch and settings.arch != facts.arch):
        return
    offered = {m.name for m in facts.machines}
    if settings.machine not in offered:
        from vscen.resolve import suggest

        aliases = sorted(facts.machine_aliases)
        names = aliases + [m.name for m in reversed(facts.machines) if not m.deprecated and m.name not in aliases]
        more = f" and {len(names) - 10} more ('vscen host')" if len(names) > 10 else ""
        raise HostError(f"machine: '{settings.machine}' is not offered by {facts.source} for {facts.arch}"
                        f"{suggest(settings.machine, offered)}; it offers {', '.join(names[:10])}{more}")


def _is_local(uri: str) -> bool:
    from urllib.parse import urlparse

    return not urlparse(uri).hostname


def _facts(request: Request, connect: str | None, settings, reg=None, pm=None, names=()):
    """Host facts and the connection the guest is for: the core's facts (a live probe,
    recorded files, or the reference host of the embedded driver), then the plugins' facts
    named in *names* (``vscen.host.providers``) where *reg* is given."""
    from vscen.host import facts as hf
    from vscen.host.connect import EMBEDDED_URI, open_connection

    if request.facts is not None:
        facts, connection, read_from = request.facts, None, None
    elif request.host_facts:
        facts = hf.load_files(request.host_facts)
        # recorded facts describe another host: define on the embedded driver unless told
        connection = open_connection(connect or EMBEDDED_URI)
        read_from = None  # the plugins' facts are the recorded ones, or unknown
    else:
        connection = open_connection(connect)
        read_from = connection
        if connection.is_test:
            facts = hf.reference()
        else:
            from vscen.host.probe import probe

            facts = probe(connection, settings.arch, settings.machine, settings.virt_type)
    if reg is not None:
        from vscen.host.providers import read_provided

        try:
            facts = read_provided(facts, reg, settings=settings, connection=read_from, pm=pm, names=names)
        except BaseException:
            if connection is not None:
                connection.close()
            raise
    return facts, connection


def customise(root, sets: list[str]) -> list[tuple[str, str]]:
    """``--set`` items applied to a plain lxml tree (see vscen.domain.customise)."""
    from vscen.domain.customise import customise as apply_sets

    return apply_sets(root, sets)
