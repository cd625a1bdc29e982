"""``vscen shell``: choose scenarios, features and settings interactively, with tab completion;
see the XML, the plan, the rules and the host; run it.

The shell is a front end to the command line. Its settings are the options of ``vscen run``,
every one of them (:func:`keys`, :data:`COMMAND_PARAMS`; tests/test_shell.py checks that none
is missing), and ``xml``, ``plan``, ``explain``, ``run`` and ``host`` run the real commands in
this process with the equivalent arguments (``command`` prints them), so the shell does exactly
what ``vscen run`` does. Each value is checked as it is entered, with vscen.settings' own
parsers, so a bad one gets the command line's one-line error and the previous value stays.

Only the Typer command and the tables are defined at import: ``cmd`` and ``readline`` are
imported when the shell starts (:func:`shell_class` mixes ``cmd.Cmd`` into :class:`Session`),
and the pipeline when a command needs it, so ``vscen --help`` stays lean.
"""

from __future__ import annotations

import os
import string
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

PROMPT = "vscen> "


@dataclass(frozen=True)
class Key:
    """One shell setting."""

    name: str
    #: the ``vscen run`` parameter it maps to; "" for a disk key, folded into each --disk spec
    param: str
    #: value (replaced), list (appended to), flag (yes/no), names (the scenarios, replaced)
    kind: str = "value"
    #: the key vscen.settings checks it as ("" for none)
    setting: str = ""
    #: what completes its values: "choices:KEY" (vscen.settings.CHOICES), path, dir, scenario,
    #: feature, boot, network, disk, filesystem, machine, connect; "" for nothing
    values: str = ""
    #: help for keys with no ``vscen run`` option of their own (the others use the option's)
    help: str = ""
    #: the allowed values of a plugin's setting
    choices: tuple[str, ...] = ()
    #: a plugin's ``KEY=VALUE,...`` setting: its keys and what completes them (vscen.Setting.spec)
    spec: Any = None


def _disk_key(field: str, values: str | None = None, help: str = "") -> Key:
    values = f"choices:disk.{field}" if values is None else values
    return Key(f"disk.{field}", "", setting=f"disk.{field}", values=values,
               help=help or f"The disks' {field.replace('_', ' ')} (--disk {field}=...).")


#: the core's shell settings, in the order the status line and ``show`` list them; the
#: plugins' follow (:func:`keys`)
_HEAD: tuple[Key, ...] = (
    Key("scenario", "scenarios", "names", values="scenario"),
    Key("feature", "feature", "list", values="feature"),
    Key("name", "name", setting="name"),
    Key("memory", "memory", setting="memory"),
    Key("vcpu", "vcpu", setting="vcpu"),
    Key("machine", "machine", setting="machine", values="machine"),
    Key("boot", "boot", setting="boot", values="boot"),
    Key("arch", "arch", setting="arch", values="choices:arch"),
    Key("virt-type", "virt_type", setting="virt_type", values="choices:virt_type"),
    Key("firmware", "firmware", setting="firmware", values="choices:firmware"),
    Key("cdrom", "cdrom", setting="cdrom", values="path"),
    Key("network", "network", setting="network", values="network"),
    Key("graphics", "graphics", setting="graphics", values="choices:graphics"),
    Key("disk", "disk", "list", values="disk"),
    _disk_key("path", "path", "The disk image (default: /var/lib/libvirt/images/NAME.FORMAT): --disk path=..."),
    Key("disk.size", "disk_size", setting="disk.size"),
    _disk_key("format"),
    _disk_key("bus"),
    _disk_key("cache"),
    _disk_key("io"),
    _disk_key("discard"),
    _disk_key("preallocation"),
    _disk_key("cluster_size", "", "The qcow2 cluster size, a power of two from 512B to 2MiB (--disk cluster_size=...)."),
    _disk_key("lazy_refcounts"),
    _disk_key("backing", "path", "A base image: the disk becomes a copy-on-write qcow2 overlay on it (--disk backing=...)."),
    Key("transient", "transient", "flag", setting="transient"),
    # the plugins' settings come here (plugin_keys)
)
#: the shell keys after the plugins' settings
_TAIL: tuple[Key, ...] = (
    Key("force", "force", "flag"),
    Key("start", "start", "flag"),
    Key("customise", "set_", "list"),
    Key("config", "config", values="path"),
    Key("host-facts", "host_facts", "list", values="path"),
    Key("connect", "connect", values="connect"),
    Key("output", "output", values="dir"),
)


@lru_cache(maxsize=1)
def keys() -> tuple[Key, ...]:
    """Every shell setting: the core's, then one per plugin setting (``vscen.Setting``), then
    the run flags and where things come from."""
    from vscen.cli.common import loaded

    _, reg = loaded()
    return _HEAD + tuple(plugin_key(s) for _, s in sorted(reg.settings.items())) + _TAIL


def key_map() -> dict[str, Key]:
    return {k.name: k for k in keys()}


