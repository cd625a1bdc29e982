"""The live side: start an SEV guest paused, check its measurement, resume it or destroy it;
inject a secret into a verified, paused guest.

What the guest owner expects comes from the owner (``Given``: their copy of the firmware, the
kernel, initrd and command line). Only with ``insecure`` are the firmware and kernel files
read from the host's domain XML (a local connection): that proves nothing against a host that
controls those files. The vCPU count and the host CPU's signature (SEV-ES) may come from the
host: they only say how the vCPUs' state is laid out, and a wrong value fails the check.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vscen import HostError, LibvirtError, UsageError, VscenError
from vscen_attest import measure


@dataclass(frozen=True)
class Given:
    """The guest owner's expectation, as files and values (``vscen attest`` options)."""

    firmware: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    num_cpus: int | None = None
    cpu: tuple[int, int, int] | None = None
    vmsa_cpu0: Path | None = None
    vmsa_cpu1: Path | None = None
    insecure: bool = False


def read_file(option: str, path: Path, private: bool = False, size: int | None = None) -> bytes:
    """The bytes of *path* given as *option*; a UsageError naming it when it cannot be read, is
    readable by others (*private*) or has not *size* bytes."""
    try:
        fd = os.open(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise UsageError(f"{option}: {path} is not a regular file")
            if private and mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise UsageError(f"{option}: {path} can be read by others (mode {stat.S_IMODE(mode):o}); "
                                 "it holds a secret: chmod 600 it")
            data = fh.read()
    except OSError as exc:
        raise UsageError(f"{option}: cannot read {path} ({exc.strerror})") from None
    if size is not None and len(data) != size:
        raise UsageError(f"{option}: {path} has {len(data)} bytes, which is not allowed ({size} bytes expected)")
    return data


def open_host(connect: str | None):
    """vscen's connection to the host at *connect* (else ``LIBVIRT_DEFAULT_URI``, else
    qemu:///system), never the embedded test driver in its stead: attesting a stand-in for the
    host the owner meant proves nothing."""
    from vscen import open_connection

    return open_connection(connect or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system")


def lookup(conn, name: str):
    """The domain *name* on libvirt connection *conn*; a UsageError naming it when there is none."""
    import libvirt

    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise UsageError(f"attest: no guest '{name}' is defined on {conn.getURI()}") from None
        raise LibvirtError(f"attest: '{name}': {exc.get_error_message()}") from None


def load_keys(tik: Path | None, tek: Path | None, tk: Path | None, need_tek: bool = False) -> measure.Keys:
    """The TIK (and TEK) from ``--tik``/``--tek`` (16 raw bytes each) or ``--tk`` (32 bytes:
    TEK then TIK, as sev-tool's ``tmp_tk.bin`` and ``virt-qemu-sev-validate --tk``)."""
    if tk is not None:
        if tik is not None or tek is not None:
            raise UsageError("--tk: not allowed with --tik/--tek (give the combined file or the two keys)")
        both = read_file("--tk", tk, private=True, size=2 * measure.KEY_SIZE)
        return measure.Keys(tik=both[16:], tek=both[:16])
    if tik is None:
        raise UsageError("--tik: missing: give the guest's transport keys (--tik and --tek, or --tk), "
                         "the ones its launch session was made with")
    if need_tek and tek is None:
        raise UsageError("--tek: missing: the secret is encrypted with the guest's TEK (--tek, or --tk)")
    return measure.Keys(tik=read_file("--tik", tik, private=True, size=measure.KEY_SIZE),
                        tek=read_file("--tek", tek, private=True, size=measure.KEY_SIZE) if tek else None)


def expectation(given: Given, xml: str | None = None, local: bool = True, host_cpu=None,
                note: Callable[[str], None] = lambda _m: None) -> measure.Launch:
    """The Launch the owner expects: *given*, completed from the guest's live *xml* where that
    is allowed. *host_cpu*: a function giving the host CPU's (family, model, stepping)."""
    from lxml import etree

    doc = etree.fromstring(xml.encode()) if xml else None
    ls = doc.find("launchSecurity") if doc is not None else None
    measured_kernel = ls is not None and ls.get("kernelHashes") == "yes"

    def from_host(option: str, xpath: str) -> str | None:
        node = doc.find(xpath) if doc is not None else None
        if node is None or not (node.text or "").strip():
            return None
        if not given.insecure:
            raise UsageError(f"{option}: missing: give your own copy (the guest uses {node.text.strip()} on the host; "
                             "reading the host's file proves nothing against a host that controls it: --insecure to "
                             "do so anyway)")
        if option != "--cmdline" and not local:
            raise UsageError(f"{option}: missing, and the host's {node.text.strip()} cannot be read over a remote "
                             "connection: give your own copy")
        note(f"trusting the host for {option[2:]}: {node.text.strip()}")
        return node.text.strip()

    firmware = given.firmware or from_host("--firmware", "os/loader")
    if firmware is None:
        raise UsageError("--firmware: missing: give the firmware image the guest is expected to run (OVMF's code, "
                         "as the host's <loader> names it)")
    kernel, initrd, cmdline = given.kernel, given.initrd, given.cmdline
    if doc is not None:
        if measured_kernel:
            kernel = kernel or from_host("--kernel", "os/kernel")
            initrd = initrd or from_host("--initrd", "os/initrd")
            cmdline = cmdline if cmdline is not None else from_host("--cmdline", "os/cmdline")
            if kernel is None:
                raise UsageError("--kernel: missing: the guest measures a direct kernel boot (kernelHashes='yes') "
                                 "but names no kernel")
        elif kernel is not None:
            raise UsageError("--kernel: the guest does not measure its kernel (no kernelHashes='yes' in "
                             "<launchSecurity>): leave --kernel/--initrd/--cmdline out")
        elif doc.find("os/kernel") is not None:
            note("the guest boots a kernel given by the host (<os><kernel>) without measuring it "
                 "(kernelHashes='yes' measures it)")
        if doc.find("os/nvram") is not None:
            note("the guest's firmware variables (NVRAM) are the host's and are not measured; a stateless "
                 "firmware (<loader stateless='yes'>) leaves no such state")
    if kernel is None and (initrd is not None or cmdline is not None):
        raise UsageError("--initrd/--cmdline: not allowed without --kernel (they are measured with a kernel)")

    num_cpus, cpu = given.num_cpus, given.cpu
    if num_cpus is None and doc is not None and doc.findtext("vcpu"):
        num_cpus = int(doc.findtext("vcpu"))
        note(f"vCPUs from the guest's definition: {num_cpus}")
    if cpu is None and given.vmsa_cpu0 is None and host_cpu is not None:
        cpu = host_cpu()
    return measure.Launch(
        firmware=read_file("--firmware", Path(firmware)),
        kernel=read_file("--kernel", Path(kernel)) if kernel else None,
        initrd=read_file("--initrd", Path(initrd)) if initrd else None,
        cmdline=cmdline, num_cpus=num_cpus, cpu=cpu,
        vmsa_cpu0=read_file("--vmsa-cpu0", given.vmsa_cpu0, size=measure.VMSA_SIZE) if given.vmsa_cpu0 else None,
        vmsa_cpu1=read_file("--vmsa-cpu1", given.vmsa_cpu1, size=measure.VMSA_SIZE) if given.vmsa_cpu1 else None)


def host_cpu_of(conn, note=lambda _m: None):
    """A function giving the host CPU's (family, model, stepping) from libvirt's capabilities."""
    def read():
        from lxml import etree

        sig = etree.fromstring(conn.getCapabilities().encode()).find("host/cpu/signature")
        if sig is None:
            raise UsageError("--cpu-family/--cpu-model/--cpu-stepping: missing, and the host's libvirt reports no "
                             "CPU signature: give them (an SEV-ES guest's vCPU state holds it)")
        try:
            cpu = (int(sig.get("family")), int(sig.get("model")), int(sig.get("stepping")))
        except (TypeError, ValueError):
            raise UsageError("--cpu-family: the host reports an unreadable CPU signature: give the values") from None
        note("host CPU signature from libvirt: family {}, model {}, stepping {}".format(*cpu))
        return cpu
    return read


def check_sev(name: str, xml: str) -> None:
    """Refuse a guest whose launch cannot be attested by its owner this way, saying why."""
    from lxml import etree

    ls = etree.fromstring(xml.encode()).find("launchSecurity")
    kind = ls.get("type") if ls is not None else None
    if kind in ("sev-snp", "tdx", "s390-pv"):
        raise UsageError(f"attest: '{name}' is a {kind} guest: it attests itself from inside (see docs/secure-vm.md); "
                         "launch measurement by the owner is for SEV and SEV-ES")
    if kind != "sev":
        raise UsageError(f"attest: '{name}' has no AMD SEV launch security (<launchSecurity type='sev'>): "
                         "nothing to attest")
    if ls.find("dhCert") is None or ls.find("session") is None:
        raise UsageError(f"attest: '{name}' has no launch session (<dhCert> and <session> in <launchSecurity>): "
                         "without the owner's session the platform makes its own keys and no owner can check "
                         "the measurement; make one with 'vscen attest session' (docs/attest-session.md)")


def report_of(dom, uri: str) -> measure.Reported:
    """The launch measurement and platform values libvirt reports for a running guest."""
    import libvirt

    try:
        info = dom.launchSecurityInfo(0)
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"attest: {uri} cannot report the launch measurement of '{dom.name()}' "
                           f"({exc.get_error_message()}): launch attestation needs an AMD SEV host") from None
    missing = [k for k in ("sev-measurement", "sev-api-major", "sev-api-minor", "sev-build-id", "sev-policy")
               if k not in info]
    if missing:
        raise HostError(f"attest: {uri} reports no {', '.join(missing)} for '{dom.name()}' (is it an SEV guest?)")
    return measure.reported(info["sev-measurement"], info["sev-api-major"], info["sev-api-minor"],
                            info["sev-build-id"], info["sev-policy"])


def _describe(report: measure.Reported) -> str:
    kind = "SEV-ES" if report.sev_es else "SEV"
    return (f"{kind}, policy 0x{report.policy:04x}, platform API {report.api_major}.{report.api_minor} "
            f"build {report.build_id}")


def launch_domain(dom, uri: str, given: Given, keys: measure.Keys, resume: bool = True, local: bool = True,
                  host_cpu=None, say=print, note=print) -> measure.Reported:
    """Start *dom* paused, check its measurement; resume it when it matches (*resume*), destroy
    it and raise when it does not or cannot be checked."""
    import libvirt

    name = dom.name()
    check_sev(name, dom.XMLDesc(0))
    if dom.isActive():
        if dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED:
            raise UsageError(f"attest: '{name}' is started already (paused): give it its secret with 'vscen attest "
                             f"inject {name}', or destroy it ('virsh destroy {name}') to launch it again")
        raise UsageError(f"attest: '{name}' is running: its launch was measured when it started; shut it down "
                         "(vscen attest launch starts it itself)")
    try:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"attest: libvirt could not start '{name}' paused: {exc.get_error_message()}") from None
    try:
        report = report_of(dom, uri)
        verify_domain(dom, report, given, keys, local, host_cpu, note)
    except VscenError as exc:
        _destroy(dom)
        raise type(exc)(f"{exc}; '{name}' was destroyed") from None
    except BaseException:
        _destroy(dom)
        raise
    say(f"{name}: measurement verified ({_describe(report)})")
    if resume:
        _resume(dom, say)
    else:
        say(f"{name}: left paused: inject its secret with 'vscen attest inject {name}', or 'virsh resume {name}'")
    return report


