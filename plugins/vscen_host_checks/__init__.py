"""Host checks: does the host offer what the chosen features need, before anything is built?

Each validator reads the host facts (libvirt's capabilities and domain capabilities) and says
pass, warn or fail with what it saw and how to fix it. Facts that libvirt does not report
(whether swtpm or virtiofsd is installed) are the facts' local part, read on the host itself
(a live local host, or a snapshot of one); where the facts have none (a remote host, a recorded
host without it, the embedded driver's reference host) the check says it does not know, rather
than looking at this machine. The launch-security check (``confidential-computing``) belongs
to the launch-security plugin, which owns the launch-security types.
"""

from __future__ import annotations

from vscen import Check, Validator, hookimpl


def is_local(ctx) -> bool:
    """Whether the guest's host is this machine (a URI without a host part, or none)."""
    from urllib.parse import urlparse

    return not ctx.uri or not urlparse(ctx.uri).hostname


def _unknown(ctx) -> str:
    """Why a program of the host cannot be looked for: the facts have no local part."""
    if not is_local(ctx):
        return f"{ctx.uri} is a remote host"
    return f"{ctx.host.source} does not say which programs the host has (only a snapshot of a local host does)"


# -- kvm ----------------------------------------------------------------------------------------


def check_kvm(ctx):
    if ctx.host.kvm:
        return [Check("pass", "the host offers KVM (hardware virtualisation)")]
    return [Check(
        "warn", "the host offers no KVM: the guest runs under TCG emulation, many times slower",
        fix="enable VT-x (Intel) or AMD-V/SVM in the firmware setup, load kvm_intel or kvm_amd, "
            "and check that /dev/kvm exists and libvirt can open it (inside a VM: enable nested "
            "virtualisation on its host)",
    )]


def _names(types) -> str:
    return ", ".join(types) if types else "none"


# -- uefi-firmware --------------------------------------------------------------------------


def check_uefi_firmware(ctx):
    host = ctx.host
    if not host.has_domcaps:
        return [Check("warn", "the host's domain capabilities are unknown: cannot tell whether "
                              "UEFI firmware is installed",
                      fix="give the host's domain capabilities (virsh domcapabilities) too")]
    if "efi" in host.firmware:
        return [Check("pass", "the host offers UEFI firmware (efi in its domain capabilities)")]
    if host.arch == "aarch64":
        packages = "qemu-efi-aarch64 (Debian/Ubuntu), edk2-aarch64 (Fedora/RHEL)"
    else:
        packages = "ovmf (Debian/Ubuntu), edk2-ovmf (Fedora/RHEL), qemu-ovmf-x86_64 (openSUSE)"
    return [Check(
        "fail", f"the host's domain capabilities list no efi firmware (only "
                f"{_names(sorted(host.firmware))})",
        fix=f"install the UEFI firmware for QEMU: {packages}; then restart libvirt",
    )]


# -- tpm-emulator ---------------------------------------------------------------------------


def check_tpm_emulator(ctx):
    host = ctx.host
    if host.has_domcaps and "tpm" not in host.supported:
        return [Check("fail", "the host offers no TPM device (tpm not supported in its domain "
                              "capabilities)",
                      fix="use a QEMU built with TPM support (tpm-crb/tpm-tis), or drop the tpm "
                          "feature (--feature -tpm)")]
    if not host.offers("tpm.backendModel", "emulator"):
        backends = _names(sorted(host.enums.get("tpm.backendModel", ())))
        return [Check("fail", f"the host offers no emulator TPM backend (only {backends})",
                      fix="install swtpm and restart libvirt so it offers the emulator backend, "
                          "or drop the tpm feature (--feature -tpm)")]
    checks = [Check("pass", "the host offers the emulator TPM backend")]
    if ctx.host.local is None:
        checks.append(Check("skip", f"swtpm not looked for: {_unknown(ctx)}"))
        return checks
    path = ctx.host.local.swtpm  # read on the host itself (live, or a snapshot of it)
    if path:
        checks.append(Check("pass", f"swtpm is installed ({path})"))
    else:
        checks.append(Check("warn", "swtpm is not installed: libvirt needs it to emulate the TPM",
                            fix="install swtpm and swtpm-tools (apt/dnf install swtpm swtpm-tools)"))
    return checks


# -- hugepages ------------------------------------------------------------------------------


def _free(cells, size: int) -> int:
    return sum(c.free(size) for c in cells)


def check_hugepages(ctx):
    host, memory = ctx.host, ctx.settings.memory
    cells = host.cells
    sizes = sorted((s for s in host.page_sizes if s > 4), reverse=True)
    for size in sizes:
        need = -(-memory // size)
        free = _free(cells, size)
        if free >= need:
            return [Check("pass", f"huge pages of {size} KiB: the host has {free} free, the guest "
                                  f"needs {need} for {memory // 1024} MiB")]
    # 2 MiB pages can be reserved at run time; 1 GiB pages usually only at boot
    size = 2048 if 2048 in sizes or not sizes else sizes[-1]
    need = -(-memory // size)
    reserved = sum(c.pages.get(size, 0) for c in cells)
    pages = reserved - _free(cells, size) + need  # nr_hugepages is the total, in use or not
    seen = "; ".join(f"{s} KiB: {_free(cells, s)} free" for s in sizes) or "no huge page sizes known"
    if ctx.settings.get("hugepages", "auto") in ("reserve", "persistent"):
        return [Check("pass", f"not enough free huge pages for {memory // 1024} MiB ({seen}): "
                              f"vscen reserves them (--hugepages {ctx.settings.get('hugepages', 'auto')})")]
    # 1 GiB pages seldom come free at run time: the kernel reserves them best at boot
    boot = (f" (as root), or at boot: 'hugepagesz={size // 1048576}G hugepages={pages}' on the "
            "kernel command line" if size >= 1048576 else " (as root)")
    return [Check(
        "warn",
        f"the host has not enough free huge pages for {memory // 1024} MiB ({seen}): the guest "
        "gets normal pages",
        fix=f"reserve {pages} pages of {size} KiB: echo {pages} > "
            f"/sys/kernel/mm/hugepages/hugepages-{size}kB/nr_hugepages{boot}; or let vscen "
            "reserve them: vscen run --hugepages reserve (--hugepages persistent keeps them "
            "across reboots)",
    )]


# -- virtiofsd ------------------------------------------------------------------------------


def check_virtiofsd(ctx):
    local = ctx.host.local
    if local is None:
        return [Check("skip", f"virtiofsd not looked for: {_unknown(ctx)}")]
    path = local.virtiofsd
    if path:
        return [Check("pass", f"virtiofsd is installed ({path})")]
    return [Check(
        "warn", "virtiofsd is not installed: libvirt cannot share host directories with virtiofs "
                "(looked in PATH and where distributions install it)",
        fix="install virtiofsd (apt/dnf install virtiofsd; older distributions ship it with QEMU: "
            "qemu-system-common or qemu-kvm-common)",
    )]


VALIDATORS = (
    Validator(name="kvm", summary="the host offers KVM", check=check_kvm),
    Validator(name="uefi-firmware", summary="the host has UEFI firmware for QEMU",
              check=check_uefi_firmware),
    Validator(name="tpm-emulator", summary="the host can emulate a TPM (swtpm)",
              check=check_tpm_emulator),
    Validator(name="hugepages", summary="the host has enough free huge pages for the guest",
              check=check_hugepages),
    Validator(name="virtiofsd", summary="virtiofsd is installed", check=check_virtiofsd),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_validators(register):
    for v in VALIDATORS:
        register(v)
