"""Host checks: does the host offer what the chosen features need, before anything is built?

Each validator reads the host facts (libvirt's capabilities and domain capabilities) and says
pass, warn or fail with what it saw and how to fix it. Facts that libvirt does not report
(whether swtpm or virtiofsd is installed) can only be read on the host itself: from the facts'
local part where they have one (a live local host, or a snapshot of one), else on this machine
when the connection is local. Where the facts carry the kernel's side (``ctx.host.local``:
KVM module parameters, ``/dev/sev``, the kernel command line), confidential-computing reports it
too, with the exact module option or kernel parameter to set; its status follows the domain
capabilities (what libvirt will use): fail where they offer nothing usable, else warn.
"""

from __future__ import annotations

import os
import shutil

from vscen import Check, Validator, hookimpl

#: strongest first: SNP and TDX protect memory integrity too, SEV-ES the registers, SEV memory only
LAUNCH_SECURITY = ("sev-snp", "tdx", "sev-es", "sev")
#: the first libvirt release that accepts each <launchSecurity type=...>
LIBVIRT_SINCE = {"sev": "4.5", "sev-es": "4.5", "sev-snp": "10.5", "tdx": "11.6"}
SWTPM_PATHS = ("/usr/bin/swtpm",)
#: distributions install virtiofsd outside PATH
VIRTIOFSD_PATHS = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")

ENABLE_SEV = (
    "Enable SEV (and SME, SEV-ES) in the host's firmware/BIOS setup; boot the host kernel with "
    "'mem_encrypt=on kvm_amd.sev=1 kvm_amd.sev_es=1'; check that "
    "/sys/module/kvm_amd/parameters/sev reads Y and /dev/sev exists; then restart libvirt "
    "(virtqemud or libvirtd) so its domain capabilities list sev"
)
ENABLE_TDX = (
    "Enable TDX (with TME/MKTME) in the host's firmware/BIOS setup; boot a TDX-capable host "
    "kernel with 'kvm_intel.tdx=1'; check that /sys/module/kvm_intel/parameters/tdx reads Y; "
    "then restart libvirt (virtqemud or libvirtd) so its domain capabilities list tdx"
)


def is_local(ctx) -> bool:
    """Whether the guest's host is this machine (a URI without a host part, or none)."""
    from urllib.parse import urlparse

    return not ctx.uri or not urlparse(ctx.uri).hostname


def find_program(name: str, paths: tuple[str, ...]) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)), None)


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


# -- confidential-computing -----------------------------------------------------------------


def _names(types) -> str:
    return ", ".join(types) if types else "none"


def _domcaps_side(ctx):
    offered = [t for t in LAUNCH_SECURITY if t in ctx.host.launch_security]
    known = [t for t in LAUNCH_SECURITY if ctx.support.knows(t)]
    usable = [t for t in offered if t in known]
    if usable:
        return [Check("pass", f"the host offers {_names(offered)} and the installed libvirt "
                              f"knows {_names(known)}: using {usable[0]}")]
    if offered:
        # the host is ready; only the libvirt here is too old to write or check the XML
        need = sorted(offered, key=lambda t: [int(p) for p in LIBVIRT_SINCE[t].split(".")])[0]
        where = "" if ctx.support.schema else " (its schema was not found)"
        return [Check(
            "fail",
            f"the host offers {_names(offered)} but the installed libvirt knows "
            f"{_names(known)}{where}",
            fix=f"install libvirt >= {LIBVIRT_SINCE[need]} (the first release with launch security "
                f"type '{need}') on this machine, from the distribution's backports or upstream",
        )]
    vendor = ctx.host.cpu_vendor.lower()
    if vendor.startswith("amd"):
        fix = ENABLE_SEV
    elif vendor.startswith("intel"):
        fix = ENABLE_TDX
    else:
        fix = ("Confidential guests need an AMD EPYC host with SEV or an Intel Xeon host with "
               f"TDX. AMD: {ENABLE_SEV}. Intel: {ENABLE_TDX}")
    if not ctx.host.kvm:
        fix = "Confidential guests need KVM, and this host offers only TCG emulation. " + fix
    return [Check(
        "fail",
        f"the host offers no launch security (no SEV, SEV-ES, SEV-SNP or TDX in its domain "
        f"capabilities; CPU vendor {ctx.host.cpu_vendor or 'unknown'}); the installed libvirt "
        f"knows {_names(known)}",
        fix=fix,
    )]


