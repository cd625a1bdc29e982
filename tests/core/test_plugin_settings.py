"""What a plugin declares besides XML: its settings (an option of ``vscen run``, a config key, a
shell key, a docs row, the error messages) and its commands, with no line of the core naming
them; and what is refused at registration."""

from __future__ import annotations

import json
import textwrap

import pytest
from coresupport import cli_env, error_lines, load, vscen

from vscen import Command, Feature, Scenario, Setting, hookimpl
from vscen.declared import parse_declared
from vscen.errors import UsageError
from vscen.settings import build_settings

#: a plugin as a third party writes it: a setting, a disk key, a command, and a feature using them
KNOBS = '''
import typer

from vscen import Command, Feature, Scenario, Setting, hookimpl


def _port(text):
    if not text.isdigit() or not 1024 <= int(text) <= 65535:
        raise ValueError("is not a port from 1024 to 65535")
    return int(text)


def _even(value, disk):
    if value and disk.size % 2:
        raise ValueError("a mirrored disk needs an even size")


def _apply(domain, ctx):
    s = ctx.settings
    mirrored = [d.mirror for d in s.disks]
    domain.ensure("description").text(f"port={s.debug_port} colour={s.colour} tags={','.join(s.tag)} "
                                      f"gdb={s.gdb} mirrored={mirrored}")


app = typer.Typer(no_args_is_help=True, help="Knob tools.")


@app.command()
def ping(name: str):
    typer.echo(f"pong {name}")


@hookimpl
def vscen_register_settings(register):
    register(Setting(name="debug_port", parse=_port, example="1234", metavar="PORT", default=0,
                     help="Open the gdb stub on this host port."))
    register(Setting(name="colour", choices=("red", "green"), default="red", help="The guest's colour."))
    register(Setting(name="tag", repeatable=True, help="A tag. Repeatable."))
    register(Setting(name="gdb", flag=True, default=False, help="Wait for gdb."))
    register(Setting(name="disk.mirror", flag=True, default=False, check=_even, help="Mirror the disk."))


@hookimpl
def vscen_register_features(register):
    register(Feature(name="knob", summary="uses the knobs", apply=_apply))


@hookimpl
def vscen_register_scenarios(register):
    register(Scenario(name="knob-box", summary="a box with knobs", features=("knob",)))


@hookimpl
def vscen_register_commands(register):
    register(Command(name="knob", summary="Knob tools.", app=app))
'''


@pytest.fixture
def knobs(tmp_path):
    """The environment of a command line with the knobs plugin (VSCEN_PLUGIN_PATH) and no built-ins."""
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "vscen_knobs.py").write_text(KNOBS)
    return cli_env(VSCEN_PLUGIN_PATH=str(plugin_dir))


def description(xml: str) -> str:
    from lxml import etree

    return etree.fromstring(xml.encode()).findtext("description")


RUN = ("run", "knob-box", "--dry-run", "--connect", "test:///default", "--disk", "none")


def test_a_plugins_setting_is_an_option_of_vscen_run(knobs):
    help_ = vscen("run", "--help", env={**knobs, "COLUMNS": "200"}).stdout
    for option in ("--debug-port PORT", "--colour [red|green]", "--tag", "--gdb / --no-gdb", "--disk-mirror"):
        assert option in help_, option
    assert "[plugin vscen_knobs]" in help_
    proc = vscen(*RUN, "--debug-port", "4444", "--colour", "green", "--tag", "a", "--tag", "b", "--gdb", env=knobs)
    assert proc.returncode == 0, proc.stderr
    assert description(proc.stdout) == "port=4444 colour=green tags=a,b gdb=True mirrored=[]"


def test_defaults_config_keys_and_disk_keys(knobs, tmp_path):
    proc = vscen(*RUN, env=knobs)
    assert description(proc.stdout) == "port=0 colour=red tags= gdb=False mirrored=[]"
    config = tmp_path / "knobs.toml"
    config.write_text('debug_port = "2000"\ncolour = "green"\ntag = ["x"]\ngdb = true\n[disk]\nmirror = true\n')
    proc = vscen("run", "knob-box", "--dry-run", "--connect", "test:///default", "--config", str(config),
                 "--disk", "size=2G", "--disk", "size=4G,mirror=no", env=knobs)
    assert proc.returncode == 0, proc.stderr
    assert description(proc.stdout) == "port=2000 colour=green tags=x gdb=True mirrored=[True, False]"
    # the command line wins over the config file, --no-FLAG included
    proc = vscen("run", "knob-box", "--dry-run", "--connect", "test:///default", "--config", str(config),
                 "--no-gdb", "--colour", "red", "--disk", "none", env=knobs)
    assert description(proc.stdout) == "port=2000 colour=red tags=x gdb=False mirrored=[]"