def plugin_key(setting) -> Key:
    """The shell key of a plugin's setting: named as its ``vscen run`` option (``disk.KEY``
    for a disk key), valued as the declaration says."""
    from vscen.cli.common import setting_param

    name = setting.name if setting.is_disk_key else setting.cli_option[2:]
    kind = "flag" if setting.flag else "list" if setting.repeatable else "value"
    return Key(name, setting_param(setting), kind, setting=setting.name, choices=setting.choices,
               values={"FILE": "path", "DIR": "dir"}.get(setting.metavar, ""), spec=dict(setting.spec) or None)
#: ``vscen run`` parameters that are shell commands rather than settings
COMMAND_PARAMS = {"dry_run": "plan", "explain": "explain", "json_": "plan --json, run --json"}
#: what the shell offers for values that have no fixed choices
SUGGEST = {
    "machine": ("q35", "pc", "virt"),
    "connect": ("qemu:///system", "qemu:///session", "test:///default", "qemu+ssh://"),
}
RUN_FLAGS = ("--start", "--force", "--json", "--yes")
_YES = {"yes": True, "y": True, "on": True, "true": True, "1": True,
        "no": False, "n": False, "off": False, "false": False, "0": False}


def start(scenarios: list[str] | None, connect: str | None) -> None:
    """Run the shell (``vscen shell``, whose options cli.py declares)."""
    session = shell_class()()
    if scenarios:
        session.assign("scenario", " ".join(scenarios))
    if connect:
        session.assign("connect", connect)
    session.cmdloop()


def shell_class():
    """The interactive shell: :class:`Session` with ``cmd.Cmd`` mixed in (imported only here)."""
    import cmd

    class VscenShell(Session, cmd.Cmd):
        pass

    return VscenShell


@lru_cache(maxsize=1)
def run_params() -> dict[str, Any]:
    """The parameters of ``vscen run``, by name (Typer's own Click parameters)."""
    import typer.main

    from vscen.cli import app

    return {p.name: p for p in typer.main.get_command(app).commands["run"].params}


def long_option(param: str) -> str:
    """``--disk-size`` for ``disk_size``: the option ``vscen run`` spells it with."""
    opts = run_params()[param].opts
    return next((o for o in opts if o.startswith("--")), opts[0])


def key_help(key: Key) -> str:
    if key.help:
        return key.help
    return getattr(run_params()[key.param], "help", "") or ""


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _error(exc) -> None:
    """A VscenError as ``vscen`` prints it: one line, or a summary and its problems."""
    from vscen.cli.common import STATE

    if STATE["debug"]:
        import traceback

        traceback.print_exception(exc)
    if getattr(exc, "summary", "") and len(exc.problems) > 1:
        _err(f"error: {exc.summary} ({len(exc.problems)} problems):")
        for problem in exc.problems:
            _err(f"  - {problem}")
    else:
        _err(f"error: {exc}")


def _usage(message: str):
    from vscen.errors import UsageError

    return UsageError(message)


def _split_features(tokens) -> tuple[list[str], list[str]]:
    add = [t[1:] for t in tokens if t.startswith("+")]
    remove = [t[1:] for t in tokens if t.startswith("-")]
    return add, remove


def _abspath(value: str) -> str:
    return os.path.abspath(os.path.expanduser(value))


def _size(kib: int) -> str:
    for unit, scale in (("TiB", 1 << 30), ("GiB", 1 << 20), ("MiB", 1 << 10)):
        if kib >= scale:
            return f"{kib / scale:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{kib} KiB"


# ------------------------------------------------------------------------------------------
# completion helpers (pure functions)
# ------------------------------------------------------------------------------------------


def complete_path(text: str, dirs_only: bool = False) -> list[str]:
    """Paths starting with *text* (``~`` kept as typed); directories end in ``/``, files in a
    space (the word is done)."""
    import glob

    expanded = os.path.expanduser(text)
    out = []
    for path in sorted(glob.glob(glob.escape(expanded) + "*")):
        shown = text + path[len(expanded):]
        if os.path.isdir(path):
            out.append(shown + "/")
        elif not dirs_only:
            out.append(shown + " ")
    return out


def complete_spec(text: str, keys: dict[str, Any], bare: tuple[str, ...] = ()) -> list[str]:
    """Complete the last ``KEY=VALUE`` of a comma-separated spec: *keys* maps each key to its
    values (a tuple of choices, "path", "dir" or None); *bare* are words allowed alone first."""
    head, comma, seg = text.rpartition(",")
    prefix = head + comma
    if "=" not in seg:
        words = [f"{k}=" for k in keys] + ([f"{b} " for b in bare] if not prefix else [])
        return [prefix + w for w in words if w.startswith(seg)]
    key, _, value = seg.partition("=")
    values = keys.get(key)
    if values in ("path", "dir"):
        found = complete_path(value, dirs_only=values == "dir")
        return [f"{prefix}{key}={p.rstrip(' ')}" for p in found]
    return [f"{prefix}{key}={v}" for v in values or () if v.startswith(value)]


# ------------------------------------------------------------------------------------------
# the shell
# ------------------------------------------------------------------------------------------