def check_confidential_computing(ctx):
    checks = _domcaps_side(ctx)
    local = ctx.host.local
    if local is None:
        return checks
    # the kernel's side explains the domcaps; its status follows them: where they offer
    # nothing usable a kernel problem is a failure too, else a warning
    bad = "fail" if checks[0].status == "fail" else "warn"
    vendor = _vendor(ctx.host, local)
    if vendor == "amd":
        return checks + [_amd_kernel_side(ctx, local, bad)]
    if vendor == "intel":
        return checks + [_intel_kernel_side(ctx, local, bad)]
    return checks + [Check(
        bad, f"kernel: neither kvm_amd nor kvm_intel is loaded ({_loaded(local)}): no launch "
             "security without hardware virtualisation",
        fix="on AMD: 'options kvm_amd sev=1 sev_es=1' in /etc/modprobe.d/kvm_amd.conf, "
            "'modprobe kvm_amd', boot with 'mem_encrypt=on'; on Intel: 'options kvm_intel tdx=1' "
            "in /etc/modprobe.d/kvm_intel.conf, 'modprobe kvm_intel'; enable SEV or TDX in the "
            "firmware/BIOS setup first")]


def _vendor(host, local) -> str:
    vendor = host.cpu_vendor.lower()
    if vendor.startswith("amd") or "kvm_amd" in local.modules:
        return "amd"
    if vendor.startswith("intel") or "kvm_intel" in local.modules:
        return "intel"
    return ""


def _loaded(local) -> str:
    return "loaded KVM modules: " + (", ".join(local.modules) or "none")


def _flag(value) -> str:
    return {True: "Y", False: "N", None: "unset"}[value]


def _amd_kernel_side(ctx, local, bad: str) -> Check:
    """kvm_amd's sev, sev_es, sev_snp parameters and /dev/sev: what the kernel gives QEMU."""
    sev, es, snp = (local.param(f"kvm_amd.{p}") for p in ("sev", "sev_es", "sev_snp"))
    listed = ctx.host.sev is not None
    if "kvm_amd" not in local.modules:
        return Check(bad, f"kernel: kvm_amd is not loaded ({_loaded(local)}): no SEV",
                     fix="enable AMD-V/SVM and SEV in the firmware/BIOS setup; put 'options "
                         "kvm_amd sev=1 sev_es=1' in /etc/modprobe.d/kvm_amd.conf and run "
                         "'modprobe kvm_amd'; boot with 'mem_encrypt=on'; then restart libvirt")
    seen = (f"kernel: kvm_amd sev={_flag(sev)} sev_es={_flag(es)} sev_snp={_flag(snp)}, "
            f"/dev/sev {'present' if local.sev_device else 'absent'}")
    if not sev or not local.sev_device:
        want = "sev=1 sev_es=1" + (" sev_snp=1" if ctx.support.knows("sev-snp") else "")
        boot = "" if local.cmdline_has("mem_encrypt=on") else (
            "; add 'mem_encrypt=on' to the kernel command line (GRUB_CMDLINE_LINUX in "
            "/etc/default/grub, update-grub, reboot)")
        why = "SEV is off in the kernel" if not sev else "the SEV device /dev/sev is missing"
        if listed:
            why += " although libvirt's domain capabilities list SEV (stale: restart libvirt)"
        return Check(bad, f"{seen}: {why}", fix=(
            f"enable SEV in the firmware/BIOS setup; put 'options kvm_amd {want}' in "
            "/etc/modprobe.d/kvm_amd.conf and reload it (with no guest running: modprobe -r "
            f"kvm_amd && modprobe kvm_amd){boot}; check that /sys/module/kvm_amd/parameters/sev "
            "reads Y and /dev/sev exists; then restart libvirt (virtqemud or libvirtd)"))
    if not listed:
        return Check(bad, f"{seen}: the kernel offers SEV but libvirt's domain capabilities do "
                          "not list it",
                     fix="restart libvirt (virtqemud or libvirtd) so it probes QEMU again; check "
                         "that QEMU was built with SEV support and that the qemu user may open "
                         "/dev/sev")
    if not es:
        return Check("warn", f"{seen}: SEV-ES is off in the kernel, guests get plain SEV (their "
                             "CPU registers are not encrypted)",
                     fix="put 'options kvm_amd sev=1 sev_es=1' in /etc/modprobe.d/kvm_amd.conf "
                         "and reload kvm_amd (or boot with 'kvm_amd.sev_es=1'); then restart "
                         "libvirt")
    if not snp and ctx.support.knows("sev-snp"):
        return Check("warn", f"{seen}: SEV-SNP is off in the kernel, guests get SEV-ES (no memory "
                             "integrity protection)",
                     fix="enable SEV-SNP in the firmware/BIOS setup; put 'options kvm_amd sev=1 "
                         "sev_es=1 sev_snp=1' in /etc/modprobe.d/kvm_amd.conf and reload kvm_amd; "
                         "then restart libvirt")
    return Check("pass", seen)


