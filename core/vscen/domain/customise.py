"""``--set XPATH=VALUE``: what the user customises in the finished domain, as the user's layer.

An XPath ending in ``/@attr`` sets that attribute on every element the rest matches (creating
the attribute); any other XPath sets the text of the elements it matches. An XPath that
matches nothing, an attribute name XML cannot hold, or a value with characters XML cannot
hold is a one-line error naming the item.
"""

from __future__ import annotations

import re

from vscen.errors import UsageError

#: an XML attribute name (no namespace prefix: libvirt's domain has none the user sets)
_ATTR = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
#: what XML 1.0 cannot hold in text or attribute values
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def split_set(item: str) -> tuple[str, str | None]:
    """``XPATH=VALUE`` split at the first '=' outside brackets (a predicate may hold one)."""
    depth = 0
    for i, ch in enumerate(item):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "=" and depth == 0:
            return item[:i].strip(), item[i + 1:]
    return "", None


def parse_set(item: str) -> tuple[str, str, str | None, str]:
    """(expression, target XPath, attribute or None, value) of one ``--set`` item; the XPath
    is compiled, so a bad one is refused before anything is built."""
    from lxml import etree

    expr, value = split_set(item)
    if value is None or not expr:
        raise UsageError(f"--set: '{item}' is not XPATH=VALUE")
    if _NOT_XML.search(value) or _NOT_XML.search(expr):
        raise UsageError(f"--set: {item!r} holds a character XML cannot hold (a control character)")
    target, attr = expr, None
    head, at, tail = expr.rpartition("/@")
    if at:
        if not _ATTR.fullmatch(tail) or tail.lower().startswith("xml"):
            raise UsageError(f"--set: '{tail}' in '{expr}' is not an attribute name vscen sets "
                             "(letters, digits, '_', '-', '.'; not xmlns or xml...)")
        target, attr = head, tail
    try:
        etree.XPath(target)
    except (etree.XPathError, ValueError) as exc:
        raise UsageError(f"--set: '{expr}' is not a valid XPath ({exc})") from None
    return expr, target, attr, value


def targets(root, expr: str, target: str) -> list:
    """The elements *target* matches in *root*; an error where it matches none."""
    from lxml import etree

    try:
        nodes = root.xpath(target)
    except (etree.XPathError, ValueError) as exc:
        raise UsageError(f"--set: '{expr}' is not a valid XPath ({exc})") from None
    nodes = [n for n in nodes if isinstance(n, etree._Element)] if isinstance(nodes, list) else []
    if not nodes:
        raise UsageError(f"--set: '{expr}' matches nothing in the domain XML")
    return nodes


def customise(root, sets: list[str]) -> list[tuple[str, str]]:
    """Apply ``--set`` items to a plain lxml tree (``vscen validate``-style tools); the
    pipeline applies them to the domain model instead (``Domain.customise``)."""
    done = []
    tree = root.getroottree()
    for item in sets:
        expr, target, attr, value = parse_set(item)
        for node in targets(root, expr, target):
            if attr:
                node.set(attr, value)
            else:
                if len(node):
                    raise UsageError(f"--set: '{expr}' matches <{node.tag}>, which has child elements; "
                                     "set an attribute or a leaf element")
                node.text = value
            done.append((tree.getpath(node) + (f"/@{attr}" if attr else ""), value))
    return done
