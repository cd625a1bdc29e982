"""The data a plugin registers: features, scenarios, validators, host actions, and what they
need from the core: settings, host fact providers and commands.

Rules are data. A feature or scenario is a frozen dataclass that names what it requires,
conflicts with (and why), implies, which architectures it supports and which host validators
must pass; only ``apply(domain, ctx)`` is code. The core resolves and orders them
(``vscen.resolve``) before anything is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # only for annotations: keep start-up lean
    from vscen.context import Context
    from vscen.domain.model import Domain

Status = Literal["pass", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Conflict:
    """``name`` cannot be combined with the declaring item, because of ``reason``."""

    name: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Rules:
    """What features and scenarios have in common: a name and the rules that bind it."""

    name: str
    summary: str
    #: names (features or scenarios) that must be chosen too; not pulled in automatically
    requires: tuple[str, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    #: names pulled in automatically, and applied before this item
    implies: tuple[str, ...] = ()
    #: architectures this item supports; empty means any
    arches: tuple[str, ...] = ()
    #: validators (by name): host validators that must pass before this item is used, and
    #: domain validators that check only the results it is in
    validators: tuple[str, ...] = ()
    #: host actions (by name) that prepare the host for this item
    host_actions: tuple[str, ...] = ()
    #: host facts (``vscen.FactProvider`` names) this item, its validators and actions read:
    #: the facts stage reads only the facts the chosen items name
    facts: tuple[str, ...] = ()
    #: what it sets and why, for ``vscen list`` and the generated docs
    details: str = ""

    kind = "item"

    def pulls(self) -> tuple[str, ...]:
        """Names this item pulls into the resolution."""
        return self.implies


@dataclass(frozen=True, kw_only=True)
class Feature(Rules):
    """One capability of a guest: ``apply(domain, ctx)`` writes it into the domain model."""

    category: str = "misc"
    #: runs before any item's ``apply``, in the same order: for features that settle settings
    #: others read (an operating system's minimum memory): ``ctx.settings = ...``
    prepare: Callable[[Context], None] | None = field(default=None, compare=False)
    apply: Callable[[Domain, Context], None] | None = field(default=None, compare=False)
    #: runs after every feature's apply, in the same order: for features that adjust what
    #: others added (``iommu='on'`` on every virtio device, say)
    finish: Callable[[Domain, Context], None] | None = field(default=None, compare=False)

    kind = "feature"


@dataclass(frozen=True, kw_only=True)
class Scenario(Rules):
    """A named bundle of features plus default settings (overridable by the user)."""

    features: tuple[str, ...] = ()
    #: default settings, as the user would give them: {"machine": "q35", "disk": {"format": "raw"}}
    defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)
    apply: Callable[[Domain, Context], None] | None = field(default=None, compare=False)

    kind = "scenario"

    def pulls(self) -> tuple[str, ...]:
        return self.features + self.implies


@dataclass(frozen=True)
class Check:
    """One finding of a validator."""

    status: Status
    message: str
    #: how to fix it, for a warn or fail
    fix: str = ""
    #: for domain checks: the XPath of the element concerned
    element: str = ""
    #: filled in by the core
    validator: str = ""


@dataclass(frozen=True, kw_only=True)
class Validator:
    """A check of the host (``kind="host"``) or of the built domain (``kind="domain"``).

    Host validators run when a chosen feature or scenario names them (``validators``). Domain
    validators run on every result and return nothing where they do not apply; one that a
    feature or scenario names runs only on the results where one of those is chosen.
    """

    name: str
    summary: str
    check: Callable[[Context], Iterable[Check]] = field(compare=False)
    kind: Literal["host", "domain"] = "host"
    #: the check reads local files (sysfs): skipped, with a note, for a remote host
    local_only: bool = False


@dataclass(frozen=True)
class Step:
    """One step of a plan.

    ``do()`` makes the change and returns a record of it, a JSON-able dict that vscen keeps in
    the guest's journal (``None`` where nothing changed). The owner's ``undo(connection,
    record)`` takes it back: in the same run when a later step fails, or at ``vscen destroy``.
    A record with ``"storage": True`` is kept by ``vscen destroy --keep-storage``.
    """

    description: str
    do: Callable[[], dict | None] = field(compare=False)
    #: the host action (or "vscen" for the core's own steps); filled in by the core
    owner: str = ""


@dataclass(frozen=True, kw_only=True)
class HostAction:
    """A preparation of the host (disk images, networks, hugepages, secrets...).

    ``plan(ctx)`` returns the steps needed for this guest and changes nothing itself; it
    refuses (raising ``vscen.errors.ExistsError``) what exists and differs unless
    ``ctx.force``. ``undo(connection, record)`` takes back what one step recorded; it must
    accept that the thing is already gone.
    """

    name: str
    summary: str
    plan: Callable[[Context], Iterable[Step]] = field(compare=False)
    undo: Callable[[Any, dict], None] = field(compare=False)
    details: str = ""
    #: its steps run after the domain is defined and before it is started (a snapshot before
    #: the first boot), not before the domain is defined as other actions' steps do
    after_define: bool = False
    #: host preparation that failing host checks wait for (kernel options that take effect
    #: after a reboot): ``prepares(ctx)`` names the validators whose failures this action's
    #: steps address in this run, none where it plans nothing. When every failing host check
    #: is so named, ``vscen run`` builds no guest: it prepares the host (the plan holds these
    #: actions' steps, journalled under the guest's name) and says to run again after the
    #: reboot
    prepares: Callable[[Context], Iterable[str]] | None = field(default=None, compare=False)


def as_tuple(value: Iterable[str] | str | None) -> tuple[str, ...]:
    """Accept a single name or an iterable of names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class Setting:
    """A setting a plugin adds to every guest request.

    From this declaration alone come the ``vscen run`` option, the config-file key, the
    shell's key and its completion, the row of the generated user guide, ``--explain``'s
    provenance and the error messages. The parsed value is ``ctx.settings.<name>`` (or
    ``ctx.settings.get(name)``). A name ``disk.KEY`` adds a key to every disk instead
    (``--disk KEY=VALUE``, ``[disk] KEY = VALUE``), read as ``disk.KEY`` on each disk.
    """

    #: the config key and attribute: lower case, words joined by '_' ("hugepages", "tune_host")
    name: str
    #: one sentence for ``--help``, the docs and the shell
    help: str
    #: an example value, shown in the docs and in error messages ("reserve", "/srv/data:data")
    example: str = ""
    #: the allowed values, where they are a fixed list
    choices: tuple[str, ...] = ()
    #: turns what the user gave (a string; from a config file, a TOML value) into the value;
    #: raises ``ValueError`` with what is allowed. Applied to each item of a repeatable setting.
    parse: Callable[[Any], Any] | None = field(default=None, compare=False)
    #: the value when nobody sets it (a repeatable setting's default is ``()``)
    default: Any = None
    #: given several times (``--peer A --peer B``, a list in the config file): a tuple
    repeatable: bool = False
    #: a yes/no switch: ``--NAME`` on the command line, true/false in a config file
    flag: bool = False
    #: checks the parsed value against the rest, once every setting is known: ``check(value,
    #: settings)`` (``check(value, disk)`` for a disk key); raises ``ValueError`` saying why.
    #: Not called where the value is None or () (nobody gave it, and no default)
    check: Callable[[Any, Any], None] | None = field(default=None, compare=False)
    #: the ``vscen run`` option; default ``--NAME`` with '_' and '.' as '-'
    option: str = ""
    #: features (or scenarios) the setting brings in when it is given (``--filesystem`` adds
    #: host-filesystem): "implied by --NAME"
    implies: tuple[str, ...] = ()
    #: the option's value placeholder in ``--help`` ("URI", "FILE", "DIR": the shell completes
    #: a file or directory name)
    metavar: str = ""
    #: for a ``KEY=VALUE,...`` value: its keys, each with what completes it in the shell
    #: ("path", "dir", or a tuple of values): ``{"source": "dir", "readonly": ("yes", "no")}``
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: where nobody gave the setting, ``derive(settings, note)`` may find its value from the
    #: others (the OS from the ``--cdrom`` ISO): it returns the text a user would have typed,
    #: parsed as theirs, or None; ``note(text)`` tells the user what it found (or did not).
    #: Its source is "detected": below the user's and a scenario's values, above defaults.
    derive: Callable[[Any, Callable[[str], None]], Any] | None = field(default=None, compare=False)

    kind = "setting"

    @property
    def key(self) -> str:
        """The name as a disk key (``encrypt``) for ``disk.`` settings, else the name."""
        return self.name[5:] if self.is_disk_key else self.name

    @property
    def is_disk_key(self) -> bool:
        return self.name.startswith("disk.")

    @property
    def cli_option(self) -> str:
        return self.option or "--" + self.name.replace("_", "-").replace(".", "-")