class Session:
    """The shell's choices and commands; ``cmd.Cmd`` provides the loop (see :func:`shell_class`).

    ``values`` holds every :func:`keys` entry: a list for ``names`` and ``list`` keys, a bool
    for flags, else a string or None (not set: the default applies).
    """

    prompt = PROMPT
    identchars = string.ascii_letters + string.digits + "_-."
    greeting = ("vscen shell: choose a scenario ('scenario' lists them, Tab completes), change settings "
                "('help' lists them), then 'xml', 'plan' or 'run'. Ctrl-D or 'quit' leaves.")

    def __init__(self, *args, registry=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.values: dict[str, Any] = self.blank()
        self._registry = registry
        self._matches: list[str] = []

    @staticmethod
    def blank() -> dict[str, Any]:
        return {k.name: [] if k.kind in ("names", "list") else False if k.kind == "flag" else None for k in keys()}

    @property
    def registry(self):
        if self._registry is None:
            from vscen.cli.common import registry

            self._registry = registry()
        return self._registry

    # -- the choice as settings, and as 'vscen run' arguments ------------------------------

    def options(self, values: dict | None = None) -> dict[str, Any]:
        """The settings the choice gives, as ``vscen run`` passes its options to the pipeline."""
        values = self.values if values is None else values
        opts: dict[str, Any] = {}
        for key in keys():
            if not key.setting:
                continue
            value = values[key.name]
            if key.kind == "flag":
                value = "yes" if value else None
            elif key.kind == "list":
                value = list(value) or None
            if value is not None:
                opts[key.setting] = value
        return opts

    def argv(self) -> list[str]:
        """The arguments of the equivalent ``vscen run`` (the scenarios first)."""
        args = list(self.values["scenario"])
        # disk keys have no run option: they go into every --disk spec (the spec's own win)
        folded = ",".join(f"{k.name[5:]}={self.values[k.name]}" for k in keys()
                          if not k.param and self.values[k.name] is not None)
        specs = list(self.values["disk"])
        if folded:
            specs = [s if s.strip() == "none" else f"{folded},{s}" for s in specs] or [folded]
        for key in keys():
            if key.kind == "names" or not key.param:
                continue
            value = specs if key.name == "disk" else self.values[key.name]
            option = long_option(key.param)
            if key.kind == "flag":
                args += [option] if value else []
            elif key.kind == "list":
                for item in value:
                    args += _opt(option, item)
            elif value is not None:
                args += _opt(option, value)
        return args

    # -- checking and assigning ------------------------------------------------------------

    def key(self, name: str) -> Key:
        key = self.find_key(name)
        if key is None:
            raise _usage(f"unknown setting '{name.strip()}'{_suggest(name.strip(), [k.name for k in keys()])}")
        return key

    @staticmethod
    def find_key(name: str) -> Key | None:
        """The setting *name* names: its shell name, its run option's (disk-size, encrypt-disk,
        set, virt_type...), or None."""
        name = name.strip()
        name = "disk." + name[5:].replace("-", "_") if name.startswith("disk.") else name.replace("_", "-")
        if name in key_map():
            return key_map()[name]
        aliases = {long_option(k.param)[2:]: k for k in keys() if k.param and k.kind != "names"}
        return aliases.get(name)

    def assign(self, name: str, raw: str) -> None:
        """Set *name* to *raw* (append, for a list), checked with everything else chosen;
        raises VscenError and keeps the previous value when it is refused."""
        key = self.key(name)
        raw = raw.strip()
        new = {k: list(v) if isinstance(v, list) else v for k, v in self.values.items()}
        if key.kind == "names":
            new[key.name] = list(dict.fromkeys(raw.split()))
        elif key.name == "feature":
            tokens = new["feature"]
            for word in raw.replace(",", " ").split():
                token = word if word[0] in "+-" else f"+{word}"
                tokens = [t for t in tokens if t[1:] != token[1:]] + [token]
            new["feature"] = tokens
        elif key.kind == "list":
            item = self.check_value(key, raw)
            if item in new[key.name]:
                raise _usage(f"{key.name}: '{item}' is there already")
            new[key.name].append(item)
        else:
            new[key.name] = self.check_value(key, raw)
        notes = self.check(new)
        self.values = new
        for note in notes:
            _err(f"note: {note}")

    def unassign(self, name: str, item: str = "") -> None:
        key = self.key(name)
        new = dict(self.values)
        if key.kind in ("names", "list") and item:
            items = [i for i in self.values[key.name] if i != item and not (key.name == "feature" and i[1:] == item.lstrip("+-"))]
            if len(items) == len(self.values[key.name]):
                raise _usage(f"{key.name}: '{item}' is not set")
            new[key.name] = items
        else:
            new[key.name] = self.blank()[key.name]
        self.check(new)
        self.values = new

    def check_value(self, key: Key, value: str):
        """One value of *key*, normalised, or a UsageError with the command line's message."""
        if not value:
            raise _usage(f"{key.name}: give a value ('unset {key.name}' goes back to the default)")
        if key.kind == "flag":
            if value.lower() not in _YES:
                raise _usage(f"{key.name}: '{value}' is not yes or no")
            return _YES[value.lower()]
        if key.values in ("path", "dir"):
            value = _abspath(value)
        if key.name == "config":
            from pathlib import Path

            from vscen.settings import load_config

            load_config(Path(value), required=True)
        elif key.name == "host-facts":
            from pathlib import Path

            from vscen.host.facts import load_files

            load_files([Path(value)])
        elif key.name == "passphrase-file":
            import stat

            try:
                mode = os.stat(value).st_mode
            except OSError as exc:
                raise _usage(f"passphrase-file: cannot read {value} ({exc.strerror})") from None
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise _usage(f"passphrase-file: {value} can be read by others; chmod 600 it")
        elif key.name == "output" and os.path.exists(value) and not os.path.isdir(value):
            raise _usage(f"output: {value} exists and is not a directory")
        elif key.name == "connect" and any(c.isspace() for c in value):
            raise _usage(f"connect: '{value}' is not a libvirt URI (qemu:///system, qemu+ssh://HOST/system, test:///default)")
        elif key.name == "customise":
            _check_set(value)
        return value

    def check(self, values: dict) -> list[str]:
        """Check the whole choice as ``vscen run`` does before building: the rules, then every
        setting over the scenarios' defaults and the config files. Returns notes (the
        scenarios' clashing defaults, to decide by setting them) or raises VscenError."""
        return self.settings(values)[1]

    def settings(self, values: dict | None = None):
        """(vscen.settings.Settings, notes) of the choice, built as ``vscen run`` builds them
        (vscen.pipeline.request_settings). While the scenarios' defaults clash there are no
        settings (None) and the notes say which to set."""
        from pathlib import Path

        from vscen.errors import RulesError
        from vscen.pipeline import Request, request_settings
        from vscen.resolve import resolve

        values = self.values if values is None else values
        scenarios = list(values["scenario"])
        add, remove = _split_features(values["feature"])
        resolution = resolve(self.registry, scenarios, add, remove) if scenarios or add or remove else None
        options = self.options(values)
        if not scenarios and not add:
            options.setdefault("name", "guest")  # no scenario to name it after yet
        request = Request(scenarios=scenarios, add=add, remove=remove, options=options,
                          disks=list(values["disk"]) or None,
                          config=Path(values["config"]) if values["config"] else None)
        try:
            return request_settings(request, self.registry, resolution)[0], []
        except RulesError as exc:
            # the rules passed above: what is left are the scenarios' clashing defaults
            return None, exc.problems or [str(exc)]

    # -- what is shown above the prompt ----------------------------------------------------

    def connection(self) -> str:
        """The libvirt connection a run would use, and why."""
        if self.values["connect"]:
            return self.values["connect"]
        if self.values["host-facts"]:
            names = ", ".join(os.path.basename(p) for p in self.values["host-facts"])
            return f"test:///default (host facts {names})"
        try:
            from pathlib import Path

            from vscen.settings import config_layers

            for label, layer in reversed(config_layers(Path(self.values["config"]) if self.values["config"] else None)):
                if layer.get("connect"):
                    return f"{layer['connect']} ({label})"
        except Exception:  # a broken config file is reported by the commands that read it
            pass
        if os.environ.get("LIBVIRT_DEFAULT_URI"):
            return f"{os.environ['LIBVIRT_DEFAULT_URI']} (LIBVIRT_DEFAULT_URI)"
        return "qemu:///system (default)"

    def status(self, width: int | None = None) -> str:
        import textwrap

        v = self.values
        parts = ["scenario: " + (" ".join(v["scenario"]) or "none yet")]
        if v["feature"]:
            parts.append("features: " + " ".join(v["feature"]))
        chosen = []
        for key in keys():
            value = v[key.name]
            if key.name in ("scenario", "feature", "connect") or value in (None, [], False):
                continue
            if key.kind == "flag":
                chosen.append(key.name)
            elif key.kind == "list":
                chosen.append(f"{key.name}=" + ";".join(value))
            else:
                chosen.append(f"{key.name}={value}")
        if chosen:
            parts.append("set: " + " ".join(chosen))
        parts.append("connection: " + self.connection())
        width = width or max(40, _columns() - 1)
        return textwrap.fill(" | ".join(parts), width=width, break_long_words=False,
                             break_on_hyphens=False, subsequent_indent="  ")

    # -- the loop (cmd.Cmd's hooks) ----------------------------------------------------------

    def preloop(self) -> None:
        try:
            import readline

            # words hold '-', '+', '/', '=', ',' and ':': only whitespace separates them
            readline.set_completer_delims(" \t\n")
        except ImportError:
            pass
        self.registry  # noqa: B018 -- load the plugins (and say which are broken) before the prompt
        if self.greeting:
            print(self.greeting)
            self.greeting = ""
        print(self.status(), flush=True)

    def cmdloop(self, intro=None):
        while True:
            try:
                return super().cmdloop(intro)
            except KeyboardInterrupt:
                print("^C", flush=True)  # Ctrl-C drops the line, as in a shell; Ctrl-D leaves

    def postcmd(self, stop, line):
        if not stop:
            print(self.status(), flush=True)
        return stop

    def onecmd(self, line):
        from vscen.errors import VscenError

        try:
            return super().onecmd(line)
        except VscenError as exc:
            _error(exc)
        except KeyboardInterrupt:
            _err("error: interrupted")
        except Exception as exc:  # a bug: one line, as vscen prints it, and the shell goes on
            from vscen.cli.common import STATE

            if STATE["debug"]:
                raise
            _err(f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return False

    def emptyline(self):
        return False  # cmd's default repeats the last command: never repeat a run

    def default(self, line):
        word, _, rest = line.strip().partition(" ")
        key = self.find_key(word)
        if key is None:
            hint = _suggest(word, self.commands() + [k.name for k in keys()])
            raise _usage(f"unknown command or setting '{word}'{hint or '; help lists them'}")
        if rest.strip():
            self.assign(key.name, rest)
        else:
            self._describe(key)
        return False

    # -- completion ------------------------------------------------------------------------

    def complete(self, text, state):
        if state == 0:
            import readline

            buffer = readline.get_line_buffer()[: readline.get_endidx()]
            try:
                self._matches = self.candidates(buffer)
            except Exception:  # never let a completion error reach readline
                self._matches = []
        return self._matches[state] if state < len(self._matches) else None

    def commands(self) -> list[str]:
        return sorted(n[3:] for n in dir(self) if n.startswith("do_") and n != "do_EOF")

    def candidates(self, buffer: str) -> list[str]:
        """What Tab offers for the last word of *buffer* (the line up to the cursor)."""
        import re

        head, text = re.match(r"(.*?)(\S*)$", buffer, re.S).groups()
        words = head.split()
        if not words:
            found = [f"{n} " for n in self.commands() + [k.name for k in keys()]]
        else:
            found = self._complete_args(words[0], words[1:], text)
        return sorted({c for c in found if c.startswith(text)})

    def _complete_args(self, command: str, args: list[str], text: str) -> list[str]:
        if command in ("help", "?"):
            return [f"{n} " for n in self.commands() + [k.name for k in keys()]] if not args else []
        if command == "set":
            if not args:
                return [f"{k.name} " for k in keys()]
            command, args = args[0], args[1:]
        if command == "unset":
            if not args:
                return [f"{k.name} " for k in keys() if self.values[k.name] not in (None, [], False)]
            key = key_map().get(args[0])
            return [f"{i} " for i in self.values[key.name]] if key and key.kind in ("names", "list") and len(args) == 1 else []
        if command == "run":
            return [f"{f} " for f in RUN_FLAGS if f not in args]
        if command == "plan":
            return ["--json "] if not args else []
        if command == "host":
            return ["check ", "--json "] if not args else ["--json "] if args == ["check"] else []
        key = key_map().get(command)
        if key is None or (args and key.name not in ("scenario", "feature")):
            return []
        return self.complete_value(key, text)

    def complete_value(self, key: Key, text: str) -> list[str]:
        """Values of *key* for the word *text*."""
        from vscen.settings import CHOICES, DISK_KEYS

        kind = key.values
        if key.kind == "flag":
            return ["yes ", "no "]
        if key.choices:
            return [f"{c} " for c in key.choices]
        if key.spec:
            return complete_spec(text, key.spec)
        if kind.startswith("choices:"):
            return [f"{c} " for c in CHOICES[kind[8:]]]
        if kind in ("path", "dir"):
            return complete_path(text, dirs_only=kind == "dir")
        if kind in SUGGEST:
            return [f"{s} " if not s.endswith("//") else s for s in SUGGEST[kind]]
        if kind == "scenario":
            return [f"{s} " for s in self.registry.scenarios]
        if kind == "feature":
            features = self.registry.features
            if text[:1] in ("+", "-"):
                return [f"{text[0]}{f} " for f in features]
            if text:
                return [f"{f} " for f in features]
            # '+' what is not in yet, '-' what the current choice has
            have = self._resolved()
            return [f"+{f} " for f in features if f not in have] + [f"-{f} " for f in features if f in have]
        if kind == "boot":
            head, comma, _ = text.rpartition(",")
            return [f"{head}{comma}{c}" for c in CHOICES["boot"]]
        if kind == "network":
            return complete_spec(text, {"network": ("default",), "bridge": (), "model": ("virtio", "e1000e", "rtl8139")},
                                 bare=("user", "none"))
        if kind == "disk":
            return complete_spec(text, {k: "path" if k in ("path", "backing") else CHOICES.get(f"disk.{k}")
                                        for k in DISK_KEYS}, bare=("none",))
        return []

    def _resolved(self) -> set[str]:
        from vscen.errors import VscenError
        from vscen.resolve import resolve

        add, remove = _split_features(self.values["feature"])
        if not self.values["scenario"] and not add:
            return set()
        try:
            return set(resolve(self.registry, self.values["scenario"], add, remove).names)
        except VscenError:
            return set()

    # -- commands --------------------------------------------------------------------------

    def do_scenario(self, arg):
        """scenario [NAME...]

        Choose the scenarios to combine (they replace the current ones); alone, list them."""
        if arg.strip():
            self.assign("scenario", arg)
            return
        width = max(len(n) for n in self.registry.scenarios) if self.registry.scenarios else 0
        for name, item in sorted(self.registry.scenarios.items()):
            mark = "*" if name in self.values["scenario"] else " "
            print(f"{mark} {name:<{width}}  {item.summary}")

    def do_feature(self, arg):
        """feature [+NAME|-NAME...]

        Add (+NAME, or NAME) or remove (-NAME) features, on top of the scenarios'; alone, list
        them (+ added, - removed, * brought in by the scenarios)."""
        if arg.strip():
            self.assign("feature", arg)
            return
        have = self._resolved()
        add, remove = _split_features(self.values["feature"])
        features = self.registry.features
        width = max((len(n) for n in features), default=0)
        for name, item in sorted(features.items(), key=lambda kv: (kv[1].category, kv[0])):
            mark = "+" if name in add else "-" if name in remove else "*" if name in have else " "
            print(f"{mark} {name:<{width}}  [{item.category}] {item.summary}")

    def do_set(self, arg):
        """set KEY VALUE

        Change a setting (just 'KEY VALUE' works too): checked at once, a bad value is refused
        and the previous one stays. A list setting (disk, filesystem, feature, customise,
        host-facts, peer, hostdev) gets VALUE added. 'help KEY' says what KEY takes."""
        name, _, value = arg.strip().partition(" ")
        if not name:
            self.do_show("")
            return
        key = self.key(name)
        if value.strip():
            self.assign(key.name, value)
        else:
            self._describe(key)

    def do_unset(self, arg):
        """unset KEY [VALUE]

        Back to the default; for a list setting, all of it or just VALUE."""
        name, _, item = arg.strip().partition(" ")
        if not name:
            raise _usage("unset: give a setting ('unset memory'; 'unset disk' drops every disk given)")
        self.unassign(name, item.strip())

    def do_reset(self, arg):
        """reset

        Forget every choice: no scenario, features or settings."""
        self.values = self.blank()

    def do_show(self, arg):
        """show

        Every setting a run would use, its value and where it comes from (set here, a
        scenario's default, a config file, the built-in default)."""
        v = self.values
        s, clashes = self.settings()
        if s is None:
            for note in clashes:
                print(f"note: {note}")
            return

        def src(*keys):
            # of several keys (a disk's), the one of highest precedence
            found = sorted((s.source(k) for k in keys), key=lambda w: ("option", "config", "scenario", "default").index(w.split()[0]))
            return "set here" if found[0] == "option" else found[0]

        net = s.network
        rows = [
            ("name", s.name, src("name") if v["name"] else "default"),
            ("memory", _size(s.memory), src("memory")),
            ("vcpu", str(s.vcpu), src("vcpu")),
            ("machine", s.machine or "the host's default", src("machine")),
            ("arch", s.arch or "the host's", src("arch")),
            ("virt-type", s.virt_type or "kvm where the host offers it", src("virt_type")),
            ("firmware", s.firmware or "as the features ask", src("firmware")),
            ("boot", ",".join(s.boot), src("boot")),
            ("cdrom", s.cdrom or "none", src("cdrom")),
            ("network", f"{net.kind}={net.source},model={net.model}" if net.source else net.kind, src("network")),
            ("graphics", s.graphics or "as the features ask", src("graphics")),
        ]
        for i, d in enumerate(s.disks):
            extra = "".join(f" {k}={getattr(d, k)}" for k in ("discard", "backing", "cluster_size") if getattr(d, k))
            extra += (f" preallocation={d.preallocation}" if d.preallocation != "off" else "") + \
                     (" lazy_refcounts" if d.lazy_refcounts else "")
            extra += "".join(f" {k}={_shown(v)}" for k, v in sorted(d.extras.items()) if v not in (None, False, ()))
            rows.append((f"disk {i + 1}", f"{s.disk_path(i)}: {_size(d.size // 1024)} {d.format} bus={d.bus} "
                         f"cache={d.cache} io={d.io}{extra}",
                         src("disk.format", "disk.cache", "disk.io", "disk.size", "disks")))
        if not s.disks:
            rows.append(("disk", "none", src("disks")))
        rows += [("transient", "yes" if s.transient else "no", src("transient"))]
        # the plugins' settings, each with its value as the plugin parsed it
        for key in keys():
            if key.param.startswith("plugin_") and not key.name.startswith("disk."):
                value = s.get(key.setting)
                shown = ("yes" if value else "no") if key.kind == "flag" else \
                    "; ".join(_shown(x) for x in value) if isinstance(value, tuple) else _shown(value)
                rows.append((key.name, shown or "-", src(key.setting)))
        for name in ("connect", "host-facts", "config", "output", "customise", "force", "start"):
            value = v[name]
            shown = ("yes" if value else "no") if key_map()[name].kind == "flag" else \
                "; ".join(value) if isinstance(value, list) else value
            if name == "connect" and not value:
                shown, where = self.connection(), ""  # it says where it comes from
            else:
                where = "set here" if value else "default"
            rows.append((name, shown or "-", where))
        width = max(len(r[0]) for r in rows)
        for name, value, where in rows:
            print(f"{name:<{width}}  {value}" + (f"  ({where})" if where else ""))

    def do_xml(self, arg):
        """xml

        The domain XML a run would define (vscen run --dry-run's output)."""
        import io

        if not self._need_scenario():
            return
        out, err = io.StringIO(), io.StringIO()
        ok = self._cli(["run", *self.argv(), "--dry-run"], out=out, err=err)
        for line in err.getvalue().splitlines():
            if line.startswith("warning:"):
                _err(line)
        if ok:
            print(out.getvalue(), end="", flush=True)

    def do_plan(self, arg):
        """plan [--json]

        What a run would do, step by step, and the checks and notes (vscen run --dry-run);
        changes nothing."""
        import io

        if not self._need_scenario() or not _flags(arg, ("--json",)):
            return
        out = io.StringIO()
        if self._cli(["run", *self.argv(), "--dry-run", *arg.split()], out=out) and "--json" in arg:
            # a dry run prints the XML, then the JSON summary
            print(out.getvalue().rpartition("</domain>\n")[2], end="", flush=True)

    def do_explain(self, arg):
        """explain

        Which plugin set each element and value of the XML, and what it overrode (vscen run
        --dry-run --explain)."""
        import io

        if self._need_scenario():
            self._cli(["run", *self.argv(), "--dry-run", "--explain"], out=io.StringIO())

    def do_run(self, arg):
        """run [--start] [--force] [--json] [--yes]

        Run it as 'vscen run' does: shows the plan and asks first (not with --yes), then
        prepares the host, writes the XML and defines the guest. --start and --force here are
        for this run only (the 'start' and 'force' settings stay)."""
        import io

        flags = arg.split()
        if not self._need_scenario() or not _flags(arg, RUN_FLAGS + ("-y",)):
            return
        args = ["run", *self.argv()]
        args += [f for f in ("--start", "--force") if f in flags and f not in args]
        if not ({"--yes", "-y"} & set(flags)):
            if not self._cli(args + ["--dry-run"], out=io.StringIO()):
                return
            if not self.confirm("go ahead? [y/N] "):
                print("nothing done")
                return
        self._cli(args + (["--json"] if "--json" in flags else []))

    def do_host(self, arg):
        """host [check] [--json]

        The host as the scenarios see it, on the current connection or host facts (vscen
        host); 'host check': the host checks the current choice needs, with fixes (vscen host
        check)."""
        words = arg.split()
        if not _flags(arg, ("check", "--json")):
            return
        where = [a for f in self.values["host-facts"] for a in ("--host-facts", f)]
        connect = self.values["connect"] or self._config_connect()
        if connect:
            where += ["--connect", connect]
        if "check" not in words:
            self._cli(["host", *where, *(["--json"] if "--json" in words else [])])
            return
        if not self._need_scenario():
            return
        features = [a for f in self.values["feature"] for a in _opt("--feature", f)]
        memory = ["--memory", self.values["memory"]] if self.values["memory"] else []
        self._cli(["host", "check", *self.values["scenario"], *features, *memory, *where,
                   *(["--json"] if "--json" in words else [])])

    def do_rules(self, arg):
        """rules

        The rules of the chosen scenarios and features: why each item is in, what it requires,
        implies and conflicts with, the host checks and actions it names."""
        from vscen.cli.common import rules_of
        from vscen.resolve import resolve

        if not self._need_scenario():
            return
        add, remove = _split_features(self.values["feature"])
        res = resolve(self.registry, self.values["scenario"], add, remove)
        for item in res.items:
            print(f"{item.kind} {item.name} ({res.why[item.name]}): {item.summary}")
            rules = rules_of(item)
            for label, key in (("requires", "requires"), ("implies", "implies"), ("arches", "arches"),
                               ("host checks", "validators"), ("host actions", "host_actions")):
                if rules[key]:
                    print(f"    {label}: {', '.join(rules[key])}")
            for c in rules["conflicts"]:
                print(f"    conflicts: {c['name']} ({c['reason']})")
        if remove:
            print(f"removed: {', '.join(remove)}")
        notes = self.check(self.values)
        for note in notes:
            print(f"note: {note}")
        print(f"these combine: {_count(len(res.scenarios), 'scenario')}, {_count(len(res.features), 'feature')}"
              + (", with clashing defaults to decide" if notes else ""))

    def do_command(self, arg):
        """command

        The equivalent 'vscen run' command line."""
        import shlex

        print("vscen run " + shlex.join(self.argv()) if self.values["scenario"] else
              "no scenario chosen yet ('scenario NAME')")

    def do_help(self, arg):
        """help [COMMAND|KEY]

        The commands and settings; with a name, what it does or takes."""
        name = arg.strip()
        if name:
            method = getattr(self, f"do_{name}", None)
            if method is not None and name != "EOF":
                print(_dedent(method.__doc__))
                return
            self._describe(self.key(name))
            return
        import textwrap

        print("commands:")
        width = max(40, _columns() - 1)
        for usage, text in command_help(type(self)):
            print(textwrap.fill(text, width=width, initial_indent=f"  {usage:<26} ", subsequent_indent=" " * 29)
                  if len(usage) <= 26 else f"  {usage}\n" + textwrap.fill(text, width=width, initial_indent=" " * 29,
                                                                         subsequent_indent=" " * 29))
        print("settings ('KEY VALUE' or 'set KEY VALUE'; 'help KEY' for one):")
        print(textwrap.fill(" ".join(k.name for k in keys()), width=max(40, _columns() - 1),
                            initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False))

    def do_quit(self, arg):
        """quit

        Leave the shell (Ctrl-D too)."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg):  # noqa: N802 -- cmd's name for Ctrl-D
        print()
        return True

    # -- helpers ---------------------------------------------------------------------------

    def _describe(self, key: Key) -> None:
        value = self.values[key.name]
        shown = ("yes" if value else "no") if key.kind == "flag" else " ".join(value) if key.kind == "names" \
            else "; ".join(value) if key.kind == "list" else value
        print(f"{key.name} = {shown if shown not in (None, '') else '(default)'}")
        print(f"    {key_help(key)}")
        print(f"    {_where(key)}")
        if key.values.startswith("choices:") or key.kind == "flag" or key.choices:
            from vscen.settings import CHOICES

            choices = ("yes", "no") if key.kind == "flag" else key.choices or CHOICES[key.values[8:]]
            print(f"    values: {', '.join(choices)}")

    def _need_scenario(self) -> bool:
        if self.values["scenario"]:
            return True
        _err("error: scenario: choose a scenario first ('scenario NAME'; 'scenario' lists them)")
        return False

    def _config_connect(self) -> str | None:
        if not self.values["config"]:
            return None
        from pathlib import Path

        from vscen.settings import load_config

        return load_config(Path(self.values["config"]), required=True).get("connect")

    def confirm(self, question: str) -> bool:
        try:
            return input(question).strip().lower() in ("y", "yes")
        except (EOFError, KeyboardInterrupt):
            print()
            return False

    def _cli(self, args: list[str], out=None, err=None) -> bool:
        """Run ``vscen ARGS`` in this process as the command line would; True when it worked.
        Errors are printed as vscen prints them."""
        import contextlib

        import typer.main

        from vscen.cli import app
        from vscen.errors import VscenError

        try:
            from typer._click.exceptions import ClickException  # typer >= 0.28 vendors Click
        except ImportError:  # pragma: no cover - older typer uses Click itself
            from click.exceptions import ClickException
        try:
            with contextlib.redirect_stdout(out or sys.stdout), contextlib.redirect_stderr(err or sys.stderr):
                code = typer.main.get_command(app).main(args=args, prog_name="vscen", standalone_mode=False)
        except VscenError as exc:
            _error(exc)
            return False
        except ClickException as exc:
            _err(f"error: {exc.format_message()}")
            return False
        except typer.Abort:
            _err("error: aborted")
            return False
        sys.stdout.flush()
        return not code


def _shown(value) -> str:
    """A plugin's parsed value for ``show``: what the user would type where it is a plain one."""
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool)):
        return str(value)
    fields = getattr(value, "__dataclass_fields__", None)
    if fields:
        return ",".join(f"{k}={getattr(value, k)}" for k in fields)
    return str(value)


