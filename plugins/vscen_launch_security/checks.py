"""The launch-security plugin's checks: ``confidential-computing`` (the host offers a type
that the installed libvirt knows; where the facts carry the kernel's side (read on the host
itself: the KVM modules and command line in ``ctx.host.local``, the module parameters and
``/dev/sev`` in this plugin's fact), it says which module option or
kernel parameter to set, its status following the domain capabilities: fail where they offer
nothing usable, else warn) and ``launch-security-platform`` (an x86 confidential guest runs on
q35 with UEFI). Both read the type table of :mod:`vscen_launch_security.types`.
"""

from __future__ import annotations

from vscen import Check
from vscen_launch_security.types import BY_NAME, X86_LIBVIRT_TYPES, host_offers, known_by, label, of_xml, param, pick

#: what names UEFI firmware in a loader's path
UEFI_LOADER = ("ovmf", "edk2", "efi")


def q35(machine: str) -> bool:
    """``q35``, ``pc-q35-8.2`` and the like: the machine types a confidential guest needs."""
    name = machine.removeprefix("pc-")
    return name == "q35" or (name.startswith("q35-") and len(name) > 4)


def path(el) -> str:
    return el.getroottree().getpath(el)


ENABLE_SEV = (
    "Enable SEV (and SME, SEV-ES) in the host's firmware/BIOS setup; boot the host kernel with "
    "'mem_encrypt=on kvm_amd.sev=1 kvm_amd.sev_es=1' (on this machine 'vscen run ... "
    "--prepare-host' writes both for the next boot); check that "
    "/sys/module/kvm_amd/parameters/sev reads Y and /dev/sev exists; then restart libvirt "
    "(virtqemud or libvirtd) so its domain capabilities list sev"
)
ENABLE_TDX = (
    "Enable TDX (with TME/MKTME) in the host's firmware/BIOS setup; boot a TDX-capable host "
    "kernel with 'kvm_intel.tdx=1' (on this machine 'vscen run ... --prepare-host' writes it for "
    "the next boot); check that /sys/module/kvm_intel/parameters/tdx reads Y; "
    "then restart libvirt (virtqemud or libvirtd) so its domain capabilities list tdx"
)



# -- confidential-computing -----------------------------------------------------------------


def _names(types) -> str:
    return ", ".join(types) if types else "none"


