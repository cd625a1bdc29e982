"""``vscen plugin new``: write a ready-to-install plugin project ``vscen-NAME/``.

The project has a pyproject.toml declaring the ``vscen`` entry point, a package
``vscen_NAME`` registering one scenario or one feature with its rules, tests written with
vscen's test kit (``vscen.testing``) and the golden file they compare with, rendered here by
the same pipeline on the same recorded host, and a README saying how to test and publish it.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from string import Template

from vscen.errors import ExistsError, UsageError

KINDS = ("scenario", "feature")
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
#: the recorded host the generated golden file is rendered for (vscen.testing's default)
GOLDEN_HOST = "amd-sev"


def check_name(name: str) -> str:
    """The plugin's name: also its entry point, its scenario or feature, ``vscen-NAME``."""
    if name.startswith("vscen-") or name.startswith("vscen_"):
        raise UsageError(f"name: '{name}': leave out the 'vscen-' prefix; the project is called vscen-NAME")
    if not NAME_RE.fullmatch(name) or len(name) > 40:
        raise UsageError(f"name: '{name}' is not allowed; use 1-40 lowercase letters, digits and single '-', "
                         "starting with a letter (e.g. build-box)")
    return name


def taken(name: str) -> str | None:
    """Why *name* cannot be used here: a plugin, feature, scenario or distribution of that name
    is installed already (None if it is free)."""
    import importlib.util

    from vscen.pipeline import Request, load

    pm, reg = load(Request(scenarios=[]))
    if name in pm.infos:
        info = pm.infos[name]
        return f"a plugin '{name}' is installed already ({info.distribution} {info.version}, {info.status})"
    item = reg.item(name)
    if item is not None:
        return f"{item.kind} '{name}' is registered already by plugin '{reg.plugin_of(name)}'"
    dist = f"vscen-{name}"
    if any(i.distribution == dist for i in pm.infos.values()):  # local ones are "(local: DIR)"
        return f"the distribution {dist} is installed already"
    module = module_name(name)
    if importlib.util.find_spec(module) is not None:
        return f"a module {module} is importable already"
    return None


def module_name(name: str) -> str:
    return "vscen_" + name.replace("-", "_")


def create(name: str, kind: str = "scenario", directory: Path = Path("."), force: bool = False) -> tuple[Path, list[Path], str]:
    """Write ``directory/vscen-NAME``; returns (project, files written, note about the golden)."""
    check_name(name)
    if kind not in KINDS:
        raise UsageError(f"kind: '{kind}' is not one of {', '.join(KINDS)}")
    why = taken(name)
    if why:
        raise UsageError(f"name: '{name}' is taken: {why}; choose another name")
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--dir: '{directory}' is not a directory")
    project = directory / f"vscen-{name}"
    if project.exists() and not force:
        raise ExistsError(f"{project} exists already; choose another --dir, or --force to write the files over it")
    values = {"name": name, "module": module_name(name), "dist": f"vscen-{name}",
              "test": module_name(name).removeprefix("vscen_"), "vscen": _vscen_requirement(),
              "description": f"the '{name}' {kind} for vscen",
              "usage": f"vscen run {name} --dry-run" if kind == "scenario"
              else f"vscen run SCENARIO --feature +{name} --dry-run"}
    files = {path.format(**values): Template(text).substitute(values) for path, text in TEMPLATES[kind].items()}
    files.update({path.format(**values): Template(text).substitute(values) for path, text in COMMON.items()})
    written = []
    for rel, text in files.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    golden = project / "tests" / "golden" / f"{name}@{GOLDEN_HOST}.xml"
    try:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(render_golden(name, kind, project / module_name(name) / "__init__.py"))
        written.append(golden)
        note = ""
    except Exception as exc:  # the project is still fine: its tests say how to write the file
        note = (f"no golden file written ({type(exc).__name__}: {exc}); "
                "run 'pytest --vscen-regen' once the plugin is installed, and review the file")
    return project, written, note


def _vscen_requirement() -> str:
    from vscen import __version__

    major, minor = __version__.split(".")[:2]
    return f"vscen>={major}.{minor}"


def render_golden(name: str, kind: str, source: Path) -> str:
    """The XML the generated test compares with: the new module rendered in this process on
    the recorded host, without this machine's config files (as vscen.testing renders it)."""
    import importlib.util

    from vscen.pipeline import Request, render

    spec = importlib.util.spec_from_file_location(module_name(name), source)
    module = importlib.util.module_from_spec(spec)  # not put in sys.modules: nothing imports it
    spec.loader.exec_module(module)
    data = Path(__file__).resolve().parent / "data"
    request = Request(scenarios=[name] if kind == "scenario" else [], add=[] if kind == "scenario" else [name],
                      host_facts=[data / f"host-{GOLDEN_HOST}.xml"], plugins=((name, module),))
    with _without_machine_config():
        return render(request, keep_connection=False).xml


