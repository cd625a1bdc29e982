"""The shell's commands (``do_*``, as ``cmd.Cmd`` finds them): each runs the real command
line in this process where there is one."""

from __future__ import annotations

import sys

from vscen.cli.shell import util
from vscen.cli.shell.keys import RUN_FLAGS, Key, key_help, key_map, keys
from vscen.cli.shell.util import (
    _count,
    _dedent,
    _err,
    _error,
    _flags,
    _opt,
    _shown,
    _size,
    _split_features,
    _usage,
    _where,
)


class Commands:
    """The shell's commands; :class:`vscen.cli.shell.session.Session` holds the state they use."""

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
            # "detected" (a plugin's Setting.derive) and "default" rank last
            found = sorted((s.source(k) for k in keys), key=lambda w: {"option": 0, "config": 1, "scenario": 2}.get(w.split()[0], 3))
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
        width = max(40, util._columns() - 1)
        for usage, text in util.commands_of(type(self)):
            print(textwrap.fill(text, width=width, initial_indent=f"  {usage:<26} ", subsequent_indent=" " * 29)
                  if len(usage) <= 26 else f"  {usage}\n" + textwrap.fill(text, width=width, initial_indent=" " * 29,
                                                                         subsequent_indent=" " * 29))
        print("settings ('KEY VALUE' or 'set KEY VALUE'; 'help KEY' for one):")
        print(textwrap.fill(" ".join(k.name for k in keys()), width=max(40, util._columns() - 1),
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

        from vscen.config import load_config

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

        from vscen.cli.common import app
        from vscen.errors import VscenError

        try:
            from typer._click.exceptions import ClickException  # typer >= 0.28 vendors Click
        except ImportError:  # pragma: no cover - older typer uses Click itself
            from click.exceptions import ClickException
        try:
            with contextlib.redirect_stdout(out or sys.stdout), contextlib.redirect_stderr(err or sys.stderr):
                code = typer.main.get_command(app()).main(args=args, prog_name="vscen", standalone_mode=False)
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