def _opt(option: str, value) -> list[str]:
    value = str(value)
    # a value starting with '-' (--feature -tpm) must not read as an option
    return [f"{option}={value}"] if value.startswith("-") else [option, value]


def _flags(arg: str, allowed: tuple[str, ...]) -> bool:
    bad = [w for w in arg.split() if w not in allowed]
    if bad:
        _err(f"error: '{bad[0]}' is not one of {', '.join(allowed)} here")
    return not bad


def _check_set(item: str) -> None:
    """``XPATH=VALUE`` as ``--set`` takes it (whether it matches is known once built)."""
    from vscen.domain.customise import parse_set

    parse_set(item)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _suggest(word: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _where(key: Key) -> str:
    if not key.param:
        return f"vscen run --disk {key.name[5:]}=VALUE (every disk; a --disk spec's own value wins)"
    if key.kind == "names":
        return "vscen run SCENARIOS..."
    return f"vscen run {long_option(key.param)}" + (" (repeatable)" if key.kind == "list" else "")


def _dedent(doc: str | None) -> str:
    import inspect

    return inspect.cleandoc(doc or "")


def command_help(cls=Session) -> list[tuple[str, str]]:
    """(usage, first sentence) of every command, from the docstrings: for ``help`` and the
    user guide."""
    rows = []
    for name in sorted(n for n in dir(cls) if n.startswith("do_") and n not in ("do_EOF", "do_exit")):
        doc = _dedent(getattr(cls, name).__doc__)
        usage, _, text = doc.partition("\n\n")
        first = " ".join(text.split()).split(". ")[0].rstrip(".") + "."
        rows.append((usage.strip(), first))
    return rows


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns
