"""vscen: prepare a KVM host and a libvirt guest for a scenario.

Plugin authors need only what this module exports (and ``vscen.testing`` in their tests)::

    from vscen import hookimpl, Feature, Scenario, Validator, HostAction, Step, Conflict, Check
    from vscen import Setting, FactProvider, Command

``hookimpl`` is defined here; the data classes (``vscen.model``) and the helpers below
(errors, sizes, CPU lists, setting defaults, atomic writes...; docs/hooks.md, "Public
helpers", lists them) are imported the first time one is asked for, so that start-up stays
lean (the command line readies what makes defining data classes fast first:
``vscen.cli.codecache``).
"""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations, as ``pytest.hookimpl`` is for pytest.
hookimpl = pluggy.HookimplMarker("vscen")

#: the data classes plugins register, defined in vscen.model (imported on first use)
_MODEL = ("Check", "Command", "Conflict", "FactProvider", "Feature", "HostAction", "Scenario", "Setting",
          "Step", "Validator")

#: public helpers, by name -> the module that defines them (imported on first use)
_LAZY = {
    # errors: raise them with a one-line message naming the field, the value and what is allowed
    "VscenError": "vscen.errors", "UsageError": "vscen.errors", "RulesError": "vscen.errors",
    "HostError": "vscen.errors", "InvalidDomainError": "vscen.errors", "ExistsError": "vscen.errors",
    "LibvirtError": "vscen.errors", "PluginError": "vscen.errors", "raise_all": "vscen.errors",
    # values
    "parse_size": "vscen.settings", "check_path": "vscen.settings", "check_name": "vscen.settings",
    "format_cpulist": "vscen.cpulist", "parse_cpulist": "vscen.cpulist",
    # setting defaults, to tell what the user chose from a default
    "builtin_default": "vscen.defaults", "scenario_defaults": "vscen.defaults", "default_of": "vscen.defaults",
    # files
    "atomic_write": "vscen.files",
    # the libvirt secret of an encrypted disk
    "secret_uuid": "vscen.secrets",
    # host facts: what a fact provider is given; another host's facts from libvirt's XML
    "FactProbe": "vscen.host.facts", "HostFacts": "vscen.host.facts",
    "host_facts_from_xml": "vscen.host.facts", "host_document": "vscen.host.probe",
    # a path of this machine, for a provider reading the local host (tests give a fake tree)
    "host_path": "vscen.host.local", "on_this_machine": "vscen.host.connect",
    # the guests vscen made, and libvirt connections (for plugins' commands)
    "guest_journal": "vscen.guests", "guest_lock": "vscen.guests", "open_connection": "vscen.guests",
    # many guests on many hosts in one process: named hosts, a host's facts read once, a guest
    # rendered for given facts, made and removed through the journalled path of run and destroy
    "NamedHost": "vscen.hosts", "named_hosts": "vscen.hosts", "read_host": "vscen.hosts",
    "render_guest": "vscen.guests", "run_guest": "vscen.guests", "destroy_guest": "vscen.guests",
    "output_dir": "vscen.plan",
    # undo proves what it takes back: record shapes, paths, files, hosts
    "check_record": "vscen.ownership", "safe_path": "vscen.ownership", "file_identity": "vscen.ownership",
    "same_file": "vscen.ownership", "replace_file": "vscen.ownership", "restore_file": "vscen.ownership", "BACKUP_MARK": "vscen.ownership",
    "host_identity": "vscen.ownership", "check_host": "vscen.ownership",
}

__all__ = [
    "Check",
    "Command",
    "Conflict",
    "FactProvider",
    "Feature",
    "HostAction",
    "Scenario",
    "Setting",
    "Step",
    "Validator",
    "__version__",
    "hookimpl",
    *_LAZY,
]


def __getattr__(name: str):
    module = "vscen.model" if name in _MODEL else _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vscen' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODEL) | set(_LAZY))
