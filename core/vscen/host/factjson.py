"""The plugins' facts in a ``<hostFacts>`` document: ``<facts><fact name="...">JSON</fact>
</facts>``, written by ``vscen host snapshot`` and read back by ``--host-facts``, bounded
(size, nesting, count, finite numbers) since a recorded file may come from anywhere.
"""

from __future__ import annotations

from typing import Any

from vscen.errors import UsageError

#: bounds on a recorded plugin fact (``<facts><fact name=...>JSON</fact></facts>``): its JSON
#: text, how deeply it nests, and how many facts a document holds
MAX_FACT_CHARS = 4 << 20
MAX_FACT_DEPTH = 32
MAX_FACTS = 256


def read_facts_element(el, label: str) -> dict[str, Any]:
    """The plugins' facts of a ``<facts>`` element: name -> JSON value, bounded in size and
    depth; anything else is a UsageError naming *label* (the file)."""
    import json

    out: dict[str, Any] = {}
    for fact in el:
        if not isinstance(fact.tag, str):
            continue
        name = fact.get("name", "")
        if fact.tag != "fact" or not name:
            raise UsageError(f"{label}: <facts> holds <fact name='...'> elements only, not <{fact.tag}>"
                             + ("" if fact.tag != "fact" else " without a name"))
        if name in out:
            raise UsageError(f"{label}: fact '{name}' is recorded twice")
        if len(out) >= MAX_FACTS:
            raise UsageError(f"{label}: more than {MAX_FACTS} facts; not a snapshot vscen wrote")
        if len(fact):
            raise UsageError(f"{label}: fact '{name}' holds elements; a fact is JSON text")
        text = fact.text or ""
        if len(text) > MAX_FACT_CHARS:
            raise UsageError(f"{label}: fact '{name}' is {len(text)} characters of JSON, more than "
                             f"the {MAX_FACT_CHARS} a fact may have")
        if _nesting(text) > MAX_FACT_DEPTH:
            raise UsageError(f"{label}: fact '{name}' nests deeper than {MAX_FACT_DEPTH} levels")
        try:
            out[name] = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
        except ValueError as exc:
            raise UsageError(f"{label}: fact '{name}' is not valid JSON ({exc})") from None
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _nesting(text: str) -> int:
    """How deeply JSON *text* nests arrays and objects (brackets in strings do not count),
    told before parsing: json.loads recurses once per level."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def facts_element(facts: dict[str, Any]):
    """A ``<facts>`` element of the plugins' facts (None values left out: not known)."""
    import json

    from lxml import etree

    el = etree.Element("facts")
    for name in sorted(facts):
        if facts[name] is not None:
            etree.SubElement(el, "fact", name=name).text = json.dumps(facts[name], sort_keys=True)
    return el
