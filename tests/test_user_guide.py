"""docs/user-guide.md: its generated parts match the code (regenerated here: a difference fails
with the command that refreshes them), every built-in scenario and feature has its section with
its own description, and the shell completion it documents works with the installed Typer."""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from vscen import userdoc
from vscen.errors import UsageError

GUIDE = ROOT / "docs" / "user-guide.md"
BIN = Path(sys.executable).parent  # where the vscen script of this environment is


@pytest.fixture(scope="module")
def parts():
    return userdoc.sections(*userdoc.load())


def test_the_generated_parts_are_up_to_date(parts):
    text = GUIDE.read_text()
    fresh = userdoc.update(text, parts)
    if fresh != text:
        diff = "".join(list(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True),
                                                 "docs/user-guide.md", "generated", n=1))[:60])
        pytest.fail(f"docs/user-guide.md is out of date with the plugins; refresh it with:\n\n"
                    f"    {userdoc.COMMAND}\n\n{diff}", pytrace=False)


def test_every_built_in_scenario_and_feature_has_its_section(parts):
    pm, reg = userdoc.load()
    own = {n for n, i in pm.infos.items() if i.distribution == "vscen"}
    guide = " ".join(GUIDE.read_text().split())
    for kind, heading in (("scenarios", "###"), ("features", "####")):
        for name, item in reg.table(kind).items():
            if reg.plugin_of(name, kind) not in own:
                continue
            assert f"\n{heading} `{name}`\n" in GUIDE.read_text(), name
            # the plugin's own words, XML fragments shown as code
            assert " ".join(userdoc._md(item.details).split()) in guide, name
    for name, defaults in {n: s.defaults for n, s in reg.scenarios.items() if reg.plugin_of(n, "scenarios") in own}.items():
        assert f"**defaults:** {userdoc._defaults(dict(defaults))}" in guide, name


def test_generated_parts_cover_every_run_option_and_shell_command(parts):
    from vscen.cli.shell import command_help, long_option, run_params

    for name in run_params():
        if name != "scenarios":
            assert f"| `{long_option(name)}` |" in parts["options"], name
    for usage, _ in command_help():
        assert usage.split()[0] in parts["shell"]


def test_check_fails_on_a_stale_guide_and_names_the_command(tmp_path, capsys):
    stale = tmp_path / "guide.md"
    text = GUIDE.read_text()
    begin = userdoc.BEGIN.format(name="features")
    stale.write_text(text.replace(begin, begin + "\n\n#### `a-feature-that-is-gone`\n", 1))
    assert userdoc.main(["--check", str(stale)]) == 1
    assert userdoc.COMMAND in capsys.readouterr().err
    assert userdoc.main([str(stale)]) == 0
    assert stale.read_text() == text
    assert userdoc.main(["--check", str(stale)]) == 0


def test_update_refuses_a_guide_without_its_markers(parts):
    with pytest.raises(UsageError, match="END GENERATED scenarios"):
        userdoc.update("no markers here\n", parts)


def test_xml_in_plugin_prose_is_shown_as_code():
    assert userdoc._md("<cpu mode='x'> with <topology/>") == "`<cpu mode='x'>` with `<topology/>`"
    assert userdoc._md("<os><boot dev='hd'/>: <rng>/dev/urandom</rng>.") == "`<os><boot dev='hd'/>`: `<rng>/dev/urandom</rng>`."


# -- shell completion, as the guide documents it ------------------------------------------------


def completion_env(tmp_path) -> dict:
    env = dict(os.environ, HOME=str(tmp_path), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", None)
    return env


@pytest.mark.skipif(not shutil.which("bash"), reason="no bash here")
def test_bash_completion_completes_commands_and_choices(tmp_path):
    script = ('source <(_VSCEN_COMPLETE=source_bash vscen)\n'
              'COMP_WORDS=(vscen li); COMP_CWORD=1; _vscen_completion vscen; echo "${COMPREPLY[@]}"\n'
              'COMP_WORDS=(vscen list ""); COMP_CWORD=2; _vscen_completion vscen; echo "${COMPREPLY[@]}"\n'
              'COMP_WORDS=(vscen run --dry); COMP_CWORD=2; _vscen_completion vscen; echo "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=completion_env(tmp_path), timeout=120)
    assert proc.stdout.splitlines() == ["list", "scenarios features validators host-actions os", "--dry-run"], proc.stderr


@pytest.mark.skipif(not shutil.which("bash"), reason="no bash here")
def test_show_and_install_completion_from_bash(tmp_path):
    env = completion_env(tmp_path)
    shown = subprocess.run(["bash", "-c", "vscen --show-completion"], capture_output=True, text=True, env=env, timeout=120)
    assert "complete -o default -F _vscen_completion vscen" in shown.stdout, shown.stderr
    installed = subprocess.run(["bash", "-c", "vscen --install-completion"], capture_output=True, text=True, env=env, timeout=120)
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "vscen.sh"
    assert script.read_text().strip() == shown.stdout.strip()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()


@pytest.mark.parametrize("shell,head,complete_env", [
    ("zsh", "#compdef vscen", {"_VSCEN_COMPLETE": "complete_zsh"}),
    ("fish", "complete --command vscen", {"_VSCEN_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}),
])
def test_zsh_and_fish_scripts_and_answers(tmp_path, shell, head, complete_env):
    env = completion_env(tmp_path)
    vscen = str(BIN / "vscen")
    source = subprocess.run([vscen], capture_output=True, text=True, timeout=120,
                            env=env | {"_VSCEN_COMPLETE": f"source_{shell}"})
    assert source.stdout.lstrip().startswith(head), source.stderr
    answer = subprocess.run([vscen], capture_output=True, text=True, timeout=120,
                            env=env | complete_env | {"_TYPER_COMPLETE_ARGS": "vscen she"})
    assert "shell" in answer.stdout and "run" not in answer.stdout, answer.stderr
