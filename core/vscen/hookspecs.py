"""Hook specifications: the whole surface a vscen plugin can implement.

Every hook takes a ``register`` callback and calls it once per object it contributes, as llm
and tox do. A plugin module implements only the hooks it needs.
"""

import pluggy

hookspec = pluggy.HookspecMarker("vscen")

# -------------------------------------------------------------------------------------------
# features and scenarios
# -------------------------------------------------------------------------------------------


@hookspec
def vscen_register_features(register):
    """Register guest features.

    :param register: call ``register(feature)`` with a :class:`vscen.Feature` for each
        feature this plugin provides.
    """


@hookspec
def vscen_register_scenarios(register):
    """Register scenarios: named bundles of features and default settings.

    :param register: call ``register(scenario)`` with a :class:`vscen.Scenario` for each
        scenario this plugin provides.
    """


# -------------------------------------------------------------------------------------------
# checks
# -------------------------------------------------------------------------------------------


@hookspec
def vscen_register_validators(register):
    """Register validators of the host or of the built domain.

    :param register: call ``register(validator)`` with a :class:`vscen.Validator` for each
        check this plugin provides.
    """


# -------------------------------------------------------------------------------------------
# host preparation
# -------------------------------------------------------------------------------------------


@hookspec
def vscen_register_host_actions(register):
    """Register host actions: preparations of the host with plan, apply and undo.

    :param register: call ``register(action)`` with a :class:`vscen.HostAction` for each
        action this plugin provides.
    """


# -------------------------------------------------------------------------------------------
# what plugins need from the core: settings, host facts, commands
# -------------------------------------------------------------------------------------------


@hookspec
def vscen_register_settings(register):
    """Register settings: options of ``vscen run``, config-file keys and shell keys.

    :param register: call ``register(setting)`` with a :class:`vscen.Setting` for each
        setting this plugin reads from ``ctx.settings``.
    """


@hookspec
def vscen_register_facts(register):
    """Register host fact providers, run once at the facts stage and recorded in snapshots.

    :param register: call ``register(provider)`` with a :class:`vscen.FactProvider` for each
        fact this plugin reads from ``ctx.host.fact(name)``.
    """


@hookspec
def vscen_register_commands(register):
    """Register ``vscen`` sub-command groups.

    :param register: call ``register(command)`` with a :class:`vscen.Command` for each
        command group this plugin provides.
    """
