"""Names and values checked by their characters, without regular expressions: Python compiles
a pattern with Python code (half a million instructions each), and a command's start-up
checked a dozen of them before any was used twice."""

from __future__ import annotations

LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGITS = frozenset("0123456789")
ALNUM = LOWER | UPPER | DIGITS


def spelled(text, first: frozenset, rest: frozenset, longest: int | None = None) -> bool:
    """Whether *text* is a string of one character of *first* then characters of *rest*, at
    most *longest* in all."""
    return (isinstance(text, str) and 0 < len(text) <= (longest or len(text))
            and text[0] in first and rest.issuperset(text[1:]))


def runs(text: str, kind: frozenset) -> list[str]:
    """*text* cut where it goes from characters of *kind* to others and back."""
    out: list[str] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or (text[i] in kind) != (text[i - 1] in kind):
            out.append(text[start:i])
            start = i
    return out
