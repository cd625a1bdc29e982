"""The ``vscen`` command line (Typer), one module per command group.

The command line is built from the loaded plugins: ``vscen run`` gets an option for every
setting a plugin declares (``vscen.Setting``), and each plugin's command groups
(``vscen.Command``) are added beside the core's. Errors are formatted here only: the pipeline
raises ``VscenError`` carrying the message and an exit code; ``main()`` prints ``error: ...``
on stderr and exits with that code. Tracebacks only with ``--debug``. Every listing has
``--json``.

No ``from __future__ import annotations`` here: Typer reads the root's annotations as objects
(strings it would evaluate, compiling each, in every run).
"""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vscen import __version__
from vscen.cli import common
from vscen.cli.common import STATE, err, loaded

HELP = "Prepare a KVM host and a libvirt guest for a scenario: secure-vm, desktop, computation..."


def _version(value: bool):
    if value:
        typer.echo(f"vscen {__version__}")
        raise typer.Exit()


def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
):
    """vscen: tuned libvirt guests for scenarios, from plugins."""
    STATE["debug"] = debug


def shell_command(
    scenarios: Annotated[Optional[list[str]], typer.Argument(help="Scenarios to start with (see 'vscen list scenarios').")] = None,
    connect: Annotated[Optional[str], typer.Option("--connect", "-c", help="libvirt URI to start with (the 'connect' setting).")] = None,
):
    """An interactive shell: choose scenarios, features and settings with tab completion, see the XML, the plan and the host, and run it."""
    from vscen.cli.shell import start

    start(scenarios, connect)


#: the core's own commands (not groups): ``vscen NAME ...`` builds the root and NAME alone
SINGLE_COMMANDS = ("run", "destroy", "status", "list", "plugins", "rules", "validate", "shell", "hosts")


def build_app(config: Path | None = None, only: str | None = None) -> typer.Typer:
    """The command line for the plugins loaded with *config* (``--config``); with *only*, one
    of SINGLE_COMMANDS, the root and that command alone (what ``vscen NAME ...`` parses:
    Typer builds every command it is given, and start-up time counts)."""
    pm, reg = loaded(config)
    # --install-completion and --show-completion are the root's own: they come before any
    # command, so a command line that starts with one (*only*) has no use for them
    app = typer.Typer(no_args_is_help=True, add_completion=only is None, help=HELP,
                      pretty_exceptions_enable=False, rich_markup_mode=None)
    app.callback()(_root)
    groups = None
    if only in (None, "run"):
        from vscen.cli import run

        function, cls = run.command(reg)
        app.command(no_args_is_help=True, cls=cls)(function)
    if only in (None, "destroy", "status"):
        from vscen.cli import guests

        for name, function in (("destroy", guests.destroy), ("status", guests.status)):
            if only in (None, name):
                app.command(name)(function)
    if only in (None, "list", "plugins", "rules", "validate"):
        from vscen.cli import catalog

        if only in (None, "list"):
            # the listings warn of a plugin command that cannot be loaded
            groups = {name: _command_app(command, pm, reg) for name, command in sorted(reg.commands.items())}
            app.add_typer(catalog.list_app(_listings(reg, pm, groups)), name="list")
        for name, function in (("plugins", catalog.plugins), ("rules", catalog.rules), ("validate", catalog.validate)):
            if only in (None, name):
                app.command(name)(function)
    if only in (None, "shell"):
        app.command("shell")(shell_command)
    if only in (None, "hosts"):
        from vscen.cli import hosts

        app.command("hosts")(hosts.hosts)
    if only in ("plugins", "rules", "validate"):
        for command in reg.commands.values():  # the listings warn of one that cannot be loaded
            _command_app(command, pm, reg)
    if only is not None:
        return app
    from vscen.cli import host, plugin

    app.add_typer(host.app, name="host")
    app.add_typer(plugin.app, name="plugin")
    for name, group in groups.items():
        if group is not None:
            app.add_typer(group, name=name, help=reg.commands[name].summary)
    return app


