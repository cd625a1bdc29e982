"""Plan what a run changes: host actions, the XML file, the libvirt domain, its start (or,
for a transient guest, its creation: started from the XML, never defined).

Planning reads but never writes: existing things that differ are refused here (without
``--force``) so that a refused run has touched nothing, and things already in place are
listed as unchanged, so that running the same command twice changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vscen.errors import ExistsError, LibvirtError, PluginError, VscenError
from vscen.model import Step
from vscen.steps import METADATA_NS, digest  # noqa: F401 -- METADATA_NS: re-exported
from vscen.steps import stored_digest as _stored_digest


@dataclass
class Plan:
    """The steps that prepare the host and define the guest, and what is left unchanged."""

    steps: list[Step] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    xml_path: Path | None = None
    #: the guest's directory: domain XML and journal
    out_dir: Path | None = None


def default_output_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vscen"


def output_dir(output: Path | None, config: Path | None = None) -> Path:
    """--output, else the config files' ``output``, else the XDG data directory."""
    from vscen.config import config_value

    value = output or config_value("output", config)
    return Path(value).expanduser() if value else default_output_dir()


def make_plan(result, output: Path | None, *, force: bool = False, start: bool = False,
              define: bool = True) -> Plan:
    from vscen import steps

    ctx = result.ctx
    ctx.force = force or ctx.force
    plan = Plan()
    refused: list[str] = []
    out_dir = Path(os.path.abspath((output or default_output_dir()) / ctx.settings.name))
    plan.out_dir = out_dir
    if not out_dir.exists():
        plan.steps.append(steps.make_dirs(out_dir))

    after_define: list[Step] = []  # steps of actions that need the domain defined, not started
    if result.prepare_only:  # no guest: the host's preparation alone (HostAction.prepares)
        _plan_actions(ctx, result.prepare_only, plan.steps, plan.steps, refused)
        if refused:
            raise ExistsError("; ".join(refused), refused, summary="the run would replace what exists")
        return plan
    _plan_actions(ctx, ctx.resolution.host_actions(), plan.steps, after_define, refused)

    path = out_dir / "domain.xml"
    plan.xml_path = path
    if path.exists():
        try:
            same = path.read_text() == result.xml
        except OSError as exc:
            raise ExistsError(f"output: {path} exists and cannot be read ({exc.strerror})") from None
        if same:
            plan.unchanged.append(f"{path} is up to date")
        elif ctx.force:
            plan.steps.append(steps.write_file(path, result.xml))
        else:
            refused.append(f"output: {path} exists with other content (use --force to replace it)")
    else:
        plan.steps.append(steps.write_file(path, result.xml))

    conn = result.connection
    if define and conn is not None and ctx.settings.transient:
        # never defined: the after-define steps come before it is created (and started)
        plan.steps.extend(after_define)
        _plan_transient(plan, result, refused)
    elif define and conn is not None:
        existing = _lookup(conn, ctx.settings.name)
        redefine = True
        validated = _validated_here(result)
        if existing is None:
            plan.steps.append(steps.define(conn, result.xml, None, validated=validated))
        elif _stored_digest(existing) == digest(result.xml):
            redefine = False
            plan.unchanged.append(f"domain {ctx.settings.name} on {conn.uri} is up to date")
        elif ctx.force:
            plan.steps.append(steps.define(conn, result.xml, existing, validated=validated))
        else:
            refused.append(
                f"domain: '{ctx.settings.name}' exists on {conn.uri} with another definition "
                "(use --force to redefine it, or --name to choose another name)"
            )
        plan.steps.extend(after_define)
        if start:
            if not redefine and existing.isActive():
                plan.unchanged.append(f"domain {ctx.settings.name} is running")
            else:
                plan.steps.append(steps.start(conn, ctx.settings.name))
    else:
        plan.steps.extend(after_define)
    if refused:
        raise ExistsError("; ".join(refused), refused, summary="the run would replace what exists")
    return plan


def _plan_actions(ctx, names, before: list, after_define: list, refused: list[str]) -> None:
    """The steps of host actions *names*, each into *before* or *after_define*; what exists
    and differs goes to *refused*."""
    for name in names:
        action = ctx.registry.host_actions[name]
        into = after_define if action.after_define else before
        try:
            for step in action.plan(ctx) or ():
                into.append(Step(step.description, step.do, owner=name))
        except ExistsError as exc:
            refused.extend(exc.problems or [str(exc)])
        except VscenError:
            raise  # the plugin refuses, with a message for the user
        except Exception as exc:  # a bug in the plugin: say whose
            raise PluginError(f"host action '{name}' of {ctx.registry.describe(name, 'host-actions')} failed "
                              f"in plan: {type(exc).__name__}: {exc}") from exc


def _validated_here(result) -> bool:
    """Whether libvirt need not validate the XML again: vscen checked it against the schema
    files of this machine, whose libvirtd the connection reaches."""
    from vscen.host.connect import on_this_machine

    return result.schema_checked and on_this_machine(result.connection)


def _plan_transient(plan: Plan, result, refused: list[str]) -> None:
    """A transient guest is created (and so started) from the XML, never defined; the same
    command again finds it running with the same XML and changes nothing."""
    from vscen import steps

    conn, name = result.connection, result.ctx.settings.name
    existing = _lookup(conn, name)
    if existing is None:
        plan.steps.append(steps.create_transient(conn, result.xml, validated=_validated_here(result)))
    elif not existing.isPersistent() and _stored_digest(existing, live=True) == digest(result.xml):
        plan.unchanged.append(f"transient domain {name} on {conn.uri} is running and up to date")
    else:
        what = "is defined" if existing.isPersistent() else "runs with another definition"
        refused.append(f"domain: '{name}' {what} on {conn.uri}; a transient guest is only created where no "
                       "domain has its name (--force does not replace it): give --name, or remove that one")


def _lookup(conn, name: str):
    import libvirt

    try:
        return conn.conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise LibvirtError(f"{conn.uri}: cannot look up domain '{name}': {exc.get_error_message()}") from None
