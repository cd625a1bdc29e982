"""What a host needs at boot to run confidential guests, read and written.

Two files, each vscen's own, each written only with ``--prepare-host`` on this machine, each
taken back byte for byte by undo (the file replaced comes back, never text from a journal):

``/etc/modprobe.d/vscen-confidential.conf``
    ``options kvm_amd sev=1 sev_es=1`` (and ``sev_snp=1`` where the kernel's kvm_amd has that
    parameter): KVM's SEV support, off by default in many kernels (sev_es since Linux 5.11).
``/etc/default/grub.d/vscen-confidential.cfg``
    the kernel command line: ``mem_encrypt=on`` on AMD (SME on, which the SEV firmware's
    memory encryption builds on), ``kvm_intel.tdx=1`` on Intel (TDX is off unless asked for).
    GRUB's ``grub-mkconfig`` on Debian and Ubuntu sources ``/etc/default/grub.d/*.cfg`` after
    ``/etc/default/grub``; ``update-grub`` regenerates ``grub.cfg`` after the file is written
    and after it is taken back. Other boot loaders are reported, with the command to run.

Both take effect after a reboot (the module options also on a reload of kvm_amd with no guest
running).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from vscen import (
    HostError,
    UsageError,
    VscenError,
    check_record,
    host_path,
    replace_file,
    restore_file,
)

MODPROBE = "etc/modprobe.d/vscen-confidential.conf"
GRUB_DROPIN = "etc/default/grub.d/vscen-confidential.cfg"
HEADER = ("# Written by vscen ('vscen run --prepare-host') for confidential guests; "
          "'vscen destroy' takes it back.\n")
#: what the kvm_amd options may be set to, as modprobe.d writes them
_ON = {"1", "y", "yes", "on", "true"}


@dataclass(frozen=True)
class Need:
    """What this host lacks at boot: module options and kernel parameters."""

    #: kvm module -> {parameter: "1"} to put in modprobe.d
    options: dict
    #: kernel command-line parameters to add
    cmdline: tuple[str, ...]


def wanted(vendor: str, fact: dict) -> Need:
    """What a host of *vendor* ("amd", "intel") should have, from the ``confidential-host.boot``
    fact: the module options not set persistently to on, the kernel parameters not on the
    command line the host booted with."""
    known = set(fact.get("known") or ())
    persistent = fact.get("modprobe") or {}
    cmdline = (fact.get("cmdline") or "").split()
    options, params = {}, []
    if vendor == "amd":
        for param in ("sev", "sev_es", "sev_snp"):
            name = f"kvm_amd.{param}"
            if param != "sev" and name not in known and (known or param == "sev_snp"):
                continue  # a kernel without SEV-ES or SNP support (or not known to have it)
            if str((persistent.get(name) or {}).get("value", "")).lower() not in _ON:
                options.setdefault("kvm_amd", {})[param] = "1"
        if "mem_encrypt=on" not in cmdline:
            params.append("mem_encrypt=on")
    elif vendor == "intel" and "kvm_intel.tdx" in known and "kvm_intel.tdx=1" not in cmdline:
        params.append("kvm_intel.tdx=1")
    return Need(options=options, cmdline=tuple(params))


def modprobe_text(options: dict, fact: dict) -> str:
    """The whole file: the options vscen wants together with those it keeps from its own file."""
    lines = [HEADER]
    for module in sorted(options):
        merged = {**_own_options(fact, module), **options[module]}
        lines.append(f"options {module} " + " ".join(f"{k}={v}" for k, v in sorted(merged.items())) + "\n")
    return "".join(lines)


def _own_options(fact: dict, module: str) -> dict:
    return {name.split(".", 1)[1]: v["value"] for name, v in (fact.get("modprobe") or {}).items()
            if name.startswith(module + ".") and v.get("file", "").endswith("vscen-confidential.conf")}


def grub_text(params: tuple[str, ...]) -> str:
    return HEADER + f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {" ".join(params)}"\n'


# -- reading ------------------------------------------------------------------------------------

#: an ``options kvm_amd ...`` line (compiled by ``re`` when first used: on this machine only)
_OPTIONS = r"^\s*options\s+(kvm_amd|kvm_intel)\s+(.*)$"


def read_modprobe() -> dict:
    """``{"kvm_amd.sev": {"value": "1", "file": "/etc/modprobe.d/x.conf"}}`` from the ``options``
    lines of /etc/modprobe.d/*.conf, in the order modprobe reads them (by name; the last wins)."""
    found = {}
    folder = host_path("etc/modprobe.d")
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".conf"))
    except OSError:
        return found
    for name in names:
        try:
            text = (folder / name).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            m = re.match(_OPTIONS, line.split("#", 1)[0])
            if not m:
                continue
            for word in m.group(2).split():
                key, sep, value = word.partition("=")
                if sep:
                    found[f"{m.group(1)}.{key}"] = {"value": value, "file": f"/etc/modprobe.d/{name}"}
    return found


def known_params() -> list[str]:
    """The kvm_amd/kvm_intel parameters this kernel has: sysfs where the module is loaded, else
    what ``modinfo`` says of the module file."""
    known = []
    for module in ("kvm_amd", "kvm_intel"):
        folder = host_path(f"sys/module/{module}/parameters")
        if folder.is_dir():
            known += [f"{module}.{p}" for p in sorted(os.listdir(folder))]
        elif str(host_path("")) == "/" and shutil.which("modinfo"):  # the real machine, not a test tree
            proc = subprocess.run(["modinfo", "-F", "parm", module], capture_output=True, text=True, check=False)
            if proc.returncode == 0:
                known += [f"{module}.{line.split(':', 1)[0]}" for line in proc.stdout.splitlines() if ":" in line]
    return known


def read_bootloader() -> dict:
    """Which boot loader configuration vscen can write the kernel command line to."""
    grub = host_path("etc/default/grub")
    if grub.is_file():
        mkconfig = _find("grub-mkconfig") or _find("grub2-mkconfig")
        dropins = False
        if mkconfig:
            try:
                dropins = "default/grub.d" in open(mkconfig, encoding="utf-8", errors="replace").read()
            except OSError:
                pass
        return {"kind": "grub", "dropins": dropins, "update": _find("update-grub") or "",
                "grubby": _find("grubby") or ""}
    if host_path("etc/kernel/cmdline").is_file():
        return {"kind": "kernel-install"}
    return {"kind": ""}


def _find(program: str) -> str | None:
    return shutil.which(program, path=os.pathsep.join(
        str(host_path(d)) for d in ("usr/sbin", "usr/bin", "sbin", "bin")))


def advice(bootloader: dict, params: tuple[str, ...]) -> str:
    """How to add *params* where vscen does not write the boot loader's configuration."""
    words = " ".join(params)
    kind = bootloader.get("kind")
    if kind == "grub" and bootloader.get("grubby"):
        return f"run 'grubby --update-kernel=ALL --args=\"{words}\"'"
    if kind == "grub":
        return (f"add '{words}' to GRUB_CMDLINE_LINUX in /etc/default/grub and regenerate grub.cfg "
                "(grub2-mkconfig -o /boot/grub2/grub.cfg)")
    if kind == "kernel-install":
        return f"add '{words}' to /etc/kernel/cmdline and reinstall the kernels (kernel-install add-all)"
    return f"add '{words}' to the kernel command line in the boot loader's configuration"


# -- writing and taking back --------------------------------------------------------------------


def update_grub(where: str) -> None:
    """Regenerate grub.cfg; a failure is the step's failure (its file is put back first)."""
    program = _find("update-grub")
    if program is None:
        raise HostError(f"{where}: update-grub is not installed: grub.cfg cannot be regenerated")
    proc = subprocess.run([program], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise HostError(f"{where}: update-grub failed (exit {proc.returncode}): {last}")


def write(kind: str, text: str, connection) -> dict:
    """Write vscen's file of *kind* ("modprobe", "grub"); for GRUB regenerate grub.cfg, putting
    the file back when that fails. Returns the journal record."""
    from vscen import host_identity

    path = host_path(MODPROBE if kind == "modprobe" else GRUB_DROPIN)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "path": str(path), **replace_file(path, text), "host": host_identity(connection)}
    if kind == "grub":
        try:
            update_grub("confidential host")
        except VscenError:
            undo(connection, record, regenerate=False)
            raise
    return record


def undo(connection, record: dict, regenerate: bool = True) -> None:
    """Remove the file vscen wrote, or put back the one it replaced: only while it is still the
    one vscen wrote, on the machine where it did; then regenerate grub.cfg for the GRUB file."""
    what = "confidential host"
    check_record(record, {"kind": str}, what)
    if record["kind"] not in ("modprobe", "grub"):
        raise UsageError(f"{what}: {record['kind']!r} is not a file vscen writes (modprobe, grub); not touched")
    own = host_path(MODPROBE if record["kind"] == "modprobe" else GRUB_DROPIN)
    if not restore_file(connection, record, own, what, "vscen-confidential.c*"):
        return
    if record["kind"] == "grub" and regenerate:
        update_grub(what)