@contextmanager
def _without_machine_config():
    """No config file and no VSCEN_* variable of this machine, for the duration."""
    import tempfile

    import vscen.config

    names = ("VSCEN_DISABLED_PLUGINS", "VSCEN_PLUGIN_PATH", "LIBVIRT_DEFAULT_URI", "XDG_CONFIG_HOME")
    saved = {n: os.environ.pop(n, None) for n in names}
    system = vscen.config.SYSTEM_CONFIG
    with tempfile.TemporaryDirectory() as empty:
        os.environ["XDG_CONFIG_HOME"] = empty
        vscen.config.SYSTEM_CONFIG = Path(empty) / "none.toml"
        try:
            yield
        finally:
            vscen.config.SYSTEM_CONFIG = system
            for n, v in saved.items():
                if v is None:
                    os.environ.pop(n, None)
                else:
                    os.environ[n] = v


# ------------------------------------------------------------------------------------------
# templates: paths use {module}, {test}; contents $name, $module, $dist, $vscen...
# ------------------------------------------------------------------------------------------

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$description"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["$vscen"]

[project.optional-dependencies]
test = ["pytest>=7"]

# how vscen finds the plugin: entry point group "vscen"; the name "$name" is the plugin's
# identity in 'vscen plugins', in error messages and in VSCEN_DISABLED_PLUGINS
[project.entry-points.vscen]
$name = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''\
# $dist

A plugin for vscen: $description.

## Use

    pip install $dist
    vscen plugins                   # '$name' is listed, with what it registers
    $usage

Disable it without uninstalling: `VSCEN_DISABLED_PLUGINS=$name`, or in vscen's config file
(`~/.config/vscen/config.toml`) `disabled_plugins = ["$name"]`.

## Develop

    python -m venv .venv && . .venv/bin/activate
    pip install vscen               # or: pip install -e /path/to/vscen
    pip install -e '.[test]'
    pytest

The tests use vscen's test kit (the `vscen_*` pytest fixtures come with vscen): they render
against recorded hosts shipped with vscen, validate against libvirt's schema and compare with
the golden file under `tests/golden/`. After a deliberate change, `pytest --vscen-regen`
rewrites the golden files: review the diff before you commit it.