def _domcaps_side(ctx):
    offered = host_offers(ctx.host)["offered"]
    offered = [t for t in offered if t in BY_NAME]
    known = known_by(ctx.support)
    usable = [t for t in offered if t in known]
    if usable:
        return [Check("pass", f"the host offers {_names(offered)} and the installed libvirt "
                              f"knows {_names(known)}: using {usable[0]}")]
    if offered:
        # the host is ready; only the libvirt here is too old to write or check the XML
        need = sorted(offered, key=lambda t: [int(p) for p in BY_NAME[t].libvirt_since.split(".")])[0]
        where = "" if ctx.support.schema else " (its schema was not found)"
        return [Check(
            "fail",
            f"the host offers {_names(offered)} but the installed libvirt knows "
            f"{_names(known)}{where}",
            fix=f"install libvirt >= {BY_NAME[need].libvirt_since} (the first release with launch security "
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
    local, fact = ctx.host.local, host_offers(ctx.host)
    if local is None or fact.get("kernel") is None:
        return checks
    # the kernel's side explains the domcaps; its status follows them: where they offer
    # nothing usable a kernel problem is a failure too, else a warning
    bad = "fail" if checks[0].status == "fail" else "warn"
    vendor = _vendor(ctx.host, local)
    if vendor == "amd":
        return checks + [_amd_kernel_side(ctx, local, fact, bad)]
    if vendor == "intel":
        return checks + [_intel_kernel_side(ctx, local, fact, bad)]
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


def _amd_kernel_side(ctx, local, fact, bad: str) -> Check:
    """kvm_amd's sev, sev_es, sev_snp parameters and /dev/sev: what the kernel gives QEMU."""
    sev, es, snp = (param(fact, BY_NAME[t].kernel_param) for t in ("sev", "sev-es", "sev-snp"))
    listed = fact["sev"] is not None
    device = fact.get("sev_device")
    if "kvm_amd" not in local.modules:
        return Check(bad, f"kernel: kvm_amd is not loaded ({_loaded(local)}): no SEV",
                     fix="enable AMD-V/SVM and SEV in the firmware/BIOS setup; put 'options "
                         "kvm_amd sev=1 sev_es=1' in /etc/modprobe.d/kvm_amd.conf and run "
                         "'modprobe kvm_amd'; boot with 'mem_encrypt=on'; then restart libvirt")
    seen = (f"kernel: kvm_amd sev={_flag(sev)} sev_es={_flag(es)} sev_snp={_flag(snp)}, "
            f"/dev/sev {'present' if device else 'absent'}")
    if not sev or not device:
        want = "sev=1 sev_es=1" + (" sev_snp=1" if "sev-snp" in known_by(ctx.support) else "")
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
    if not snp and "sev-snp" in known_by(ctx.support):
        return Check("warn", f"{seen}: SEV-SNP is off in the kernel, guests get SEV-ES (no memory "
                             "integrity protection)",
                     fix="enable SEV-SNP in the firmware/BIOS setup; put 'options kvm_amd sev=1 "
                         "sev_es=1 sev_snp=1' in /etc/modprobe.d/kvm_amd.conf and reload kvm_amd; "
                         "then restart libvirt")
    return Check("pass", seen)


def _intel_kernel_side(ctx, local, fact, bad: str) -> Check:
    """kvm_intel's tdx parameter."""
    tdx = param(fact, BY_NAME["tdx"].kernel_param)
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
        if "tdx" in fact["offered"]:
            why += " although libvirt's domain capabilities list TDX (stale: restart libvirt)"
        return Check(bad, f"{seen}: {why}", fix=fix)
    if "tdx" not in fact["offered"]:
        return Check(bad, f"{seen}: the kernel offers TDX but libvirt's domain capabilities do not "
                          "list it",
                     fix="restart libvirt (virtqemud or libvirtd) so it probes QEMU again; TDX "
                         "needs QEMU >= 10.1")
    return Check("pass", seen)




# -- launch-security-smm, launch-security-firmware -----------------------------------------

#: features (of other plugins, named as rules name them) whose firmware needs SMM, and why
NEEDS_SMM = {
    # OVMF's README: Secure Boot is only secure when built with SMM_REQUIRE (the variable store
    # in SMRAM, out of the guest OS's reach); every Secure Boot descriptor Debian and Fedora
    # ship lists requires-smm, and none of them lists amd-sev-es, amd-sev-snp or intel-tdx
    "secure-boot": "UEFI Secure Boot needs SMM: the Secure Boot OVMF builds keep their variable "
                   "store in SMM, out of the guest OS's reach",
}
SECURE_BOOT_FIX = ("remove Secure Boot (--feature -secure-boot): the {label} launch measures the "
                   "firmware instead, which the guest owner verifies before trusting the guest; "
                   "Secure Boot with SMM works with plain SEV only")


def check_smm_features(ctx):
    """Refuses, before anything is built, a feature that needs SMM where the launch-security
    type vscen will write (the one the feature chooses) cannot have it."""
    wanting = [name for name in NEEDS_SMM if ctx.has(name)]
    sectype, _ = pick(ctx.host, ctx.support)
    if not wanting or sectype is None:
        return []
    kind = BY_NAME[sectype]
    if not kind.no_smm:
        return [Check("pass", f"{', '.join(wanting)} with {kind.label}: OVMF's SMM build supports it")]
    return [Check("fail", f"feature '{name}' cannot be combined with {kind.label}, the launch security "
                          f"this host gives: {NEEDS_SMM[name]}, and {kind.no_smm}",
                  fix=SECURE_BOOT_FIX.format(label=kind.label))
            for name in wanting]


def check_launch_security_firmware(ctx):
    """The built XML (with --set and plugins' additions) asks for no SMM and no Secure Boot
    firmware where its launch security cannot have them."""
    root = ctx.xml
    sectype = of_xml(root)
    if sectype is None or not BY_NAME[sectype].no_smm:
        return []
    kind = BY_NAME[sectype]
    checks = []
    smm = root.find("features/smm")
    if smm is not None and smm.get("state", "on") == "on":
        checks.append(Check("fail", f"launch security {kind.label} with SMM on: {kind.no_smm}",
                            fix="remove <smm> or set state='off'", element=path(smm)))
    secure = [el for el in root.iterfind("os/firmware/feature[@name='secure-boot']") if el.get("enabled") == "yes"]
    secure += [el for el in root.iterfind("os/loader[@secure='yes']")]
    if secure:
        checks.append(Check("fail", f"launch security {kind.label} with Secure Boot firmware: "
                                    f"{NEEDS_SMM['secure-boot']}, and {kind.no_smm}",
                            fix=SECURE_BOOT_FIX.format(label=kind.label), element=path(secure[0])))
    return checks or [Check("pass", f"launch security {label(sectype)} without SMM (firmware: a build "
                                    f"whose descriptor lists {kind.firmware})")]


# -- launch-security-platform ---------------------------------------------------------------


def check_launch_security_platform(ctx):
    root = ctx.xml
    ls = root.find("launchSecurity")
    if ls is None or ls.get("type") not in X86_LIBVIRT_TYPES:
        return []
    kind = ls.get("type")
    checks = []
    os_ = root.find("os")
    os_type = root.find("os/type")
    machine = os_type.get("machine", "") if os_type is not None else ""
    if not q35(machine):
        checks.append(Check(
            "fail", f"launch security {kind} needs the q35 machine, not "
                    f"{machine or 'the default machine (i440fx on x86)'}",
            fix="set --machine q35", element=path(os_type if os_type is not None else root),
        ))
    loader = root.find("os/loader")
    uefi = (os_ is not None and os_.get("firmware") == "efi") or (
        loader is not None and (loader.get("type") == "pflash" or any(w in (loader.text or "").lower() for w in UEFI_LOADER)))
    if not uefi:
        checks.append(Check(
            "fail", f"launch security {kind} needs UEFI firmware, and the domain boots BIOS",
            fix="add the uefi feature (--feature +uefi) or set --firmware efi",
            element=path(os_ if os_ is not None else root),
        ))
    return checks or [Check("pass", f"launch security {kind} on {machine} with UEFI")]
