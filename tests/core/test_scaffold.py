"""``vscen plugin new``: the project it writes, the names it refuses, and the generated project
passing its own tests once pip-installed into a fresh virtual environment beside vscen.

The generated plugins bundle vscen's built-in features, as a real plugin would: these tests
use the built-in plugins where a generated project needs them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import pytest
from coresupport import cli_env, error_lines, vscen, write_dist

from vscen.errors import ExistsError, UsageError
from vscen.scaffold import check_name, create

TESTS = Path(__file__).resolve().parents[1]


def third_party():
    """tests/test_third_party.py (its wheelhouse and Venv helpers), loaded by path."""
    name = "_vscen_tests_third_party"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "test_third_party.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def import_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, expected", [
    ("Build-Box", "is not allowed"), ("build_box", "is not allowed"), ("3d", "is not allowed"),
    ("box-", "is not allowed"), ("a--b", "is not allowed"), ("", "is not allowed"), ("x" * 41, "is not allowed"),
    ("vscen-box", "leave out the 'vscen-' prefix"), ("a b", "is not allowed"), ("../x", "is not allowed"),
])
def test_bad_names_are_refused_saying_what_is_allowed(name, expected):
    with pytest.raises(UsageError) as err:
        check_name(name)
    assert str(err.value).startswith(f"name: '{name}'") and expected in str(err.value)
    if expected == "is not allowed":
        assert "lowercase letters, digits and single '-', starting with a letter" in str(err.value)


@pytest.mark.parametrize("name", ["box", "build-box", "k8s-node-2"])
def test_good_names(name):
    assert check_name(name) == name


def test_a_scenario_project(tmp_path):
    project, written, note = create("kit-box", "scenario", tmp_path)
    assert note == "" and project == tmp_path / "vscen-kit-box"
    assert sorted(str(p.relative_to(project)) for p in written) == [
        "README.md", "pyproject.toml", "tests/golden/kit-box@amd-sev.xml", "tests/test_kit_box.py",
        "vscen_kit_box/__init__.py"]
    meta = tomllib.loads((project / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "vscen-kit-box"
    assert meta["project"]["entry-points"]["vscen"] == {"kit-box": "vscen_kit_box"}
    assert meta["project"]["dependencies"] == ["vscen>=0.1"]
    assert meta["project"]["optional-dependencies"]["test"] == ["pytest>=7"]
    assert meta["tool"]["setuptools"]["packages"] == ["vscen_kit_box"]
    readme = (project / "README.md").read_text()
    assert "pip install -e '.[test]'" in readme and "--vscen-regen" in readme and "VSCEN_DISABLED_PLUGINS=kit-box" in readme

    module = import_path("vscen_kit_box", project / "vscen_kit_box" / "__init__.py")
    from vscen.testing import load_plugins, render

    loaded = load_plugins([module])
    assert loaded.warnings == []
    scenario = loaded.registry.scenarios["kit-box"]
    assert loaded.registry.plugin_of("kit-box") == "vscen_kit_box"
    assert scenario.arches == ("x86_64",) and scenario.validators == ("kvm",)
    assert [c.name for c in scenario.conflicts] == ["graphics"]
    # the golden file is what the test kit renders for the generated test
    golden = (project / "tests/golden/kit-box@amd-sev.xml").read_text()
    assert golden == render("kit-box", plugins=[module], host="amd-sev").xml
    assert "<description>kit-box guest kit-box, made by vscen-kit-box</description>" in golden
    compile((project / "tests/test_kit_box.py").read_text(), "test_kit_box.py", "exec")


def test_a_feature_project(tmp_path):
    project, written, note = create("kit-panic", "feature", tmp_path / "new" / "dir")
    assert note == "" and project.is_dir()
    module = import_path("vscen_kit_panic", project / "vscen_kit_panic" / "__init__.py")
    assert (module.FEATURE.name, module.FEATURE.implies, module.FEATURE.arches) == ("kit-panic", ("acpi",), ("x86_64",))
    from vscen.testing import render

    result = render([], features=["kit-panic"], plugins=[module], host="amd-sev")
    assert '<panic model="isa"/>' in result.xml
    assert (project / "tests/golden/kit-panic@amd-sev.xml").read_text() == result.xml
    assert "vscen_register_features" in (project / "vscen_kit_panic/__init__.py").read_text()
    assert "vscen run SCENARIO --feature +kit-panic" in (project / "README.md").read_text()


def test_no_golden_file_is_said_with_what_to_do(tmp_path, monkeypatch):
    import vscen.scaffold

    def fail(*_args):
        raise RuntimeError("no libvirt schema")

    monkeypatch.setattr(vscen.scaffold, "render_golden", fail)
    project, written, note = create("kit-box", "scenario", tmp_path)
    assert note == ("no golden file written (RuntimeError: no libvirt schema); run 'pytest --vscen-regen' "
                    "once the plugin is installed, and review the file")
    assert not (project / "tests/golden/kit-box@amd-sev.xml").exists() and len(written) == 4


def test_an_existing_directory_needs_force_and_keeps_other_files(tmp_path):
    project, _, _ = create("kit-box", "scenario", tmp_path)
    (project / "vscen_kit_box" / "__init__.py").write_text("# my work\n")
    (project / "NOTES").write_text("mine\n")
    with pytest.raises(ExistsError) as err:
        create("kit-box", "scenario", tmp_path)
    assert str(err.value) == f"{project} exists already; choose another --dir, or --force to write the files over it"
    assert (project / "vscen_kit_box" / "__init__.py").read_text() == "# my work\n"
    create("kit-box", "feature", tmp_path, force=True)
    assert "FEATURE = Feature(" in (project / "vscen_kit_box" / "__init__.py").read_text()
    assert (project / "NOTES").read_text() == "mine\n"


def test_the_command_line(tmp_path):
    env = cli_env(disable_builtins=False)
    proc = vscen("plugin", "new", "kit-box", "--dir", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr
    project = tmp_path / "vscen-kit-box"
    assert proc.stdout.splitlines()[0] == f"created {project}/: a scenario plugin 'kit-box'"
    assert "  tests/golden/kit-box@amd-sev.xml" in proc.stdout.splitlines()
    assert proc.stdout.endswith(f"next:\n  cd {project}\n  pip install -e '.[test]'\n  pytest\n")
    proc = vscen("plugin", "new", "kit-box", "--dir", str(tmp_path), env=env)
    assert proc.returncode == 6 and error_lines(proc.stderr) == [
        f"error: {project} exists already; choose another --dir, or --force to write the files over it"]
    proc = vscen("plugin", "new", "kit-box", "--dir", str(tmp_path), "--force", "--kind", "feature", env=env)
    assert proc.returncode == 0 and "a feature plugin 'kit-box'" in proc.stdout
    proc = vscen("plugin", "new", "kit-box", "--kind", "validator", env=env)
    assert proc.returncode == 2 and "validator" in proc.stderr
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = vscen("plugin", "new", "kit-x", "--dir", str(afile), env=env)
    assert proc.returncode == 2 and error_lines(proc.stderr) == [f"error: --dir: '{afile}' is not a directory"]
    proc = vscen("plugin", "new", "Kit", env=env, cwd=tmp_path)
    assert proc.returncode == 2 and error_lines(proc.stderr)[0].startswith("error: name: 'Kit' is not allowed")


@pytest.mark.parametrize("name, why", [
    ("storage", "a plugin 'storage' is installed already (vscen 0.1.0, loaded)"),
    ("cpu-passthrough", "feature 'cpu-passthrough' is registered already by plugin 'cpu'"),
])
def test_names_taken_by_built_in_plugins(name, why, tmp_path):
    with pytest.raises(UsageError) as err:
        create(name, "scenario", tmp_path)
    assert str(err.value) == f"name: '{name}' is taken: {why}; choose another name"
    assert not [p for p in tmp_path.iterdir() if p.name not in ("config", "data", "cache")]  # conftest's XDG dirs


def test_names_taken_by_installed_distributions(tmp_path):
    site = tmp_path / "site"
    code = ("from vscen import Feature, hookimpl\n\n@hookimpl\ndef vscen_register_features(register):\n"
            "    register(Feature(name='kit-feature', summary='f'))\n")
    write_dist(site, "vscen-kit-taken", "0.4", "kit-taken", "vscen_kit_taken", code)
    write_dist(site, "vscen-kit-dist", "0.5", "other-name", "vscen_kit_dist", "")
    env = cli_env(site)
    for name, why in [("kit-taken", "a plugin 'kit-taken' is installed already (vscen-kit-taken 0.4, loaded)"),
                      ("kit-feature", "feature 'kit-feature' is registered already by plugin 'kit-taken'"),
                      ("kit-dist", "the distribution vscen-kit-dist is installed already")]:
        proc = vscen("plugin", "new", name, "--dir", str(tmp_path / "out"), env=env)
        assert proc.returncode == 2, proc.stderr
        assert error_lines(proc.stderr) == [f"error: name: '{name}' is taken: {why}; choose another name"]
    assert not (tmp_path / "out").exists()


def test_generated_projects_pass_their_own_tests_once_installed(tmp_path_factory, tmp_path):
    """Both kinds, pip-installed (editable, as their README says) into a fresh venv with vscen."""
    tp = third_party()
    venv = tp.Venv(tmp_path / "venv", tp.wheelhouse(tmp_path_factory))
    projects = {}
    for name, kind in (("kit-box", "scenario"), ("kit-panic", "feature")):
        proc = venv.vscen("plugin", "new", name, "--kind", kind, "--dir", tmp_path / "src")
        assert proc.returncode == 0, proc.stderr
        projects[name] = tmp_path / "src" / f"vscen-{name}"
    venv.pip("install", "-e", f"{projects['kit-box']}[test]", "-e", projects["kit-panic"])
    plugins = venv.plugins()
    assert (plugins["kit-box"]["distribution"], plugins["kit-box"]["status"]) == ("vscen-kit-box", "loaded")
    assert plugins["kit-panic"]["registers"] == {"features": ["kit-panic"]}
    for name, passed in (("kit-box", 6), ("kit-panic", 4)):
        proc = venv.pytest(cwd=projects[name])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{passed} passed" in proc.stdout
    proc = venv.vscen("run", "kit-box", "--feature", "+kit-panic", "--dry-run", "--connect", "test:///default")
    assert proc.returncode == 0, proc.stderr
    assert '<panic model="isa"/>' in proc.stdout and "made by vscen-kit-box" in proc.stdout
    # a changed plugin fails its golden test until regenerated
    init = projects["kit-box"] / "vscen_kit_box" / "__init__.py"
    init.write_text(init.read_text().replace('"memory": "2GiB"', '"memory": "3GiB"'))
    proc = venv.pytest(cwd=projects["kit-box"])
    assert proc.returncode == 1 and "kit-box@amd-sev.xml differs" in proc.stdout
    assert '+  <memory unit="KiB">3145728</memory>' in proc.stdout
    assert venv.pytest("--vscen-regen", cwd=projects["kit-box"]).returncode == 0
    assert venv.pytest(cwd=projects["kit-box"]).returncode == 0
    assert json.loads(venv.vscen("list", "--json").stdout)  # still lists


def test_the_module_is_light():
    """vscen plugin new is a CLI command: the scaffold imports nothing heavy until it runs."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", "import sys, vscen.scaffold; print(sorted(m for m in "
                          "('lxml', 'libvirt', 'pytest', 'vscen.pipeline') if m in sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