def verify_domain(dom, report, given, keys, local, host_cpu, note) -> None:
    launch = expectation(given, dom.XMLDesc(0), local, host_cpu if report.sev_es else None, note)
    measure.verify(keys, report, launch)


def _destroy(dom) -> None:
    import libvirt

    try:
        dom.destroy()
    except libvirt.libvirtError:  # gone already: nothing left to stop
        pass


def packet_for(keys: measure.Keys, report: measure.Reported, expected: measure.Launch, secrets,
               after: str = ""):
    """The LAUNCH_SECRET packet giving *secrets* to the verified guest; a UsageError when its
    firmware reserves no secret page big enough (QEMU finds the address in the firmware's table)."""
    from vscen_attest import secret

    table = secret.secret_table(secrets)
    area = measure.secret_area(expected.firmware)
    if area is None or area[1] < len(table):
        raise UsageError("--firmware: the guest's firmware has no launch secret area"
                         + (f" big enough ({area[1]} bytes for {len(table)})" if area else
                            f" (its table entry {measure.SEV_SECRET_GUID} is missing or empty)")
                         + ": QEMU would not know where to put the secret; use an OVMF built from OvmfPkg/AmdSev"
                         + after)
    return secret.pack(keys.tik, keys.tek, report.measurement, secrets)


