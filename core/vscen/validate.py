"""Validate a built domain: libvirt's RelaxNG schema, then the domain validator plugins.

The schema is the installed libvirt's own (``/usr/share/libvirt/schemas``), so what vscen
writes is what this libvirt accepts; :class:`Support` tells plugins what that is.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vscen.errors import InvalidDomainError, UsageError

SCHEMA_DIR = Path(os.environ.get("VSCEN_LIBVIRT_SCHEMAS", "/usr/share/libvirt/schemas"))


@dataclass(frozen=True)
class Support:
    """What the installed libvirt accepts, read from its RelaxNG schema: the values it lists
    for an attribute of an element (``values("launchSecurity", "type")``). The core knows no
    element in particular; the plugin that writes one asks about it.

    ``known`` holds values given outright, as ``{"element/@attribute": values}`` (tests pretend
    an older libvirt this way); what it lacks is read from ``rng``, the installed
    ``domaincommon.rng`` (:meth:`installed`), on first use."""

    known: Mapping[str, frozenset[str]] = field(default_factory=dict, hash=False)
    schema: bool = False
    rng: Path | None = field(default=None, compare=False)

    @classmethod
    def installed(cls) -> Support:
        return _installed_support()

    def values(self, element: str, attribute: str) -> frozenset[str]:
        """The values the schema lists for *attribute* of *element*; empty where it lists none
        (a free-form attribute) or the schema is not installed."""
        key = f"{element}/@{attribute}"
        if key in self.known:
            return frozenset(self.known[key])
        if self.rng is None:
            return frozenset()
        from vscen.cache import schema_values  # reading the schema takes a while: remembered

        return schema_values(self.rng, element, attribute, lambda: _schema_values(self.rng, element, attribute))

    def accepts(self, element: str, attribute: str, value: str) -> bool:
        """Whether the schema lists *value* for *attribute* of *element*."""
        return value in self.values(element, attribute)


@functools.cache
def _installed_support() -> Support:
    common = SCHEMA_DIR / "domaincommon.rng"
    if not common.is_file():
        return Support()
    return Support(schema=True, rng=common)


_RNG = "{http://relaxng.org/ns/structure/1.0}"


class _Grammar:
    """A RelaxNG file's ``<define>``s and ``<element>``s; the files it includes are read only
    when a ``<ref>`` names a define the ones read so far lack (start-up stays lean)."""

    def __init__(self, rng: Path):
        self.defines: dict[str, list] = {}
        self.roots: list = []
        self.pending: list[Path] = []
        self.seen: set[Path] = set()
        self._load(rng)

    def _load(self, path: Path) -> None:
        from lxml import etree

        if path in self.seen or not path.is_file():
            return
        self.seen.add(path)
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
        self.roots.append(root)
        for d in root.iter(f"{_RNG}define"):
            self.defines.setdefault(d.get("name"), []).append(d)
        self.pending += [path.parent / inc.get("href", "") for inc in root.iter(f"{_RNG}include")]

    def define(self, name: str) -> list:
        while name not in self.defines and self.pending:
            self._load(self.pending.pop(0))
        return self.defines.get(name, [])


@functools.cache
def _grammar(rng: Path) -> _Grammar | None:
    from lxml import etree

    try:
        return _Grammar(rng)
    except (OSError, etree.XMLSyntaxError):
        return None


@functools.cache
def _schema_values(rng: Path, element: str, attribute: str) -> frozenset[str]:
    """The ``<value>``s the RelaxNG at *rng* lists for *attribute* of every *element* named so,
    following ``<ref>``s to their ``<define>``s (and the grammar's ``<include>``s), not into
    child elements."""
    grammar = _grammar(rng)
    if grammar is None:
        return frozenset()

    def walk(node, found: set, inside: bool, visited: set) -> None:
        for child in node:
            tag = child.tag
            if tag == f"{_RNG}element":
                continue  # a child element's attributes are its own
            if tag == f"{_RNG}ref":
                key = (child.get("name"), inside)
                if key not in visited:
                    visited.add(key)
                    for d in grammar.define(key[0]):
                        walk(d, found, inside, visited)
            elif tag == f"{_RNG}attribute" and not inside:
                if child.get("name") == attribute:
                    walk(child, found, True, visited)
            elif tag == f"{_RNG}value" and inside:
                if child.text:
                    found.add(child.text.strip())
            else:
                walk(child, found, inside, visited)

    found: set[str] = set()
    for root in list(grammar.roots):
        for el in root.iter(f"{_RNG}element"):
            if el.get("name") == element:
                walk(el, found, False, set())
    return frozenset(found)


@functools.cache
def _schema(name: str):
    from lxml import etree

    path = SCHEMA_DIR / name
    if not path.exists():
        raise UsageError(f"libvirt schema {path} is missing: install libvirt (libvirt-daemon or libvirt-clients)")
    return etree.RelaxNG(etree.parse(str(path)))


def schema_errors(xml_text: str, schema: str = "domain.rng", owner_of=None) -> list[str]:
    """libvirt RelaxNG errors for *xml_text*, one line each, naming the element's path and,
    with *owner_of(path)*, the plugin that set it."""
    from lxml import etree

    rng = _schema(schema)
    root = etree.fromstring(xml_text.encode())
    if rng.validate(root):
        return []
    tree = root.getroottree()
    by_line = {}
    for el in root.iter():
        by_line.setdefault(el.sourceline, el)
    messages = [(err.path or (tree.getpath(by_line[err.line]) if err.line in by_line else ""), err.message)
                for err in rng.error_log]
    # RelaxNG reports an error inside an interleave at the enclosing element: narrow it down
    culprit = _culprit(root, rng)
    out = []
    if culprit is not None and culprit is not root:
        path = tree.getpath(culprit)
        who = owner_of(path) if owner_of else ""
        out.append(f"{path}{f' (set by {who})' if who else ''}: not valid for this libvirt's schema")
    for path, message in messages:
        who = owner_of(path) if owner_of and path else ""
        out.append(f"{path or 'domain'}{f' (set by {who})' if who else ''}: {message}")
    return list(dict.fromkeys(out))


def _culprit(root, rng):
    """The deepest element whose removal alone makes the document valid (None if none)."""
    node, found = root, None
    while True:
        for child in list(node):
            index = node.index(child)
            node.remove(child)
            valid = rng.validate(root)
            node.insert(index, child)
            if valid:
                node = found = child
                break
        else:
            return found


def check_schema(xml_text: str, owner_of=None) -> None:
    """Raise if *xml_text* is not valid for the installed libvirt (an XML found valid against
    the same schema files before is not validated again: ``vscen.cache``)."""
    from vscen import cache

    if cache.known_valid(SCHEMA_DIR, xml_text):
        return
    errors = schema_errors(xml_text, owner_of=owner_of)
    if errors:
        raise InvalidDomainError(
            "the domain XML does not validate against libvirt's schema: " + "; ".join(errors), errors
        )
    cache.remember_valid(SCHEMA_DIR, xml_text)


def validators_named(reg) -> dict[str, list[str]]:
    """Validator name -> the features and scenarios that name it in their ``validators``."""
    named: dict[str, list[str]] = {}
    for item in (*reg.features.values(), *reg.scenarios.values()):
        for name in item.validators:
            named.setdefault(name, []).append(item.name)
    return named


def host_validators(reg, resolution) -> list[str]:
    """The host validators the items of *resolution* name, in order: run before the build."""
    return [name for name in resolution.validators() if reg.validators[name].kind == "host"]


def domain_validators(reg, resolution) -> list:
    """The domain validators to run on a result of *resolution*: those that no feature or
    scenario names in its ``validators``, and those that a chosen one names."""
    named, chosen = validators_named(reg), set(resolution.validators())
    return [v for v in reg.validators.values() if v.kind == "domain" and (v.name not in named or v.name in chosen)]


def run_domain_validators(ctx, validators) -> list:
    """Run every domain validator; returns the checks (with the validator's name filled in)."""
    checks = []
    for v in validators:
        checks.extend(run_validator(ctx, v, ctx.registry))
    return checks


def run_validator(ctx, validator, registry=None) -> list:
    """The checks of one validator, with its name filled in.

    A validator that raises (anything but vscen's own errors, which carry a message for the
    user) or returns something other than an iterable of ``vscen.Check`` is a bug in its
    plugin: it gives one failing check naming the validator, its plugin, distribution and
    version, and the other validators still run.
    """
    from collections.abc import Iterable
    from dataclasses import replace

    from vscen.errors import VscenError
    from vscen.model import Check

    try:
        returned = validator.check(ctx)
        if returned is None:
            return []
        if isinstance(returned, (Check, str, bytes, dict)) or not isinstance(returned, Iterable):
            bad = returned
        else:
            found = list(returned)
            wrong = [c for c in found if not isinstance(c, Check)]
            if not wrong:
                return [replace(check, validator=validator.name) for check in found]
            bad = wrong[0]
        what = f"returned {_short(bad)}, not an iterable of vscen.Check"
    except VscenError:
        raise  # the plugin refuses, with a message for the user
    except Exception as exc:
        what = f"failed: {type(exc).__name__}: {exc}"
    from vscen.manager import DISABLE_ENV

    if registry is None:
        who, fix = "its plugin", "report it to the plugin's authors"
    else:
        who = registry.describe(validator.name, "validators")
        fix = (f"report it to the plugin's authors, or disable the plugin "
               f"({DISABLE_ENV}={registry.plugin_of(validator.name, 'validators')})")
    return [Check("fail", f"validator '{validator.name}' of {who} {what}", fix=fix, validator=validator.name)]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
