"""The pipeline, one stage per module: discover -> register -> resolve -> facts -> build ->
validate. ``render(request)`` runs it and changes nothing anywhere; ``vscen.plan`` and
``vscen.apply`` take the result to the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vscen.errors import HostError, RulesError, UsageError, raise_all


@dataclass
class Request:
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
    tune_host: bool = False
    passphrase_source: Any = None


@dataclass
class Result:
    xml: str
    ctx: Any
    checks: list = field(default_factory=list)
    connection: Any = None
    customised: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def settings(self):
        return self.ctx.settings

    @property
    def resolution(self):
        return self.ctx.resolution


def load(request: Request):
    """discover + register: (plugin manager, registry)."""
    from vscen.manager import get_plugin_manager
    from vscen.registry import build_registry
    from vscen.settings import config_layers

    # the config files' disabled_plugins; read only where entry points are discovered
    layers = config_layers(request.config) if request.entry_points else ()
    pm = get_plugin_manager(plugins=request.plugins, entry_points=request.entry_points,
                            disabled=request.disabled, layers=layers)
    return pm, build_registry(pm)


def render(request: Request, keep_connection: bool = True) -> Result:
    from vscen.context import Context
    from vscen.domain.build import build
    from vscen.resolve import resolve
    from vscen.validate import Support, check_schema, run_domain_validators

    if not request.scenarios and not request.add:
        raise UsageError("scenario: give at least one scenario (see 'vscen list scenarios')")
    pm, reg = load(request)
    try:
        resolution = resolve(reg, request.scenarios, request.add, request.remove)
        rule_problems: list[str] = []
    except RulesError as exc:
        resolution, rule_problems = None, exc.problems

    settings, connect = request_settings(request, reg, resolution, rule_problems)

    facts, connection = _facts(request, connect, settings)
    arch = settings.arch or facts.arch
    bad_arch = [f"{i.kind} '{i.name}' supports {', '.join(i.arches)}, not {arch}"
                for i in resolution.items if i.arches and arch not in i.arches]
    raise_all(RulesError, "architecture", bad_arch)

    ctx = Context(settings=settings, host=facts, resolution=resolution,
                  support=request.support or Support.installed(), registry=reg,
                  uri=connection.uri if connection else "", connection=connection,
                  force=request.force, tune_host=request.tune_host,
                  passphrase_source=request.passphrase_source)
    ctx.notes.extend(facts.notes)
    if settings.virt_type is None and not facts.kvm:
        ctx.note(f"{facts.source} offers no KVM: domain type qemu (TCG, much slower)")

    checks = run_host_validators(ctx, reg, resolution.validators())
    fails = [c for c in checks if c.status == "fail"]
    raise_all(HostError, "the host is not ready",
              [f"{c.validator}: {c.message}" + (f" (fix: {c.fix})" if c.fix else "") for c in fails])

    domain = build(ctx)
    if settings.peers and ctx._peers is None:
        ctx.note("--peer: no chosen scenario or feature looks at other hosts; ignored")
    root, _ = domain.render()
    from lxml import etree

    customised = customise(root, request.sets)
    raise_all(RulesError, "plugins set different values on the same XML path",
              domain.conflicts({path for path, _ in customised}))
    xml = etree.tostring(root, pretty_print=True, encoding="unicode")
    owners = {path: who for path, value, who in domain.explain() if not value}
    for path, _value in customised:
        owners[path.rsplit("/@", 1)[0]] = "user (--set)"
    if request.schema:
        check_schema(xml, owner_of=lambda p: owners.get(p, ""))
    ctx.xml = etree.fromstring(xml.encode())
    domain_checks = run_domain_validators(ctx, [v for v in reg.validators.values() if v.kind == "domain"])
    fails = [c for c in domain_checks if c.status == "fail"]
    from vscen.errors import InvalidDomainError

    raise_all(InvalidDomainError, "the domain is not valid",
              [f"{c.element or 'domain'}"
               + (f" (set by {owners[c.element]})" if c.element in owners else "")
               + f": {c.message} [{c.validator}]" for c in fails])
    if not keep_connection and connection is not None:
        connection.close()
        connection = ctx.connection = None
    return Result(xml=xml, ctx=ctx, checks=checks + domain_checks, connection=connection,
                  customised=customised, warnings=pm.warnings())


def request_settings(request: Request, reg, resolution, rule_problems: list[str] = ()):
    """(settings, connect URI from the config files) for *request*, as ``render`` builds them:
    scenario defaults < config files < options. Raises RulesError with *rule_problems* and
    the scenarios' clashing defaults, all at once."""
    from vscen.settings import build_settings, config_layers

    layers = config_layers(request.config)
    file_conf: dict[str, Any] = {}
    for _, values in layers:
        file_conf.update(values)
    connect = request.connect or file_conf.pop("connect", None)
    ignored = ("connect", "output", "disabled_plugins")  # not guest settings
    layers = [(label, {k: v for k, v in values.items() if k not in ignored}) for label, values in layers]
    chosen = resolution.scenarios if resolution else [reg.scenarios[n] for n in request.scenarios]
    defaults = [(s.name, dict(s.defaults)) for s in chosen]
    name = "-".join(request.scenarios) or "-".join(request.add)
    base = [("default", {"name": name})]
    options = [("option", {k: v for k, v in request.options.items() if v is not None})]
    settings, clashes = build_settings(defaults, base + layers + options, request.disks)
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


def _is_local(uri: str) -> bool:
    from urllib.parse import urlparse

    return not urlparse(uri).hostname


def _facts(request: Request, connect: str | None, settings):
    """Host facts and the connection the guest is for."""
    from vscen.host import facts as hf
    from vscen.host.connect import EMBEDDED_URI, open_connection

    if request.host_facts:
        facts = hf.load_files(request.host_facts)
        # recorded facts describe another host: define on the embedded driver unless told
        connection = open_connection(connect or EMBEDDED_URI)
        return facts, connection
    connection = open_connection(connect)
    if connection.is_test:
        return hf.reference(), connection
    from vscen.host.probe import probe

    return probe(connection, settings.arch, settings.machine, settings.virt_type), connection


def load_peers(ctx) -> list:
    """Host facts of ``ctx.settings.peers``: a libvirt URI (``qemu+ssh://kvm7/system``) is
    opened and probed for the guest's arch, machine and domain type; anything else is recorded
    files, several joined by ',' (``caps.xml,domcaps.xml``), read as ``--host-facts`` does."""
    from vscen.host import facts as hf
    from vscen.host.connect import open_connection
    from vscen.host.probe import DEFAULT_MACHINES, probe

    s = ctx.settings
    arch = s.arch or ctx.host.arch
    machine = s.machine or DEFAULT_MACHINES.get(arch)
    virt_type = s.virt_type or ctx.host.domain_type
    peers = []
    for spec in s.peers:
        if "://" in spec:
            connection = open_connection(spec)
            try:
                if connection.is_test:
                    peers.append(replace(hf.reference(), source=spec))
                else:
                    peers.append(probe(connection, arch, machine, virt_type))
            finally:
                connection.close()
            continue
        paths = [Path(p) for p in spec.split(",")]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UsageError(f"--peer {spec}: '{missing[0]}' is neither a libvirt URI "
                             "(qemu+ssh://HOST/system) nor a recorded host facts file")
        peers.append(hf.load_files(paths))
    return peers


def customise(root, sets: list[str]) -> list[tuple[str, str]]:
    """Apply ``XPATH=VALUE`` post-customisations to the finished XML.

    An XPath ending in ``/@attr`` sets that attribute on every element the rest matches
    (creating the attribute); any other XPath sets the text of the elements it matches.
    An XPath that matches nothing is an error.
    """
    from lxml import etree

    done = []
    tree = root.getroottree()
    for item in sets:
        # an XPath may hold '=' in a predicate: split at the first '=' outside brackets
        expr, value = _split_set(item)
        if value is None or not expr:
            raise UsageError(f"--set: '{item}' is not XPATH=VALUE")
        attr = None
        target = expr
        head, slash_at, tail = expr.rpartition("/@")
        if slash_at and tail.replace("-", "").replace("_", "").isalnum():
            target, attr = head, tail
        try:
            nodes = root.xpath(target)
        except etree.XPathError as exc:
            raise UsageError(f"--set: '{expr}' is not a valid XPath ({exc})") from None
        nodes = [n for n in nodes if isinstance(n, etree._Element)] if isinstance(nodes, list) else []
        if not nodes:
            raise UsageError(f"--set: '{expr}' matches nothing in the domain XML")
        for node in nodes:
            if attr:
                node.set(attr, value)
            else:
                if len(node):
                    raise UsageError(f"--set: '{expr}' matches <{node.tag}>, which has child elements; set an attribute or a leaf element")
                node.text = value
            done.append((tree.getpath(node) + (f"/@{attr}" if attr else ""), value))
    return done


def _split_set(item: str) -> tuple[str, str]:
    depth = 0
    split = -1
    for i, ch in enumerate(item):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "=" and depth == 0:
            split = i
            break
    if split < 0:
        return "", None
    return item[:split].strip(), item[split + 1:]
