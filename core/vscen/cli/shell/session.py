"""The shell's state (the choices, as ``vscen run`` options), its checks, the status line,
the loop's hooks and completion; its commands are :class:`Commands`'."""

from __future__ import annotations

import os
import string
from typing import Any

from vscen.cli.shell import util
from vscen.cli.shell.commands import Commands
from vscen.cli.shell.keys import _YES, RUN_FLAGS, SUGGEST, Key, key_map, keys, long_option
from vscen.cli.shell.util import (
    _abspath,
    _check_set,
    _err,
    _error,
    _opt,
    _split_features,
    _suggest,
    _usage,
    complete_path,
    complete_spec,
)

PROMPT = "vscen> "


class Session(Commands):
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

            from vscen.config import load_config

            load_config(Path(value), required=True)
        elif key.name == "host-facts":
            from pathlib import Path

            from vscen.host.facts import load_files

            load_files([Path(value)])
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

            from vscen.config import config_layers

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
        width = width or max(40, util._columns() - 1)
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
        if kind == "host":
            from vscen.cli.common import complete

            return [f"{h} " for h in complete("hosts", text)]
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
