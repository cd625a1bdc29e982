"""The pytest plugin part of vscen's test kit: the ``vscen_*`` fixtures and ``--vscen-regen``
(see ``vscen.testing``, whose ``pytest_plugins`` loads this module in every pytest session
where vscen is installed). It defines no autouse fixture.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vscen.testing import Loaded, compare_golden, host_files, load_plugins, render, validate

#: environment variables that would make results depend on the machine
_ENVIRONMENT = ("VSCEN_DISABLED_PLUGINS", "VSCEN_PLUGIN_PATH", "LIBVIRT_DEFAULT_URI")


def pytest_addoption(parser) -> None:
    group = parser.getgroup("vscen", "vscen plugin test kit")
    group.addoption("--vscen-regen", action="store_true", default=False,
                    help="rewrite the golden files compared by the vscen_golden fixture")


@pytest.fixture
def _vscen_isolated(monkeypatch, tmp_path_factory):
    """No vscen config file and no VSCEN_* variable of this machine reaches the fixtures."""
    import vscen.config

    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    config_home = tmp_path_factory.mktemp("vscen-config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.setattr(vscen.config, "SYSTEM_CONFIG", config_home / "no-system-config.toml")


@pytest.fixture
def vscen_plugins(_vscen_isolated):
    """``vscen_plugins(*plugins, entry_points=True, disabled=())``: a fresh plugin manager and
    registry (see :func:`load_plugins`)."""

    def load(*plugins, entry_points: bool = True, disabled=()) -> Loaded:
        return load_plugins(plugins, entry_points=entry_points, disabled=disabled)

    return load


@pytest.fixture
def vscen_render(_vscen_isolated):
    """``vscen_render(scenarios, *, host="amd-sev", **settings)``: see :func:`render`."""
    opened = []

    def render_kept(*args, **kw):
        result = render(*args, **kw)
        if result.connection is not None:
            opened.append(result.connection)
        return result

    yield render_kept
    for connection in opened:
        connection.close()


@pytest.fixture
def vscen_host_facts():
    """``vscen_host_facts(host)``: ``vscen.host.facts.HostFacts`` of a recorded host."""

    def facts(host="amd-sev"):
        from vscen.host.facts import load_files

        return load_files(host_files(host))

    return facts


@pytest.fixture
def vscen_validate():
    """``vscen_validate(xml, define=True)``: see :func:`validate`."""
    return validate


@pytest.fixture
def vscen_golden(request):
    """``vscen_golden(text, name)``: compare *text* with ``golden/<name>.xml`` in the test
    file's directory; ``pytest --vscen-regen`` writes it."""
    regen = request.config.getoption("--vscen-regen")
    base = Path(os.fspath(request.path)).parent / "golden"

    def golden(text: str, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"vscen_golden: name '{name}' must be a file name (no '/'), e.g. 'build-box@amd-sev'")
        path = base / (name if name.endswith(".xml") else f"{name}.xml")
        compare_golden(text, path, regen)
        return path

    return golden