@pytest.mark.parametrize("args,message", [
    (("--debug-port", "80"), "error: debug_port: '80' is not a port from 1024 to 65535"),
    (("--colour", "blue"), "error: colour: 'blue' is not one of red, green"),
    (("--disk", "size=3B,mirror=yes"), "error: disk.mirror: a mirrored disk needs an even size"),
    (("--disk", "size=2G,mirror=perhaps"), "error: disk.mirror: 'perhaps' is not yes or no"),
])
def test_a_bad_value_is_one_line_naming_the_setting(knobs, args, message):
    proc = vscen("run", "knob-box", "--dry-run", "--connect", "test:///default", *args, env=knobs)
    assert proc.returncode == 2 and error_lines(proc.stderr) == [message], proc.stderr


def test_a_bad_config_value_names_the_key(knobs, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('colour = ["red"]\n')
    proc = vscen(*RUN, "--config", str(config), env=knobs)
    assert proc.returncode == 2 and error_lines(proc.stderr) == ["error: colour: ['red'] is not a value"]


def test_a_disabled_plugin_takes_its_options_and_commands_along(knobs):
    assert "knob" in vscen("--help", env=knobs).stdout
    assert vscen("knob", "ping", "x", env=knobs).stdout == "pong x\n"
    off = {**knobs, "VSCEN_DISABLED_PLUGINS": knobs["VSCEN_DISABLED_PLUGINS"] + ",vscen_knobs"}
    assert "--debug-port" not in vscen("run", "--help", env=off).stdout
    assert "knob" not in vscen("--help", env=off).stdout
    proc = vscen("knob", "ping", "x", env=off)
    assert proc.returncode == 2 and "No such command 'knob'" in proc.stderr


def test_a_config_key_of_no_loaded_plugin_is_unknown(knobs, tmp_path):
    off = {**knobs, "VSCEN_DISABLED_PLUGINS": knobs["VSCEN_DISABLED_PLUGINS"] + ",vscen_knobs"}
    config = tmp_path / "c.toml"
    config.write_text('colour = "red"\n')
    proc = vscen("run", "core-x", "--dry-run", "--config", str(config), env=off)
    assert proc.returncode == 2


def test_the_built_in_plugins_options_follow_their_plugins():
    env = cli_env(disable_builtins=False, COLUMNS="200")
    assert "--hugepages" in vscen("run", "--help", env=env).stdout
    assert "snapshot" in vscen("--help", env=env).stdout
    off = {**env, "VSCEN_DISABLED_PLUGINS": "hugepages,os-testing"}
    assert "--hugepages" not in vscen("run", "--help", env=off).stdout
    assert "snapshot" not in vscen("--help", env=off).stdout


# -- the parsing rules, on their own --------------------------------------------------------------

def test_parse_declared():
    flag = Setting(name="gdb", flag=True, default=False, help="h")
    assert [parse_declared(flag, v) for v in (None, True, "yes", "no", "off", "1")] == [False, True, True, False, False, True]
    listed = Setting(name="tag", repeatable=True, help="h", parse=str.upper)
    assert parse_declared(listed, None) == () and parse_declared(listed, ["a", "b"]) == ("A", "B")
    assert parse_declared(listed, "c") == ("C",)
    for setting, raw, message in (
        (flag, "maybe", "gdb: 'maybe' is not yes or no"),
        (flag, 3, "gdb: 3 is not yes or no"),
        (listed, [{"a": 1}], "tag: {'a': 1} is not a value"),
        (Setting(name="n", help="h"), {"deep": [[[]]]}, "n: {'deep': [[[]]]} is not a value"),
        (Setting(name="n", help="h"), True, "n: True is not a value"),
        (Setting(name="n", help="h", parse=int), "x", "n: 'x' invalid literal for int() with base 10: 'x'"),
    ):
        with pytest.raises(UsageError) as exc:
            parse_declared(setting, raw)
        assert str(exc.value) == message


def test_settings_reach_ctx_settings_and_unknown_names_say_so():
    declared = {"colour": Setting(name="colour", choices=("red", "green"), default="red", help="h")}
    s, _ = build_settings([], [("default", {"name": "vm"}), ("option", {"colour": "green"})], None, declared)
    assert s.colour == "green" and s.get("colour") == "green" and s.source("colour") == "option"
    assert s.get("hugepages", "auto") == "auto"
    with pytest.raises(AttributeError, match="no loaded plugin declares it"):
        s.hugepages  # noqa: B018
    with pytest.raises(UsageError, match="settings: unknown key 'colour'"):
        build_settings([], [("default", {"name": "vm"}), ("option", {"colour": "green"})])


# -- what registration refuses --------------------------------------------------------------------

class SettingsPlug:
    def __init__(self, *settings):
        self.settings = settings

    @hookimpl
    def vscen_register_settings(self, register):
        for s in self.settings:
            register(s)


@pytest.mark.parametrize("setting,reason", [
    (Setting(name="memory", help="h"), "setting 'memory' (--memory) is one of vscen's own settings"),
    (Setting(name="mem", option="--connect", help="h"), "setting 'mem' (--connect) is one of vscen's own settings"),
    (Setting(name="Bad-Name", help="h"), "setting 'Bad-Name': a name is lower-case letters"),
    (Setting(name="x", flag=True, repeatable=True, help="h"), "setting 'x': a flag is neither repeatable nor a choice"),
])
def test_a_bad_setting_declaration_breaks_its_plugin_only(setting, reason):
    good = SettingsPlug(Setting(name="fine", help="h"))
    pm, reg = load(("bad", SettingsPlug(setting)), ("good", good))
    assert pm.infos["bad"].status == "broken" and pm.infos["bad"].reason.startswith(reason)
    assert list(reg.settings) == ["fine"] and reg.plugin_of("fine", "settings") == "good"


def test_a_hook_returning_objects_instead_of_registering_them_is_named():
    class Returns:
        @hookimpl
        def vscen_register_features(self, register):
            return [Feature(name="lost", summary="never registered")]

    class Fine:
        @hookimpl
        def vscen_register_scenarios(self, register):
            register(Scenario(name="ok-box", summary="fine"))

    pm, reg = load(("returns", Returns()), ("fine", Fine()))
    assert pm.infos["returns"].status == "broken"
    assert pm.infos["returns"].reason.startswith("vscen_register_features returned [Feature(")
    assert "instead of calling register(...)" in pm.infos["returns"].reason
    assert "lost" not in reg.features and "ok-box" in reg.scenarios


def test_a_command_and_a_setting_are_listed_with_their_plugin(knobs):
    infos = {i["name"]: i for i in json.loads(vscen("plugins", "--json", env=knobs).stdout)}
    registers = infos["vscen_knobs"]["registers"]
    assert registers["settings"] == ["debug_port", "colour", "tag", "gdb", "disk.mirror"]
    assert registers["commands"] == ["knob"]
    assert Command(name="k", summary="s", app="m:a").app == "m:a"


def test_the_shell_offers_a_plugins_settings(knobs, tmp_path):
    script = textwrap.dedent("""\
        scenario knob-box
        colour green
        colour blue
        debug-port 2222
        tag a
        show
        quit
        """)
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "vscen.cli", "shell", "--connect", "test:///default"],
                          input=script, capture_output=True, text=True, env=knobs, timeout=120)
    assert "error: colour: 'blue' is not one of red, green" in proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line and not line.startswith(("vscen>", " "))}
    assert rows["colour"].split()[1] == "green" and rows["debug-port"].split()[1] == "2222"
    assert rows["tag"].split()[1] == "a"


def test_a_command_that_cannot_be_loaded_is_left_out_with_a_warning(tmp_path):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "vscen_badcmd.py").write_text(
        "from vscen import Command, Scenario, hookimpl\n\n"
        "@hookimpl\ndef vscen_register_commands(register):\n"
        "    register(Command(name='gone', summary='s', app='vscen_no_such_module:app'))\n\n"
        "@hookimpl\ndef vscen_register_scenarios(register):\n"
        "    register(Scenario(name='still-here', summary='s'))\n")
    env = cli_env(VSCEN_PLUGIN_PATH=str(plugin_dir))
    proc = vscen("list", env=env)
    assert proc.returncode == 0 and "still-here" in proc.stdout
    assert ("warning: plugin 'vscen_badcmd' (local: " in proc.stderr
            and "command 'gone' cannot be loaded: ModuleNotFoundError" in proc.stderr)
    assert "gone" not in vscen("--help", env=env).stdout


@pytest.mark.parametrize("name,reason", [("run", "command 'run' is one of vscen's own commands"),
                                         ("Bad Name", "command 'Bad Name': a name is lower-case")])
def test_a_command_may_not_take_a_core_name(name, reason):
    class Commands:
        @hookimpl
        def vscen_register_commands(self, register):
            register(Command(name=name, summary="s", app="m:a"))

    pm, reg = load(("cmds", Commands()))
    assert pm.infos["cmds"].status == "broken" and pm.infos["cmds"].reason.startswith(reason)
    assert reg.commands == {}


def test_a_check_is_called_for_given_values_only():
    seen = []
    declared = {"colour": Setting(name="colour", help="The colour.", check=lambda value, _s: seen.append(value)),
                "tag": Setting(name="tag", repeatable=True, help="A tag.", check=lambda value, _s: seen.append(value))}
    base = [("default", {"name": "g"})]
    build_settings([], base, None, declared)
    assert seen == []  # nobody gave either: nothing to check (and no plugin imported for it)
    build_settings([], [*base, ("option", {"colour": "red", "tag": ["a"]})], None, declared)
    assert seen == ["red", ("a",)]
