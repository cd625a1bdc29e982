"""Host enablement for confidential guests: what an AMD SEV or Intel TDX host needs at boot.

- ``confidential-host`` (feature, in the secure-vm scenario): names the host action below and
  KSM off (``ksm-off``, applied with ``--tune-host``): no page of a confidential guest is
  merged or shared with another guest.
- ``confidential-host`` (host action): on AMD, ``options kvm_amd sev=1 sev_es=1`` (and
  ``sev_snp=1`` where the kernel's kvm_amd has it) in ``/etc/modprobe.d/vscen-confidential.conf``
  unless modprobe.d already turns them on, and ``mem_encrypt=on`` on the kernel command line
  unless the host booted with it; on Intel, ``kvm_intel.tdx=1`` on the command line where the
  kernel knows TDX. The command line goes into ``/etc/default/grub.d/vscen-confidential.cfg``
  and grub.cfg is regenerated with ``update-grub``, where GRUB reads such drop-ins (Debian,
  Ubuntu); elsewhere the plan says which command adds it. Applied only with ``--prepare-host``,
  on this machine (a remote host or a recorded one gets the plan as notes); every change is
  shown in the plan first, takes effect after a reboot, and undo (``vscen destroy``) puts the
  previous files back byte for byte. On a host that offers no launch security yet (the
  ``confidential-computing`` check fails), ``--prepare-host`` prepares the host alone: no guest
  is built, and the same command run again after the reboot builds it.
- ``confidential-host.boot`` (fact): the kvm options modprobe.d sets, the parameters the kernel
  has, the command line it booted with, and the boot loader -- read on the host itself.
"""

from __future__ import annotations

from vscen import FactProvider, Feature, HostAction, HostError, Setting, Step, hookimpl, on_this_machine

FACT = "confidential-host.boot"


def read_fact(probe):
    """The boot side of this machine; None for a remote host (vscen reads no remote files)."""
    if not probe.local:
        return None
    from vscen import host_path
    from vscen_confidential_host import boot

    try:
        cmdline = host_path("proc/cmdline").read_text().strip()
    except (OSError, UnicodeDecodeError):
        cmdline = ""
    return {"modprobe": boot.read_modprobe(), "known": boot.known_params(), "cmdline": cmdline,
            "bootloader": boot.read_bootloader()}


def _vendor(host) -> str:
    vendor = (host.cpu_vendor or "").lower()
    return "amd" if vendor.startswith("amd") else "intel" if vendor.startswith("intel") else ""


def plan(ctx) -> list[Step]:
    if not ctx.has("confidential-host"):
        return []
    vendor, fact = _vendor(ctx.host), ctx.host.fact(FACT)
    if not vendor:
        return []  # the confidential-computing check says what such a host lacks
    if fact is None:
        where = ctx.uri or "the host"
        ctx.note(f"confidential host: {where}: boot configuration not known (vscen reads it on this "
                 "machine only); for confidential guests it needs "
                 + ("'options kvm_amd sev=1 sev_es=1' in /etc/modprobe.d and 'mem_encrypt=on' on the "
                    "kernel command line" if vendor == "amd" else "'kvm_intel.tdx=1' on the kernel command line"))
        return []
    from vscen_confidential_host import boot  # here: the boot side is read on this machine only

    need = boot.wanted(vendor, fact)
    if not need.options and not need.cmdline:
        ctx.note("confidential host: the kvm options and the kernel command line are set for "
                 "confidential guests: unchanged")
        return []
    changes = _changes(ctx, need, fact)
    real = on_this_machine(ctx.connection)
    applied = real and ctx.settings.prepare_host
    if not applied:
        why = ("pass --prepare-host to apply" if real
               else f"{ctx.uri or 'no connection'} is not this machine: do it there")
        for description, _kind, _text in changes:
            ctx.note(f"confidential host: would {description} ({why})")
    for line in _advice(need, fact):
        ctx.note(line)
    if not applied:
        return []
    ctx.note("confidential host: the changes take effect after a reboot of this host")
    return [_step(description, kind, text, ctx.connection) for description, kind, text in changes]


def prepares(ctx) -> tuple[str, ...]:
    """The host check this action's steps address in this run: ``confidential-computing`` (the
    host offers no launch security yet) where it will write what the host lacks at boot."""
    from vscen_confidential_host import boot

    vendor, fact = _vendor(ctx.host), ctx.host.fact(FACT)
    if not (vendor and fact is not None and ctx.settings.prepare_host and on_this_machine(ctx.connection)):
        return ()
    need = boot.wanted(vendor, fact)
    return ("confidential-computing",) if need.options or need.cmdline else ()


