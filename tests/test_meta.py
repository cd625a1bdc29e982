"""Meta-tests: the hook reference matches the hook specs, every hook is implemented by a
built-in plugin, every name in a rule is registered, and the docs and CI agree with the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import ROOT

import vscen.hookspecs as hookspecs


def hook_names() -> set[str]:
    return {n for n in dir(hookspecs) if n.startswith("vscen_")}


def test_every_hook_is_documented_and_nothing_else():
    documented = set(re.findall(r"^### (vscen_\w+)$", (ROOT / "docs/hooks.md").read_text(), re.M))
    assert documented == hook_names()


def test_every_hook_spec_has_a_docstring_with_params():
    for name in hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert ":param register:" in doc, name


def test_every_hook_is_implemented_by_a_built_in_plugin():
    from vscen.manager import get_plugin_manager

    pm = get_plugin_manager()
    implemented = {h for info in pm.infos.values() for h in info.hooks}
    assert hook_names() <= implemented


def test_built_in_plugins_load_without_problems():
    from vscen.pipeline import Request, load

    pm, reg = load(Request(scenarios=[]))
    assert [(i.name, i.reason) for i in pm.infos.values() if i.status != "loaded"] == []
    assert {"secure-vm", "desktop", "computation"} <= set(reg.scenarios)


def test_every_name_in_a_rule_is_registered():
    from vscen.pipeline import Request, load
    from vscen.regcheck import declaration_problems

    _, reg = load(Request(scenarios=[]))
    assert declaration_problems(reg) == {}


def test_the_catalog_names_every_registered_object():
    from vscen.pipeline import Request, load

    _, reg = load(Request(scenarios=[]))
    catalog = (ROOT / "docs/catalog.md").read_text()
    for name in [*reg.features, *reg.scenarios, *reg.validators]:
        assert f"`{name}`" in catalog, name


def test_every_feature_and_scenario_explains_itself():
    from vscen.pipeline import Request, load

    _, reg = load(Request(scenarios=[]))
    for item in reg.items().values():
        assert item.summary and item.details, item.name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line.strip() for line in readme[:12] if line.startswith("    bash scripts/setup.sh")]
    assert len(commands) == 2, "the README starts with two commands"
    assert commands[0].endswith("vscen run secure-vm")
    out = subprocess.run(["bash", "-c", "sed -n 's/^    \\(bash scripts\\/setup.sh --daemons && .*\\)$/\\1/p' README.md | head -n 1"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert out == commands[1]
    assert "sed -n 's/^    \\(bash scripts\\/setup.sh --daemons && .*\\)$/\\1/p' README.md" in (ROOT / ".ci/run").read_text()


def test_core_names_no_scenario():
    """The core knows no scenario: their names appear only in plugins, docs and tests."""
    names = ("secure-vm", "desktop", "computation")
    for path in Path(ROOT / "core/vscen").rglob("*.py"):
        text = path.read_text()
        for name in names:
            assert f'"{name}"' not in text and f"'{name}'" not in text, f"{path} names {name}"


def test_no_test_names_a_path_outside_the_repository():
    """The suite runs from a plain clone: no test climbs out of the checkout for its data."""
    climbing = re.compile(r"ROOT\.parent\b|[\"']\.\./shared|\bshared[\"']?\s*/\s*[\"']?fixtures")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "tests").rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if climbing.search(line) and path.name != "conftest.py" and path != Path(__file__)]
    assert offenders == []


def test_reading_beside_the_repository_is_caught():
    import conftest

    assert conftest.beside_repository(ROOT.parent / "shared" / "fixtures" / "hosts" / "x.xml")
    assert conftest.beside_repository(str(ROOT / ".." / "shared"))
    assert not conftest.beside_repository(ROOT / "tests" / "data" / "hosts" / "README.md")
    assert not conftest.beside_repository("/usr/share/libvirt/schemas/domain.rng")
    assert not conftest.beside_repository(3)


def test_every_recorded_host_file_is_in_the_repository_with_its_source():
    from conftest import HOSTS, RECORDED_HOSTS

    readme = (RECORDED_HOSTS / "README.md").read_text()
    for name in {f for files in HOSTS.values() for f in files}:
        assert (RECORDED_HOSTS / name).is_file(), name
        assert f"| {name} |" in readme, f"{name} has no source in {RECORDED_HOSTS / 'README.md'}"


def test_the_core_names_no_plugins_setting():
    """Each feature-specific setting belongs to its plugin: the core never reads one by name,
    spells its option, or compares a shell key with it."""
    from vscen.pipeline import Request, load

    _, reg = load(Request(scenarios=[]))
    patterns = []
    for name, setting in reg.settings.items():
        shell = setting.name if setting.is_disk_key else setting.cli_option[2:]
        patterns += [rf"\bsettings\.{re.escape(name)}\b", rf"\.get\(\s*['\"]{re.escape(name)}['\"]",
                     rf"['\"]{re.escape(setting.cli_option)}['\"]", rf"==\s*['\"]{re.escape(shell)}['\"]"]
    found = re.compile("|".join(patterns))
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in sorted((ROOT / "core/vscen").rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if found.search(line) and not line.lstrip().startswith("#")]
    assert offenders == []


def test_the_core_names_no_launch_security_type():
    """The launch-security types (and their ranking) are the launch-security plugin's, once
    (``vscen_launch_security.types``): the core spells none of them as a string."""
    from vscen_launch_security.types import TYPES

    names = "|".join(re.escape(t.name) for t in TYPES)
    found = re.compile(rf"""(['"])(?:{names})\1""")
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in sorted((ROOT / "core/vscen").rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if found.search(line)]
    assert offenders == []
    assert {"sev", "sev-es", "sev-snp", "tdx"} <= {t.name for t in TYPES}