@dataclass(frozen=True, kw_only=True)
class FactProvider:
    """Host facts a plugin reads at the facts stage, once, before anything is built.

    ``read(probe)`` gets a :class:`vscen.FactProbe` (the open libvirt connection, the core's
    host facts, the settings, and whether the host is this machine) and returns plain,
    JSON-able data, or ``None`` where it cannot tell. The result is kept in the host facts
    (``ctx.host.fact(name)``) and written into ``vscen host snapshot``, so that
    ``--host-facts`` replays it: builds read facts, never the live host. With recorded host
    facts that lack it, ``read`` runs with no connection.

    A provider runs only where a chosen feature or scenario names its fact in ``facts`` (and
    for ``vscen host snapshot``, which records them all), in registration order, each seeing
    the facts read before it (``probe.host.fact(...)``). One that raises, or returns what JSON cannot hold, is reported
    as a warning naming the fact and the plugin, and its fact is ``None``; only a vscen
    error (``vscen.UsageError``, ``vscen.LibvirtError``: what the user gave cannot be read, a
    ``--peer`` file that does not exist) stops the run, as it does anywhere.
    """

    #: the fact's name, by convention ``<plugin>.<what>`` ("host-hardware.devices")
    name: str
    summary: str
    read: Callable[[Any], Any] = field(compare=False)
    #: an example of what ``read`` returns, for the plugin guide
    example: Any = field(default=None, compare=False)
    #: the setting the fact is read from (``"peers"``), if any: when the user gives it and no
    #: chosen item names the fact, the user is told ``unused``
    setting: str = ""
    #: that note ("--peer: no chosen scenario or feature looks at other hosts; ignored")
    unused: str = ""
    #: rows for ``vscen host``: ``show(value, host, support)`` gets the fact's value (None where
    #: unknown), the core's :class:`vscen.HostFacts` and what the installed libvirt's schema
    #: accepts (``vscen.Support``), and returns ``[(label, text), ...]``; the rows follow the
    #: core's own, in registration order. None: the fact is only in ``vscen host --json``
    show: Callable[[Any, Any, Any], Any] | None = field(default=None, compare=False)

    kind = "fact"


@dataclass(frozen=True, kw_only=True)
class Command:
    """A ``vscen`` sub-command group a plugin adds (``vscen snapshot ...``).

    ``app`` is a ``typer.Typer``, or a ``"module:attribute"`` string naming one, imported only
    when the command line is built (keeps the plugin's import light). ``listing`` names one of
    its commands that ``vscen list NAME`` runs too, with the same options (``vscen list os`` is
    ``vscen os list``); it should take ``--json``.
    """

    name: str
    summary: str
    app: Any = field(compare=False)
    listing: str = ""

    kind = "command"