def _changes(ctx, need, fact) -> list[tuple[str, str, str]]:
    """(description, kind, text) of each file to write."""
    from vscen import host_path
    from vscen_confidential_host import boot

    out = []
    if need.options:
        text = boot.modprobe_text(need.options, fact)
        _refuse_others(ctx, host_path(boot.MODPROBE), text)
        words = "; ".join(f"options {m} " + " ".join(f"{k}={v}" for k, v in sorted(o.items()))
                          for m, o in sorted(need.options.items()))
        out.append((f"write /{boot.MODPROBE}: {words} (takes effect after reboot)", "modprobe", text))
    loader = fact.get("bootloader") or {}
    if need.cmdline and loader.get("kind") == "grub" and loader.get("dropins") and loader.get("update"):
        text = boot.grub_text(need.cmdline)
        _refuse_others(ctx, host_path(boot.GRUB_DROPIN), text)
        out.append((f"write /{boot.GRUB_DROPIN}: kernel parameters {' '.join(need.cmdline)}, then "
                    "update-grub (takes effect after reboot)", "grub", text))
    return out


def _refuse_others(ctx, path, text: str) -> None:
    from vscen import ExistsError
    from vscen_confidential_host import boot

    try:
        old = path.read_text() if path.exists() else None
    except OSError as exc:
        raise HostError(f"confidential host: cannot read {path} ({exc.strerror})") from None
    if old is not None and not old.startswith(boot.HEADER) and not ctx.force:
        message = f"confidential host: {path} exists and was not written by vscen (use --force to replace it)"
        raise ExistsError(message, [message])


def _advice(need, fact) -> list[str]:
    from vscen_confidential_host import boot

    loader = fact.get("bootloader") or {}
    lines = []
    if need.cmdline and not (loader.get("kind") == "grub" and loader.get("dropins") and loader.get("update")):
        lines.append(f"confidential host: vscen cannot write this boot loader's configuration: "
                     f"{boot.advice(loader, need.cmdline)}, then reboot")
    for name, v in sorted((fact.get("modprobe") or {}).items()):
        module, _, param = name.partition(".")
        other = v["file"].rsplit("/", 1)[-1]
        if param in need.options.get(module, {}) and other != "vscen-confidential.conf":
            wins = "vscen's" if other < "vscen-confidential.conf" else "that"
            lines.append(f"confidential host: {v['file']} sets {name}={v['value']}; modprobe reads the "
                         f"files by name and the last one wins, here {wins} file: remove the line there")
    return lines


def _step(description: str, kind: str, text: str, connection) -> Step:
    def do():
        from vscen_confidential_host import boot

        return boot.write(kind, text, connection)

    return Step(description, do)


def undo(connection, record: dict) -> None:
    from vscen_confidential_host import boot

    boot.undo(connection, record)


CONFIDENTIAL_HOST = HostAction(
    name="confidential-host",
    summary="enable SEV/TDX at boot: kvm_amd options in modprobe.d, mem_encrypt=on or "
            "kvm_intel.tdx=1 on the kernel command line (--prepare-host)",
    details=(
        "Writes /etc/modprobe.d/vscen-confidential.conf (options kvm_amd sev=1 sev_es=1, and "
        "sev_snp=1 where the kernel has it) and /etc/default/grub.d/vscen-confidential.cfg (then "
        "update-grub) for what the host lacks, only with --prepare-host and only on this "
        "machine; each takes effect after a reboot. Other boot loaders get the command to run. "
        "Undo puts the previous files back byte for byte (and runs update-grub again)."
    ),
    plan=plan,
    undo=undo,
    prepares=prepares,
)

FEATURE = Feature(
    name="confidential-host",
    summary="the host enabled for confidential guests at boot (SEV/TDX module options, kernel "
            "command line) and KSM off",
    category="host tuning",
    implies=("ksm-off",),
    host_actions=("confidential-host",),
    facts=(FACT,),
    details="Host action confidential-host (--prepare-host, local host; takes effect after a "
            "reboot): options kvm_amd sev=1 sev_es=1 [sev_snp=1] in /etc/modprobe.d, "
            "mem_encrypt=on (AMD) or kvm_intel.tdx=1 (Intel) on the kernel command line through "
            "GRUB's /etc/default/grub.d. Implies ksm-off: no page of a confidential guest is "
            "merged with another guest's.",
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    register(FEATURE)


@hookimpl
def vscen_register_host_actions(register):
    register(CONFIDENTIAL_HOST)


@hookimpl
def vscen_register_settings(register):
    register(Setting(name="prepare_host", flag=True, default=False, example="yes",
                     help="Apply the host enablement confidential guests need at boot (kvm module "
                          "options, kernel command line) on this host; takes effect after a reboot, "
                          "undone by 'vscen destroy'."))


@hookimpl
def vscen_register_facts(register):
    register(FactProvider(
        name=FACT,
        summary="read on the host itself: the kvm_amd/kvm_intel options /etc/modprobe.d sets, the "
                "parameters the kernel has, the command line it booted with, the boot loader",
        read=read_fact,
        example={"modprobe": {"kvm_amd.sev": {"value": "1", "file": "/etc/modprobe.d/kvm.conf"}},
                 "known": ["kvm_amd.sev", "kvm_amd.sev_es", "kvm_amd.sev_snp"],
                 "cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet",
                 "bootloader": {"kind": "grub", "dropins": True, "update": "/usr/sbin/update-grub", "grubby": ""}},
    ))
