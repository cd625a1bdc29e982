"""The checks by characters (vscen.chars) accept exactly what the regular expressions they
replace accepted (ASCII digits where the pattern said ``\\d``): names, sizes, networks,
machine types, pool names, natural sort."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vscen.chars import DIGITS, runs
from vscen.errors import UsageError
from vscen.settings import check_name, parse_network, parse_size

#: characters that matter to the patterns, and some that must be refused
ALPHABET = st.sampled_from(list("aZz09_.+-:/ \t\n\x00\x08\x1f\x7f\x80\xa0") + ["\u0661", "\u00b2", "\ud800", "\udfff", "\ue000",
                                                                            "é", "K", "i", "B", "G"])
TEXT = st.lists(ALPHABET, max_size=70).map("".join)

EXAMPLES = settings(max_examples=400, derandomize=True, deadline=None)


def _accepts(function, *args) -> bool:
    try:
        function(*args)
    except UsageError:
        return False
    return True


@EXAMPLES
@given(TEXT)
@example("a" * 64)
@example("a" * 65)
@example("9a.b+c_d-e")
@example("-a")
@example("a..b")
@example("\u0661")
def test_a_guest_name_is_what_the_pattern_allowed(text):
    pattern = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", text, re.ASCII) is not None and ".." not in text
    assert _accepts(check_name, text) == pattern


@EXAMPLES
@given(TEXT)
@example("9" * 20 + "GiB")
@example("9" * 21)
@example("1." + "5" * 20 + " G")
@example("1." + "5" * 21)
@example("1.")
@example(".5G")
@example("4GiBs")
@example("\u0661\u0662")
@example("0.0000001b")
def test_a_size_is_what_the_pattern_allowed(text):
    from vscen.settings import _UNITS

    m = re.fullmatch(r"(\d{1,20}(?:\.\d{1,20})?)\s*([A-Za-z]{0,3})", text.strip(), re.ASCII)
    unit = m.group(2).lower() if m else None
    expected = unit in _UNITS and int(float(m.group(1)) * _UNITS[unit]) > 0
    assert _accepts(parse_size, "memory", text) == expected
    if expected:
        assert parse_size("memory", text) == int(float(m.group(1)) * _UNITS[unit])


@EXAMPLES
@given(TEXT, st.sampled_from(["network=", "bridge="]))
@example("br0:1", "bridge=")
@example("", "network=")
@example("a/b", "network=")
def test_a_network_name_is_what_the_pattern_allowed(name, kind):
    expected = "," not in name and re.fullmatch(r"[A-Za-z0-9_.:-]+", (kind + name).strip().partition("=")[2],
                                                 re.ASCII) is not None
    assert _accepts(parse_network, kind + name) == expected


@pytest.mark.parametrize(("directory", "name"), [
    ("/var/lib/libvirt/images", "vscen-var-lib-libvirt-images"),
    ("/srv//vm images/", "vscen-srv-vm-images"),
    ("/data/é/.x-", "vscen-data-.x"),
    ("/", "vscen-root"),
])
def test_a_pool_name_keeps_safe_characters_and_collapses_the_rest(directory, name):
    from vscen_volumes.pools import pool_name

    assert pool_name(directory, []) == name


@EXAMPLES
@given(st.lists(st.sampled_from(list("09ab-.\u00b2")), max_size=12).map("".join))
def test_runs_cut_text_where_digits_start_and_end(text):
    parts = runs(text, DIGITS)
    assert "".join(parts) == text and all(parts)
    assert all((a[-1] in DIGITS) != (b[0] in DIGITS) for a, b in zip(parts, parts[1:], strict=False))
    assert parts == [p for p in re.split(r"([0-9]+)", text) if p]


def test_machines_sort_by_their_numbers():
    from vscen.host.facts import _natural

    names = ["pc-q35-2.10", "pc-q35-2.9", "pc-q35-7.2", "q35", "pc-i440fx-2.12"]
    assert sorted(names, key=_natural) == ["pc-i440fx-2.12", "pc-q35-2.9", "pc-q35-2.10", "pc-q35-7.2", "q35"]


@EXAMPLES
@given(TEXT)
def test_text_is_what_the_pattern_allowed(text):
    from vscen.settings import _check_text

    expected = re.search("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]", text) is None
    assert _accepts(_check_text, "name", [text]) == expected
