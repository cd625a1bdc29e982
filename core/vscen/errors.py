"""Domain exceptions: each carries the one-line message the CLI prints, and an exit code."""

from __future__ import annotations

# Exit codes scripts can rely on (documented in docs/cli.md).
EXIT_OK = 0
EXIT_ERROR = 1  # any other failure
EXIT_USAGE = 2  # bad option or value (Typer uses 2 as well)
EXIT_RULES = 3  # the chosen plugins cannot work together
EXIT_HOST = 4  # the host lacks what the scenario needs
EXIT_INVALID = 5  # the result failed validation
EXIT_EXISTS = 6  # something exists and --force was not given
EXIT_LIBVIRT = 7  # libvirt refused or could not be reached


class VscenError(Exception):
    """Base error: ``str(err)`` is the message, ``err.problems`` the full list."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, problems: list[str] | None = None, summary: str = ""):
        super().__init__(message)
        self.problems = list(problems or [])
        #: what went wrong as a whole, when there are several problems
        self.summary = summary


class UsageError(VscenError):
    """A setting, option or file given by the user is not acceptable."""

    exit_code = EXIT_USAGE


class RulesError(VscenError):
    """The chosen scenarios and features cannot be combined."""

    exit_code = EXIT_RULES


class HostError(VscenError):
    """The host does not offer what the request needs."""

    exit_code = EXIT_HOST


class InvalidDomainError(VscenError):
    """The built domain does not validate."""

    exit_code = EXIT_INVALID


class ExistsError(VscenError):
    """A file or libvirt object exists already and ``--force`` was not given."""

    exit_code = EXIT_EXISTS


class LibvirtError(VscenError):
    """libvirt refused an operation or could not be reached."""

    exit_code = EXIT_LIBVIRT


class PluginError(VscenError):
    """A plugin declared something inconsistent, or its code failed (a feature's ``apply``, a
    host action's ``plan``): the message names the item, the plugin, its distribution and
    version."""


def shown(value) -> str:
    """*value* as an error message quotes it: a string in quotes, anything else as Python
    writes it, at most 80 characters."""
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:77] + "..."


def raise_all(exc_type: type[VscenError], what: str, problems: list[str]) -> None:
    """Raise *exc_type* listing every problem at once, if there are any."""
    if not problems:
        return
    if len(problems) == 1:
        raise exc_type(problems[0], problems)
    raise exc_type(f"{what}: " + "; ".join(problems), problems, summary=what)