def _intel_kernel_side(ctx, local, bad: str) -> Check:
    """kvm_intel's tdx parameter."""
    tdx = local.param("kvm_intel.tdx")
    fix = ("enable TDX (with TME/MKTME) in the firmware/BIOS setup and boot a TDX-capable kernel; "
           "put 'options kvm_intel tdx=1' in /etc/modprobe.d/kvm_intel.conf and reload it (with "
           "no guest running: modprobe -r kvm_intel && modprobe kvm_intel), or boot with "
           "'kvm_intel.tdx=1'; check that /sys/module/kvm_intel/parameters/tdx reads Y; then "
           "restart libvirt (virtqemud or libvirtd)")
    if "kvm_intel" not in local.modules:
        return Check(bad, f"kernel: kvm_intel is not loaded ({_loaded(local)}): no TDX",
                     fix="enable VT-x in the firmware/BIOS setup; " + fix)
    seen = f"kernel: kvm_intel tdx={_flag(tdx)}"
    if not tdx:
        why = "TDX is off in the kernel"
        if ctx.host.tdx:
            why += " although libvirt's domain capabilities list TDX (stale: restart libvirt)"
        return Check(bad, f"{seen}: {why}", fix=fix)
    if not ctx.host.tdx:
        return Check(bad, f"{seen}: the kernel offers TDX but libvirt's domain capabilities do not "
                          "list it",
                     fix="restart libvirt (virtqemud or libvirtd) so it probes QEMU again; TDX "
                         "needs QEMU >= 10.1")
    return Check("pass", seen)


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
    if ctx.host.local is not None:  # read on the host itself (live, or a snapshot of it)
        path = ctx.host.local.swtpm
    elif not is_local(ctx):
        checks.append(Check("skip", f"swtpm not looked for: {ctx.uri} is a remote host"))
        return checks
    else:
        path = find_program("swtpm", SWTPM_PATHS)
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
    path = local.virtiofsd if local is not None else find_program("virtiofsd", VIRTIOFSD_PATHS)
    if path:
        return [Check("pass", f"virtiofsd is installed ({path})")]
    return [Check(
        "warn", "virtiofsd is not installed: libvirt cannot share host directories with virtiofs "
                f"(looked in PATH, {', '.join(VIRTIOFSD_PATHS)})",
        fix="install virtiofsd (apt/dnf install virtiofsd; older distributions ship it with QEMU: "
            "qemu-system-common or qemu-kvm-common)",
    )]


VALIDATORS = (
    Validator(name="kvm", summary="the host offers KVM", check=check_kvm),
    Validator(name="confidential-computing",
              summary="the host offers launch security that the installed libvirt knows",
              check=check_confidential_computing),
    Validator(name="uefi-firmware", summary="the host has UEFI firmware for QEMU",
              check=check_uefi_firmware),
    Validator(name="tpm-emulator", summary="the host can emulate a TPM (swtpm)",
              check=check_tpm_emulator),
    Validator(name="hugepages", summary="the host has enough free huge pages for the guest",
              check=check_hugepages),
    Validator(name="virtiofsd", summary="virtiofsd is installed", check=check_virtiofsd,
              local_only=True),
)


@hookimpl
def vscen_register_validators(register):
    for v in VALIDATORS:
        register(v)