def _listings(reg, pm, groups) -> dict:
    """What plugins add to ``vscen list`` (``vscen.Command.listing``): name -> (summary, the
    function of the group's command); one that cannot be had is left out with a warning."""
    from vscen.cli.catalog import Kind

    out = {}
    for name, group in groups.items():
        command = reg.commands[name]
        if group is None or not command.listing:
            continue
        found = [c.callback for c in group.registered_commands
                 if (c.name or c.callback.__name__.replace("_", "-")) == command.listing]
        if name in {k.value for k in Kind} or not found:
            why = "the core lists that itself" if found else f"its group has no command '{command.listing}'"
            pm.notes.append(f"{reg.describe(name, 'commands')}: 'vscen list {name}' is left out: {why}")
            continue
        out[name] = (command.summary, found[0])
    return out


def _command_app(command, pm, reg):
    """The Typer app of a plugin's command; None, with a warning naming the plugin, where it
    cannot be had (the plugin's other contributions keep working)."""
    app = command.app
    try:
        if isinstance(app, str):
            import importlib

            module, _, attr = app.partition(":")
            app = getattr(importlib.import_module(module), attr)
        elif callable(app) and not isinstance(app, typer.Typer):
            app = app()
        if not isinstance(app, typer.Typer):
            raise TypeError(f"{app!r:.60} is not a typer.Typer")
    except Exception as exc:  # a plugin's command must not take the command line down
        pm.notes.append(f"{reg.describe(command.name, 'commands')}: command '{command.name}' cannot be loaded: "
                        f"{type(exc).__name__}: {exc}; it is left out")
        return None
    return app


common.APP["build"] = build_app


def __getattr__(name: str):
    """``vscen.cli.app``: the command line for the default configuration."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module 'vscen.cli' has no attribute '{name}'")


def _config_of(argv: list[str]) -> Path | None:
    """The ``--config FILE`` of the command line, before Typer parses it: it decides which
    plugins load (``disabled_plugins``), and so which options exist."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.partition("=")[2])
    return None


def _command_of(argv: list[str]) -> str | None:
    """The command named first on the command line, before Typer: after ``--debug`` only (a
    root ``--help`` before it shows every command)."""
    rest = list(argv)
    while rest and rest[0] == "--debug":
        rest.pop(0)
    return rest[0] if rest and not rest[0].startswith("-") else None


def main() -> None:
    from vscen.errors import VscenError

    STATE["debug"] = "--debug" in sys.argv[1:]  # before the plugins load: their errors too
    from vscen.cli import codecache

    argv = sys.argv[1:]
    command = _command_of(argv)
    codecache.install(command)  # before the plugins and the pipeline define their dataclasses
    try:
        # standalone: Typer reports usage errors itself (exit 2); our errors propagate here
        build_app(_config_of(argv), only=command if command in SINGLE_COMMANDS else None)()
    except VscenError as exc:
        if STATE["debug"]:
            raise
        if exc.summary and len(exc.problems) > 1:
            err(f"error: {exc.summary} ({len(exc.problems)} problems):")
            for problem in exc.problems:
                err(f"  - {problem}")
        else:
            err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err("error: interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: one line unless --debug
        if STATE["debug"]:
            raise
        err(f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(1)


#: allocations between two collections of young objects by Python's cyclic GC in the program
#: (Python's default: 700)
GC_YOUNG = 20_000


def entry() -> None:
    """The ``vscen`` program (the console script and ``python -m vscen.cli``): :func:`main`,
    then the exit handlers and a flush of the standard streams, and the process ends there.
    Python's own finalization (tearing down every module and collecting every object, 20 to
    40 ms for a command's modules and libvirt's) has nothing to do for a command that ran to
    its end: its files are closed and its writes are atomic. Where another thread still runs,
    or an exception other than an exit propagates (``--debug``), Python ends as usual. The
    modules of vscen and its plugins come from one file where they can (``vscen.cli.bundle``).

    Python's cyclic garbage collector looks at the young objects every 700 allocations and,
    every hundred of those looks, at all of them: a command's start-up allocates hundreds of
    thousands of objects (modules, classes, code, registrations, the XML), frees nearly all of
    them by their reference counts, and the collector's scans were 4% of a ``run --dry-run``.
    The program collects every GC_YOUNG allocations instead: a long session (the shell, a
    fleet) still has its reference cycles collected, a few megabytes later."""
    import gc

    from vscen.cli import bundle

    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    bundle.install(_command_of(sys.argv[1:]))
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    import threading

    if threading.active_count() != 1:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)  # as sys.exit("message") does
        code = 1
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe (vscen ... | head): as Python's own exit, status 120
            code = code or 120
    os._exit(code & 0xFF)

