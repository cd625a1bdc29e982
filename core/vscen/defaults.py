"""Setting defaults as plugins read them, by flat key (``"disk.size"``): vscen's own and what
a scenario recommends, so that a plugin can tell a value the user chose from a default."""

from __future__ import annotations

from typing import Any

from vscen.config import flatten
from vscen.settings import BUILTIN


def builtin_default(key: str) -> Any:
    """vscen's own default of setting *key* (``builtin_default("disk.size") == "20GiB"``), as
    a user would write it; None where vscen has none."""
    return BUILTIN.get(key)


def scenario_defaults(scenario) -> dict[str, Any]:
    """The settings *scenario* recommends (``Scenario.defaults``) by flat key:
    ``{"disk": {"format": "raw"}}`` -> ``{"disk.format": "raw"}``."""
    return flatten(dict(scenario.defaults))


def default_of(ctx, key: str) -> Any:
    """The default setting *key* has in *ctx* where the user gave none, as a user would write
    it: the recommendation of the scenario its value came from (source ``scenario NAME``), else
    vscen's own. A value equal to it cannot be told from a default."""
    default = builtin_default(key)
    src = ctx.settings.source(key)
    reg = getattr(ctx, "registry", None)
    if src.startswith("scenario ") and reg is not None and src[9:] in reg.scenarios:
        default = scenario_defaults(reg.scenarios[src[9:]]).get(key, default)
    return default
