"""vscen: prepare a KVM host and a libvirt guest for a scenario.

Plugin authors need only what this module exports::

    from vscen import hookimpl, Feature, Scenario, Validator, HostAction, Step, Conflict, Check
"""

import pluggy

from vscen.model import Check, Conflict, Feature, HostAction, Scenario, Step, Validator

__version__ = "0.1.0"

#: Marker for plugin hook implementations, as ``pytest.hookimpl`` is for pytest.
hookimpl = pluggy.HookimplMarker("vscen")

__all__ = [
    "Check",
    "Conflict",
    "Feature",
    "HostAction",
    "Scenario",
    "Step",
    "Validator",
    "__version__",
    "hookimpl",
]
