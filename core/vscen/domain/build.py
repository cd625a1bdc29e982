"""Build the domain model: features and scenarios in resolved order, then the settings.

Each plugin writes inside ``domain.writer(name, level)``, so provenance and precedence are
recorded without plugins having to pass their name around.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vscen.domain.model import Domain
from vscen.errors import PluginError, VscenError

if TYPE_CHECKING:
    from vscen.context import Context


def build(ctx: Context) -> Domain:
    """Prepare and apply every resolved item, then the settings. Conflicts are left for the caller to
    check (``domain.conflicts()``) once the user's own customisations are known."""
    domain = Domain()
    ctx.domain = domain
    items = ctx.resolution.items
    for phase in ("prepare", "apply", "finish"):
        for item in items:
            fn = getattr(item, phase, None)
            if fn is None:
                continue
            with domain.writer(item.name, item.kind):
                try:
                    fn(ctx) if phase == "prepare" else fn(domain, ctx)
                except VscenError:
                    raise  # the plugin refuses, with a message for the user
                except Exception as exc:  # a bug in the plugin: say whose
                    who = ctx.registry.describe(item.name, item.kind) if ctx.registry else "plugin '?'"
                    raise PluginError(
                        f"{item.kind} '{item.name}' of {who} failed in {phase}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
    apply_settings(domain, ctx)
    return domain


def apply_settings(domain: Domain, ctx: Context) -> None:
    """The user-facing settings, each at the precedence level of where it came from."""
    s, host = ctx.settings, ctx.host

    def writer(key: str):
        src = s.source(key)
        name = "vscen" if src == "default" else src.removeprefix("scenario ")
        return domain.writer(name, s.level(key))

    with writer("virt_type"):
        domain.set(type=s.virt_type or host.domain_type)
    with writer("name"):
        domain.ensure("name").text(s.name)
    with writer("memory"):
        domain.ensure("memory").set(unit="KiB").text(s.memory)
        domain.ensure("currentMemory").set(unit="KiB").text(s.memory)
    with writer("vcpu"):
        domain.ensure("vcpu").set(placement="static").text(s.vcpu)
    os_type = domain.ensure("os/type")
    with writer("arch"):
        os_type.set(arch=s.arch or host.arch).text("hvm")
    if s.machine or host.machine:
        with writer("machine"):
            os_type.set(machine=s.machine or host.machine)
    if s.firmware:
        with writer("firmware"):
            domain.ensure("os").set(firmware=s.firmware)
    with writer("boot"):
        for dev in s.boot:
            domain.ensure("os").child("boot", dev=dev)
