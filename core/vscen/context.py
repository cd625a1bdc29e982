"""The context handed to features, scenarios and validators while a guest is built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lxml.etree import _Element

    from vscen.domain.model import Domain
    from vscen.host.facts import HostFacts
    from vscen.registry import Registry
    from vscen.resolve import Resolution
    from vscen.settings import Settings
    from vscen.validate import Support


@dataclass
class Context:
    """What a feature's ``apply`` sees: settings, host facts, the resolution and the domain tree."""

    #: the user's settings, merged with the scenarios' defaults
    settings: Settings
    #: what the host offers (libvirt capabilities, domain capabilities, sysfs)
    host: HostFacts
    #: the resolved features and scenarios, in the order they are applied
    resolution: Resolution
    #: what the installed libvirt's schema accepts (``support.values(element, attribute)``)
    support: Support
    registry: Registry | None = None
    #: the domain model (set while building and for domain validators)
    domain: Domain | None = None
    #: the rendered XML root (for domain validators)
    xml: _Element | None = None
    #: remarks for the user ("no free hugepages: using normal pages")
    notes: list[str] = field(default_factory=list)
    #: the libvirt URI the guest is for
    uri: str = ""
    #: the open connection (vscen.host.connect.Connection), for host actions' plans
    connection: Any = None
    #: replace what exists and differs (--force)
    force: bool = False

    def has(self, name: str) -> bool:
        """Whether feature or scenario *name* is part of this guest."""
        return self.resolution.has(name)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