## Publish

    pip install build twine
    python -m build
    twine upload dist/*

The distribution is `$dist`, the import package `$module`, the entry point `$name` in the
group `vscen` (see pyproject.toml). See vscen's docs/plugin-guide.md.
'''

SCENARIO = '''\
"""$dist: the '$name' scenario for vscen.

A scenario is a named bundle of features (vscen's own, 'vscen list features', or yours) plus
default settings. Its rules are data; only ``apply`` is code, and it writes vscen's domain
model, never XML text. See vscen's docs/plugin-guide.md.
"""

from vscen import Conflict, Scenario, hookimpl


def _describe(domain, ctx):
    # runs after the scenario's features (they come first in the resolved order)
    domain.ensure("description").text(f"$name guest {ctx.settings.name}, made by $dist")


SCENARIO = Scenario(
    name="$name",
    summary="A headless guest with a serial console (edit me)",
    details="What it sets and why, shown by 'vscen list scenarios' (edit me).",
    # the features it bundles
    features=("cpu-passthrough", "storage", "network", "serial-console", "headless", "acpi", "clock", "rng"),
    # default settings, as in a config file; the user's options and config files win
    defaults={"machine": "q35", "memory": "2GiB", "vcpu": 2, "disk": {"size": "20GiB", "cache": "none"}},
    # what cannot be combined with it, and why (a feature or a scenario)
    conflicts=(Conflict("graphics", "a $name guest is headless: use 'virsh console'"),),
    # the architectures it supports (empty: any); machine q35 is x86's
    arches=("x86_64",),
    # host checks that must pass before anything is built ('vscen list validators')
    validators=("kvm",),
    # also: requires=(...) names that must be chosen too; implies=(...) names pulled in;
    # host_actions=(...) host preparations ('vscen list host-actions')
    apply=_describe,
)


@hookimpl
def vscen_register_scenarios(register):
    register(SCENARIO)
'''

SCENARIO_TEST = '''\
"""Tests of $dist with vscen's test kit: the vscen_* fixtures come with vscen.

``pytest --vscen-regen`` rewrites tests/golden/ after a deliberate change: review the diff.
"""

import pytest
from vscen import RulesError

import $module


def test_the_installed_plugin_loads(vscen_plugins):
    info = vscen_plugins().info("$name")  # found through the entry point in pyproject.toml
    assert (info.status, info.reason) == ("loaded", "")
    assert (info.distribution, info.module) == ("$dist", "$module")
    assert info.registers == {"scenarios": ["$name"]}


def test_it_renders_a_valid_guest(vscen_render, vscen_validate, vscen_golden):
    result = vscen_render("$name", plugins=[$module], host="amd-sev")
    features = {f.name for f in result.resolution.features}
    assert set($module.SCENARIO.features) <= features
    assert "<description>$name guest $name, made by $dist</description>" in result.xml
    assert "<graphics" not in result.xml
    vscen_validate(result.xml)  # libvirt's schema, and a define on test:///default
    vscen_golden(result.xml, "$name@amd-sev")


def test_the_user_settings_win_over_the_defaults(vscen_render):
    result = vscen_render("$name", plugins=[$module], name="box1", memory="8GiB", vcpu=4)
    assert result.settings.memory == 8 * 1024 * 1024  # KiB
    assert result.settings.source("memory") == "option"
    assert '<vcpu placement="static">4</vcpu>' in result.xml


def test_graphics_are_refused_with_the_reason(vscen_render):
    with pytest.raises(RulesError) as refused:
        vscen_render("$name", plugins=[$module], features=["graphics"])
    assert "use 'virsh console'" in " ".join(refused.value.problems)


def test_other_architectures_are_refused(vscen_render):
    with pytest.raises(RulesError, match="supports x86_64, not aarch64"):
        vscen_render("$name", plugins=[$module], host="aarch64")


def test_a_host_without_kvm_gets_a_warning(vscen_render):
    result = vscen_render("$name", plugins=[$module], host="local-tcg")
    assert result.xml.startswith('<domain type="qemu">')
    assert [c.status for c in result.checks if c.validator == "kvm"] == ["warn"]
'''

FEATURE = '''\
"""$dist: the '$name' feature for vscen.

A feature is one capability of a guest: its rules are data, and ``apply`` writes vscen's
domain model (never XML text). Use it with ``vscen run SCENARIO --feature +$name``, or name
it in a scenario's features. See vscen's docs/plugin-guide.md.
"""

from vscen import Feature, hookimpl


def _apply(domain, ctx):
    # <devices><panic model='isa'/>: QEMU's pvpanic device; libvirt then applies on_crash
    domain.ensure("devices").add("panic", model="isa")


FEATURE = Feature(
    name="$name",
    summary="Tell the host when the guest kernel panics (pvpanic) (edit me)",
    details="<devices><panic model='isa'/>: the guest reports a kernel panic to QEMU, and "
            "libvirt applies the domain's on_crash action instead of leaving it hung (edit me).",
    category="platform",
    # pulled in automatically and applied first: the guest finds pvpanic through ACPI
    implies=("acpi",),
    # the ISA pvpanic device exists on x86 only (empty: any architecture)
    arches=("x86_64",),
    # also: requires=(...) names that must be chosen too; conflicts=(Conflict(name, why),);
    # validators=(...) host checks; host_actions=(...) host preparations
    apply=_apply,
)


@hookimpl
def vscen_register_features(register):
    register(FEATURE)
'''

FEATURE_TEST = '''\
"""Tests of $dist with vscen's test kit: the vscen_* fixtures come with vscen.

``pytest --vscen-regen`` rewrites tests/golden/ after a deliberate change: review the diff.
"""

import pytest
from vscen import RulesError

import $module


def test_the_installed_plugin_loads(vscen_plugins):
    info = vscen_plugins().info("$name")  # found through the entry point in pyproject.toml
    assert (info.status, info.reason) == ("loaded", "")
    assert (info.distribution, info.module) == ("$dist", "$module")
    assert info.registers == {"features": ["$name"]}


def test_it_renders_a_valid_guest(vscen_render, vscen_validate, vscen_golden):
    result = vscen_render([], features=["$name"], plugins=[$module], host="amd-sev")
    assert result.resolution.why == {"acpi": "implied by $name", "$name": "chosen"}
    assert '<panic model="isa"/>' in result.xml
    vscen_validate(result.xml)  # libvirt's schema, and a define on test:///default
    vscen_golden(result.xml, "$name@amd-sev")


def test_it_combines_with_other_features(vscen_render):
    plain = vscen_render([], features=["storage"], host="kvm")
    result = vscen_render([], features=["storage", "$name"], plugins=[$module], host="kvm")
    assert "<panic" not in plain.xml and '<panic model="isa"/>' in result.xml
    assert "<disk" in result.xml


def test_other_architectures_are_refused(vscen_render):
    with pytest.raises(RulesError, match="supports x86_64, not aarch64"):
        vscen_render([], features=["$name"], plugins=[$module], host="aarch64")
'''

TEMPLATES = {
    "scenario": {"{module}/__init__.py": SCENARIO, "tests/test_{test}.py": SCENARIO_TEST},
    "feature": {"{module}/__init__.py": FEATURE, "tests/test_{test}.py": FEATURE_TEST},
}
COMMON = {"pyproject.toml": PYPROJECT, "README.md": README}
