"""A small declarative model of a libvirt domain, with provenance.

Plugins never build XML strings. They find-or-create elements and set attributes and text;
the model records which plugin wrote what, at which precedence level, and serialises in
libvirt's own child order (``order.py``). This is simpler than virtinst's one-class-per-element
objects and gives the two things vscen needs everywhere: provenance (``--explain``) and
order-independent conflict detection (two plugins of one level writing different values to
one path, unless a higher level decides).

    cpu = domain.ensure("cpu").set(mode="host-passthrough", migratable="off")
    domain.ensure("clock").child("timer", name="rtc").set(tickpolicy="catchup")
    disk = domain.ensure("devices").add("disk", type="file", device="disk")
    disk.ensure("driver").set(name="qemu", type="qcow2", cache="none")
    domain.ensure("vcpu").text(4)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from vscen.domain.order import position

#: precedence: the user's --set > user settings > scenario > feature > built-in default
LEVELS = ("default", "feature", "scenario", "user", "set")
TEXT = "#text"


@dataclass(frozen=True)
class Origin:
    """Which plugin wrote a part of the domain XML, and at which level."""

    plugin: str
    level: str

    @property
    def rank(self) -> int:
        return LEVELS.index(self.level)

    def __str__(self) -> str:
        return f"{self.plugin} ({self.level})"


def _str(value) -> str:
    if isinstance(value, bool):
        raise TypeError("booleans are ambiguous in libvirt XML: give 'yes'/'no' or 'on'/'off'")
    return str(value)


class Element:
    """One element: tag, attributes and text with who wrote them, ordered children."""

    def __init__(self, domain: Domain | None, tag: str, parent: Element | None = None):
        self.tag = tag
        self.parent = parent
        self.children: list[Element] = []
        self._domain = domain if domain is not None else self  # the root is its own domain
        self.origin: Origin = self._domain.current
        #: key (attribute name or "#text") -> writes [(value, origin)], first write first
        self.writes: dict[str, list[tuple[str | None, Origin]]] = {}
        #: XML namespaces declared here: prefix -> URI (see ``namespace``)
        self.namespaces: dict[str, str] = {}

    # -- finding and creating -------------------------------------------------------------

    def find(self, path: str, **match) -> Element | None:
        """The first element at *path* (tags separated by '/'); *match* filters the last."""
        node: Element | None = self
        tags = path.split("/")
        for i, tag in enumerate(tags):
            want = match if i == len(tags) - 1 else {}
            node = next((c for c in node.children if c.tag == tag and c._matches(want)), None)
            if node is None:
                return None
        return node

    def findall(self, tag: str, **match) -> list[Element]:
        return [c for c in self.children if c.tag == tag and c._matches(match)]

    def child(self, tag: str, **match) -> Element:
        """Find the first child *tag* whose attributes include *match*, or create it."""
        found = self.find(tag, **match)
        return found if found is not None else self.add(tag, **match)

    def ensure(self, path: str) -> Element:
        """Find or create each element along *path*: ``ensure("features/acpi")``."""
        node = self
        for tag in path.split("/"):
            node = node.child(tag)
        return node

    def add(self, tag: str, **attrs) -> Element:
        """Append a new child *tag* (for repeated elements: disks, interfaces, channels)."""
        el = Element(self._domain, tag, self)
        self.children.append(el)
        self._domain._changed()
        return el.set(**attrs)

    def remove(self) -> None:
        """Take this element out of the model."""
        if self.parent is not None:
            self.parent.children.remove(self)
            self._domain._changed()

    def namespace(self, prefix: str, uri: str) -> Element:
        """Declare the XML namespace *prefix* on this element, for its own tag and its
        children's: ``<metadata>`` holds other applications' elements, each in its namespace
        (``metadata.child("app:app").namespace("app", URI).child("app:os", id=...)``)."""
        known = self.namespaces.get(prefix)
        if known is not None and known != uri:
            raise ValueError(f"namespace prefix '{prefix}' is declared already as {known}")
        self.namespaces[prefix] = uri
        self._domain._changed()
        return self

    def _qname(self) -> tuple[str, dict[str, str] | None]:
        """The lxml tag (``{URI}name`` for ``prefix:name``) and the declaration it needs."""
        prefix, sep, local = self.tag.partition(":")
        if not sep:
            return self.tag, None
        node: Element | None = self
        while node is not None and prefix not in node.namespaces:
            node = node.parent
        if node is None:
            raise ValueError(f"<{self.tag}>: no namespace declared for prefix '{prefix}' (Element.namespace)")
        return f"{{{node.namespaces[prefix]}}}{local}", {prefix: node.namespaces[prefix]}

    # -- writing ----------------------------------------------------------------------------

    def set(self, **attrs) -> Element:
        """Set attributes (``None`` withdraws this plugin's value); returns self to chain."""
        for name, value in attrs.items():
            self._write(name.rstrip("_"), None if value is None else _str(value))
        return self

    def text(self, value) -> Element:
        self._write(TEXT, _str(value))
        return self

    def _write(self, key: str, value: str | None) -> None:
        origin = self._domain.current
        writes = self.writes.setdefault(key, [])
        # in place: a rendered tree's records hold this list (see Domain.customise)
        writes[:] = [w for w in writes if w[1].plugin != origin.plugin]
        if value is not None:
            writes.append((value, origin))
        self._domain._changed()

    # -- reading ----------------------------------------------------------------------------

    def get(self, key: str = TEXT) -> str | None:
        """The effective value: the last write of the highest level."""
        best = self._winner(key)
        return best[0] if best else None

    @property
    def attrs(self) -> dict[str, str]:
        return {k: v for k in self.writes if k != TEXT and (v := self.get(k)) is not None}

    def _winner(self, key: str):
        writes = self.writes.get(key) or []
        return max(reversed(writes), key=lambda w: w[1].rank, default=None) if writes else None

    def _matches(self, match: dict) -> bool:
        return all(self.get(k.rstrip("_")) == _str(v) for k, v in match.items())


class Domain(Element):
    """The root ``<domain>``; plugins write inside ``domain.writer(plugin, level)``."""

    #: the plugin name of the user's ``--set`` customisations
    USER = "user (--set)"

    def __init__(self) -> None:
        self.current = Origin("vscen", "default")
        self._version = 0
        #: (version, root, records, lxml element -> model element) of the last render
        self._rendered: tuple | None = None
        super().__init__(None, "domain")

    def _changed(self) -> None:
        self._version += 1

    @contextlib.contextmanager
    def writer(self, plugin: str, level: str):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}")
        previous, self.current = self.current, Origin(plugin, level)
        try:
            yield self
        finally:
            self.current = previous

    def render(self):
        """Build the lxml tree; returns (root, records) where records are for explain/conflicts:
        a list of (lxml element, key or None for the element itself, writes). The tree is built
        again only when the model changed since the last call."""
        if self._rendered is not None and self._rendered[0] == self._version:
            return self._rendered[1], self._rendered[2]
        from lxml import etree

        records: list = []
        nodes: dict = {}

        def build(node: Element, into):
            nodes[into] = node
            for key in node.writes:
                if key != TEXT and (value := node.get(key)) is not None:
                    into.set(key, value)
            if (text := node.get(TEXT)) is not None:
                into.text = text
            records.append((into, None, [(None, node.origin)]))
            for key, writes in node.writes.items():
                records.append((into, key, writes))
            kids = sorted(node.children, key=lambda c: position(node.tag, c.tag))
            for kid in kids:
                tag, nsmap = kid._qname()
                build(kid, etree.SubElement(into, tag, nsmap=nsmap))

        root = etree.Element(self.tag)
        build(self, root)
        self._rendered = (self._version, root, records, nodes)
        return root, records

    def customise(self, sets: list[str]) -> list[tuple[str, str]]:
        """Apply ``--set XPATH=VALUE`` items as the user's layer: each value is written into
        the model at the user level (so ``explain`` and ``conflicts`` know it), and into the
        rendered tree, which stays current. Returns (path, value) of every change."""
        if not sets:
            return []
        from vscen.domain.customise import parse_set, targets
        from vscen.errors import UsageError

        parsed = [parse_set(item) for item in sets]  # every item checked before any is applied
        root, records = self.render()
        nodes = self._rendered[3]
        tree = root.getroottree()
        done = []
        with self.writer(self.USER, "set"):
            for expr, target, attr, value in parsed:
                for node in targets(root, expr, target):
                    el, key = nodes[node], attr or TEXT
                    if key == TEXT and len(node):
                        raise UsageError(f"--set: '{expr}' matches <{node.tag}>, which has child elements; "
                                         "set an attribute or a leaf element")
                    if key not in el.writes:
                        el.writes[key] = []
                        records.append((node, key, el.writes[key]))
                    el._write(key, value)
                    if key == TEXT:
                        node.text = value
                    else:
                        node.set(key, value)
                    done.append((tree.getpath(node) + (f"/@{attr}" if attr else ""), value))
        self._rendered = (self._version, root, records, nodes)
        return done

    def conflicts(self) -> list[str]:
        """Paths where two plugins of the same, highest level wrote different values."""
        root, records = self.render()
        tree = root.getroottree()
        out = []
        for el, key, writes in records:
            if key is None or not writes:
                continue
            top = max(w[1].rank for w in writes)
            rivals = {}
            for value, origin in writes:
                if origin.rank == top:
                    rivals.setdefault(value, origin)
            if len(rivals) > 1:
                where = tree.getpath(el) + ("" if key == TEXT else f"/@{key}")
                who = ", ".join(f"'{o.plugin}' sets '{v}'" for v, o in rivals.items())
                out.append(f"{where}: {who} (both {LEVELS[top]} level; decide with --set or drop one)")
        return out

    def explain(self) -> list[tuple[str, str, str]]:
        """(path, value, who) for every element and value in the model, in document order."""
        root, records = self.render()
        tree = root.getroottree()
        rows = []
        for el, key, writes in records:
            path = tree.getpath(el)
            if key is None:
                rows.append((path, "", str(writes[0][1])))
                continue
            best = max(reversed(writes), key=lambda w: w[1].rank, default=None)
            if best is None:
                continue
            others = [(v, o) for v, o in writes if o != best[1] and v != best[0]]
            if best[1].plugin == self.USER and others:
                was, by = max(reversed(others), key=lambda w: w[1].rank)
                who = f"{self.USER}, was '{was}' from {by}"
            else:
                who = str(best[1]) + (f"; overrides {', '.join(f'{o} wanted {v!r}' for v, o in others)}" if others else "")
            rows.append((path + ("" if key == TEXT else f"/@{key}"), best[0], who))
        return rows
