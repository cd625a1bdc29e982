"""``Setting.derive``: a plugin's setting nobody gave, found from the other settings (the os
plugin's --os from the --cdrom ISO), below the user's and a scenario's values."""

from __future__ import annotations

import pytest

from vscen import Setting
from vscen.errors import PluginError, UsageError
from vscen.settings import build_settings


def _label(settings, note):
    if not settings.cdrom:
        return None
    note(f"label: taken from {settings.cdrom}")
    return settings.cdrom.rsplit("/", 1)[-1].partition(".")[0]


def _upper(text):
    if not text.isalpha():
        raise ValueError("is not letters")
    return text.upper()


LABEL = Setting(name="label", parse=_upper, derive=_label, implies=(), help="A label.")


def settings(*layers, declared=None, scenario=()):
    return build_settings(list(scenario), [("default", {"name": "g"}), *layers], None,
                          declared or {"label": LABEL})[0]


def test_derived_where_nobody_gave_it_parsed_as_the_users():
    s = settings(("option", {"cdrom": "/isos/debian.iso"}))
    assert s.label == "DEBIAN" and s.source("label") == "detected" and s.level("label") == "default"
    assert "label: taken from /isos/debian.iso" in s.notes


def test_not_derived_where_given_or_nothing_to_derive_from():
    s = settings(("option", {"cdrom": "/isos/debian.iso", "label": "mine"}))
    assert s.label == "MINE" and s.source("label") == "option" and not s.notes
    assert settings(("scenario x", {}), scenario=[("x", {"label": "scen"})]).label == "SCEN"
    s = settings()
    assert s.label is None and "label" not in s.sources and not s.notes


def test_a_derived_value_is_checked_as_the_users():
    with pytest.raises(UsageError, match=r"^label: 'x1' is not letters"):
        settings(("option", {"cdrom": "/isos/x1.iso"}))


def test_a_derive_that_fails_is_the_plugins_bug_named():
    def broken(settings, note):
        return {}["nothing"]

    with pytest.raises(PluginError, match=r"^setting 'label': derive failed: KeyError: 'nothing'"):
        settings(("option", {"cdrom": "/i.iso"}), declared={"label": Setting(name="label", derive=broken, help="A label.")})
