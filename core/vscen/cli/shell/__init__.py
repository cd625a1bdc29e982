"""``vscen shell``: choose scenarios, features and settings interactively, with tab completion;
see the XML, the plan, the rules and the host; run it.

The shell is a front end to the command line. Its settings are the options of ``vscen run``,
every one of them (:func:`keys`, :data:`COMMAND_PARAMS`; tests/test_shell.py checks that none
is missing), and ``xml``, ``plan``, ``explain``, ``run`` and ``host`` run the real commands in
this process with the equivalent arguments (``command`` prints them), so the shell does exactly
what ``vscen run`` does. Each value is checked as it is entered, with vscen.settings' own
parsers, so a bad one gets the command line's one-line error and the previous value stays.

Only the Typer command and the tables are defined at import: ``cmd`` and ``readline`` are
imported when the shell starts (:func:`shell_class` mixes ``cmd.Cmd`` into :class:`Session`); the parts are ``keys``
(the settings), ``session`` (state, checks, completion), ``commands`` and ``util``,
and the pipeline when a command needs it, so ``vscen --help`` stays lean.
"""

from __future__ import annotations

from vscen.cli.shell.keys import COMMAND_PARAMS, Key, key_help, key_map, keys, long_option, plugin_key, run_params
from vscen.cli.shell.session import PROMPT, Session
from vscen.cli.shell.util import commands_of

__all__ = ["COMMAND_PARAMS", "PROMPT", "Key", "Session", "command_help", "key_help", "key_map", "keys",
           "long_option", "plugin_key", "run_params", "shell_class", "start"]


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


def command_help(cls=None) -> list[tuple[str, str]]:
    """(usage, first sentence) of every command of the shell (or *cls*): for ``help`` and the
    user guide."""
    return commands_of(cls or Session)