def inject_domain(dom, uri: str, given: Given, keys: measure.Keys, secrets, resume: bool = True,
                  local: bool = True, host_cpu=None, say=print, note=print) -> None:
    """Check the paused guest's measurement again (the packet is bound to it), then give it
    *secrets* [(GUID, bytes)] and resume it (*resume*)."""
    import libvirt

    name = dom.name()
    check_sev(name, dom.XMLDesc(0))
    if not dom.isActive() or dom.info()[0] != libvirt.VIR_DOMAIN_PAUSED:
        raise UsageError(f"attest: '{name}' is not paused before its first run: start it with "
                         f"'vscen attest launch {name} --no-resume' first (a secret is injected before the guest runs)")
    report = report_of(dom, uri)
    expected = expectation(given, dom.XMLDesc(0), local, host_cpu if report.sev_es else None, note)
    measure.verify(keys, report, expected)
    packet = packet_for(keys, report, expected, secrets, " (it is left paused)")
    try:
        dom.setLaunchSecurityState(packet.params(), 0)
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"attest: libvirt could not inject the secret into '{name}' ({exc.get_error_message()}); "
                           "it is left paused") from None
    say(f"{name}: measurement verified, {len(secrets)} secret(s) injected ({len(packet.payload)} bytes encrypted)")
    if resume:
        _resume(dom, say)


def _resume(dom, say) -> None:
    """Resume the verified guest *dom* (LAUNCH_FINISH: from now on it runs)."""
    import libvirt

    try:
        dom.resume()
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"attest: '{dom.name()}' is verified but could not be resumed: "
                           f"{exc.get_error_message()}") from None
    say(f"{dom.name()}: resumed")
