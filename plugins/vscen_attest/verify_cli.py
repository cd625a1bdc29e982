"""``vscen attest verify``, ``launch`` and ``inject``: measurements and secrets.

``verify`` checks a reported SEV launch measurement offline, with the options of libvirt's
``virt-qemu-sev-validate`` (exit 0: valid; 1: it does not match; 2: bad input); ``launch``
starts a guest paused and resumes it only once its measurement is verified; ``inject`` gives
a verified, paused guest a secret. The computation is in ``measure.py`` and ``secret.py``,
the libvirt side in ``launch.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vscen_attest.cli import ConnectOpt

app = typer.Typer(rich_markup_mode=None)

Opt = typer.Option
FirmwareOpt = Annotated[Optional[Path], Opt("--firmware", "-f", metavar="FILE",
    help="The firmware image the guest is expected to run (OVMF's code), your own copy.")]
KernelOpt = Annotated[Optional[Path], Opt("--kernel", "-k", metavar="FILE", help=
    "The kernel of a measured direct kernel boot (kernelHashes='yes').")]
InitrdOpt = Annotated[Optional[Path], Opt("--initrd", "-r", metavar="FILE", help="Its initrd.")]
CmdlineOpt = Annotated[Optional[str], Opt("--cmdline", "-e", help="Its kernel command line, as booted.")]
CpusOpt = Annotated[Optional[int], Opt("--num-cpus", "-n", help="vCPUs the guest started with (SEV-ES measures each one's state).")]
FamilyOpt = Annotated[Optional[int], Opt("--cpu-family", help="The host CPU's family (SEV-ES; e.g. 25 for EPYC Milan/Genoa).")]
ModelOpt = Annotated[Optional[int], Opt("--cpu-model", help="The host CPU's model number (SEV-ES).")]
SteppingOpt = Annotated[Optional[int], Opt("--cpu-stepping", help="The host CPU's stepping (SEV-ES).")]
Vmsa0Opt = Annotated[Optional[Path], Opt("--vmsa-cpu0", "-0", metavar="FILE", help=
    "The boot vCPU's save area (4096 bytes), instead of the CPU signature.")]
Vmsa1Opt = Annotated[Optional[Path], Opt("--vmsa-cpu1", "-1", metavar="FILE", help="The other vCPUs' save area (4096 bytes).")]
TikOpt = Annotated[Optional[Path], Opt("--tik", metavar="FILE", help=
    "The guest's TIK (16 bytes, mode 600), as made with its launch session.")]
TekOpt = Annotated[Optional[Path], Opt("--tek", metavar="FILE", help="The guest's TEK (16 bytes, mode 600).")]
TkOpt = Annotated[Optional[Path], Opt("--tk", metavar="FILE", help=(
    "TEK and TIK in one file (32 bytes, TEK first, mode 600), as 'vscen attest session --tk' writes it."))]
InsecureOpt = Annotated[bool, Opt("--insecure", "-i",
    help="Read the firmware, kernel, initrd and command line from the host's definition of the guest when not given (proves less).")]
ResumeOpt = Annotated[bool, Opt("--resume/--no-resume",
    help="Resume the guest once verified (--no-resume: leave it paused, to inject a secret).")]
SECRET_FILE_HELP = ("A file holding the secret (mode 600), e.g. the disk's LUKS passphrase; repeat with --guid "
                    "for several.")
SecretFileOpt = Annotated[Optional[list[Path]], Opt("--secret-file", "-s", metavar="FILE", help=SECRET_FILE_HELP)]
GuidOpt = Annotated[Optional[list[str]], Opt("--guid", help=(
    "The GUID the guest finds the secret under, one per --secret-file (default: luks-key, "
    "736869e5-84f0-4973-92ec-06879ce3da0b)."))]
NameArg = Annotated[str, typer.Argument(help="The guest (a domain with <launchSecurity type='sev'> and a launch session).")]


def _given(firmware, kernel, initrd, cmdline, num_cpus, family, model, stepping, vmsa0, vmsa1, insecure=False):
    from vscen import UsageError
    from vscen_attest.launch import Given

    sku = (family, model, stepping)
    if sku.count(None) not in (0, 3):
        raise UsageError("--cpu-family/--cpu-model/--cpu-stepping: give all three or none")
    if sku.count(None) == 0 and (vmsa0 or vmsa1):
        raise UsageError("--vmsa-cpu0/--vmsa-cpu1: not allowed with --cpu-family/--cpu-model/--cpu-stepping "
                         "(the save areas are built from the CPU signature, or given: not both)")
    if vmsa1 and not vmsa0:
        raise UsageError("--vmsa-cpu1: not allowed without --vmsa-cpu0 (the boot vCPU's state)")
    if num_cpus is not None and not 1 <= num_cpus <= 65535:
        raise UsageError(f"--num-cpus: {num_cpus} is not allowed (1 to 65535)")
    if kernel is None and (initrd is not None or cmdline is not None):
        raise UsageError("--initrd/--cmdline: not allowed without --kernel (they are measured with a kernel)")
    return Given(firmware=firmware, kernel=kernel, initrd=initrd, cmdline=cmdline, num_cpus=num_cpus,
                 cpu=None if sku.count(None) else sku, vmsa_cpu0=vmsa0, vmsa_cpu1=vmsa1, insecure=insecure)


def _note(message: str) -> None:
    typer.echo(f"note: {message}", err=True)


def _domain(connect: str | None, name: str):
    """(connection, domain) for *name* on *connect*."""
    from vscen_attest.launch import lookup, open_host

    connection = open_host(connect)
    try:
        return connection, lookup(connection.conn, name)
    except BaseException:
        connection.close()
        raise


@app.command()
def verify(
    measurement: Annotated[Optional[str], Opt("--measurement", "-m", metavar="BASE64",
        help="The reported measurement (base64, libvirt's 'sev-measurement').")] = None,
    api_major: Annotated[Optional[int], Opt("--api-major", help="The platform's SEV API major version.")] = None,
    api_minor: Annotated[Optional[int], Opt("--api-minor", help="The platform's SEV API minor version.")] = None,
    build_id: Annotated[Optional[int], Opt("--build-id", help="The platform's SEV firmware build id.")] = None,
    policy: Annotated[Optional[str], Opt("--policy", metavar="POLICY", help=(
        "The guest's SEV policy, decimal or as its <policy> (7 or 0x0007: no debug, no key sharing, SEV-ES)."))] = None,
    firmware: FirmwareOpt = None, kernel: KernelOpt = None, initrd: InitrdOpt = None, cmdline: CmdlineOpt = None,
    num_cpus: CpusOpt = None, cpu_family: FamilyOpt = None, cpu_model: ModelOpt = None, cpu_stepping: SteppingOpt = None,
    vmsa_cpu0: Vmsa0Opt = None, vmsa_cpu1: Vmsa1Opt = None, tik: TikOpt = None, tek: TekOpt = None, tk: TkOpt = None,
    domain: Annotated[Optional[str], Opt("--domain", "-o", metavar="NAME",
        help="Read the measurement and platform values from this running (paused) guest.")] = None,
    connect: ConnectOpt = None, insecure: InsecureOpt = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Print nothing when the measurement is valid.")] = False,
    secret_file: SecretFileOpt = None, guid: GuidOpt = None,
    secret_header: Annotated[Optional[Path], Opt("--secret-header", metavar="FILE", help=(
        "Once valid, write the secret packet's header here (base64, for 'virsh domsetlaunchsecstate "
        "--secrethdr')."))] = None,
    secret_payload: Annotated[Optional[Path], Opt("--secret-payload", metavar="FILE", help=(
        "Once valid, write the encrypted secret table here (base64, for 'virsh domsetlaunchsecstate "
        "--secret')."))] = None,
    force: Annotated[bool, Opt("--force", help="Replace existing --secret-header/--secret-payload files.")] = False,
):
    """Check a reported SEV launch measurement offline: exit 0 when it is the one expected from
    the firmware (and kernel, initrd, command line; vCPU state for SEV-ES) and the TIK, 1 when it
    is not. The options are virt-qemu-sev-validate's."""
    from vscen import UsageError
    from vscen_attest import launch, measure

    given = _given(firmware, kernel, initrd, cmdline, num_cpus, cpu_family, cpu_model, cpu_stepping,
                   vmsa_cpu0, vmsa_cpu1, insecure)
    outputs = _packet_files(secret_file, secret_header, secret_payload, force)
    secrets = _secrets(secret_file, guid) if secret_file else []
    keys = launch.load_keys(tik, tek, tk, need_tek=bool(secrets))
    if domain is None:
        if connect is not None:
            raise UsageError("--connect: not allowed without --domain (an offline check reads no host)")
        for option, value in (("--measurement", measurement), ("--api-major", api_major), ("--api-minor", api_minor),
                              ("--build-id", build_id), ("--policy", policy)):
            if value is None:
                raise UsageError(f"{option}: missing: give it (as the platform reported it) or --domain NAME")
        report = measure.reported(measurement, api_major, api_minor, build_id, _policy(policy))
        expected = launch.expectation(given)
    else:
        connection, dom = _domain(connect, domain)
        try:
            live = launch.report_of(dom, connection.uri)
            report = measure.reported(
                measurement if measurement is not None else _b64(live.measurement + live.mnonce),
                *(v if v is not None else d for v, d in ((api_major, live.api_major), (api_minor, live.api_minor),
                                                         (build_id, live.build_id), (_policy(policy), live.policy))))
            expected = launch.expectation(given, dom.XMLDesc(0), connection.is_local,
                                          launch.host_cpu_of(connection.conn, _note) if report.sev_es else None, _note)
        finally:
            connection.close()
    measure.verify(keys, report, expected)
    if not quiet:
        kind = "SEV-ES" if report.sev_es else "SEV"
        typer.echo(f"valid: the {kind} launch measurement is the one expected")
    if secrets:
        from vscen import atomic_write

        params = launch.packet_for(keys, report, expected, secrets).params()
        existed = outputs[0].exists()
        try:
            atomic_write(outputs[0], params["sev-secret-header"] + "\n", mode=0o600)
        except OSError as exc:
            raise UsageError(f"--secret-header: cannot write {outputs[0]} ({exc.strerror})") from None
        try:
            atomic_write(outputs[1], params["sev-secret"] + "\n", mode=0o600)
        except BaseException as exc:
            if not existed:  # a header without its payload is of no use: take it back
                outputs[0].unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise UsageError(f"--secret-payload: cannot write {outputs[1]} ({exc.strerror})") from None
            raise
        if not quiet:
            typer.echo(f"secret packet: {outputs[0]} and {outputs[1]} ({len(secrets)} secret(s), for this launch "
                       f"only); on the host: virsh domsetlaunchsecstate DOMAIN --secrethdr {outputs[0].name} "
                       f"--secret {outputs[1].name} && virsh resume DOMAIN")


def _policy(text: str | None) -> int | None:
    """--policy in decimal (as virt-qemu-sev-validate takes it) or hex (as <policy> and
    'vscen attest session' write it)."""
    from vscen import UsageError

    if text is None:
        return None
    for base in (10, 0):
        try:
            return int(text, base)
        except ValueError:
            pass
    raise UsageError(f"--policy: '{text}' is not allowed (a number: 7, or 0x0007 as <policy> writes it)")


def _packet_files(secret_file, header, payload, force):
    """(header, payload) paths of an offline secret packet, checked before anything is done."""
    from vscen import ExistsError, UsageError

    if not secret_file:
        if header or payload:
            raise UsageError("--secret-header/--secret-payload: not allowed without --secret-file (nothing to pack)")
        return None
    if header is None or payload is None:
        raise UsageError("--secret-header/--secret-payload: missing: an offline check writes the secret packet "
                         "to these two files ('vscen attest inject' gives it to a live guest)")
    paths = (Path(header), Path(payload))
    if paths[0].resolve() == paths[1].resolve():
        raise UsageError(f"--secret-payload: {payload} is the --secret-header file too (two files are written)")
    for option, path in zip(("--secret-header", "--secret-payload"), paths, strict=True):
        if not path.parent.is_dir():
            raise UsageError(f"{option}: {path.parent} is not a directory")
        if (path.exists() or path.is_symlink()) and not force:
            raise ExistsError(f"{option}: {path} exists; give --force to replace it")
    return paths


def _secrets(secret_file, guid):
    """[(GUID, bytes)] from --secret-file/--guid: one GUID per file, a single file luks-key by default."""
    from vscen import UsageError
    from vscen_attest import launch, secret

    guids = list(guid or [])
    if not guids and len(secret_file) == 1:
        guids = ["luks-key"]
    if len(guids) != len(secret_file):
        raise UsageError(f"--guid: {len(guids)} given for {len(secret_file)} --secret-file (one GUID per secret; "
                         "a single secret defaults to luks-key)")
    secrets = [(secret.guid_of(g), launch.read_file("--secret-file", f, private=True))
               for g, f in zip(guids, secret_file, strict=True)]
    secret.secret_table(secrets)  # its errors before anything else is read
    return secrets


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


@app.command("launch")
def launch_(
    name: NameArg, firmware: FirmwareOpt = None, kernel: KernelOpt = None, initrd: InitrdOpt = None,
    cmdline: CmdlineOpt = None, num_cpus: CpusOpt = None, cpu_family: FamilyOpt = None, cpu_model: ModelOpt = None,
    cpu_stepping: SteppingOpt = None, vmsa_cpu0: Vmsa0Opt = None, vmsa_cpu1: Vmsa1Opt = None,
    tik: TikOpt = None, tek: TekOpt = None, tk: TkOpt = None, connect: ConnectOpt = None,
    insecure: InsecureOpt = False, resume: ResumeOpt = True,
):
    """Start SEV guest NAME paused, check its launch measurement, and resume it only when it is
    the one expected; otherwise destroy it and say why."""
    from vscen_attest import launch

    given = _given(firmware, kernel, initrd, cmdline, num_cpus, cpu_family, cpu_model, cpu_stepping,
                   vmsa_cpu0, vmsa_cpu1, insecure)
    keys = launch.load_keys(tik, tek, tk)
    connection, dom = _domain(connect, name)
    try:
        launch.launch_domain(dom, connection.uri, given, keys, resume, connection.is_local,
                             launch.host_cpu_of(connection.conn, _note), say=typer.echo, note=_note)
    finally:
        connection.close()


@app.command()
def inject(
    name: NameArg,
    secret_file: Annotated[list[Path], Opt("--secret-file", "-s", metavar="FILE", help=SECRET_FILE_HELP)],
    guid: GuidOpt = None,
    firmware: FirmwareOpt = None, kernel: KernelOpt = None, initrd: InitrdOpt = None,
    cmdline: CmdlineOpt = None, num_cpus: CpusOpt = None, cpu_family: FamilyOpt = None, cpu_model: ModelOpt = None,
    cpu_stepping: SteppingOpt = None, vmsa_cpu0: Vmsa0Opt = None, vmsa_cpu1: Vmsa1Opt = None,
    tik: TikOpt = None, tek: TekOpt = None, tk: TkOpt = None, connect: ConnectOpt = None,
    insecure: InsecureOpt = False, resume: ResumeOpt = True,
):
    """Give verified, paused SEV guest NAME a secret (after 'vscen attest launch NAME --no-resume'):
    its measurement is checked again, the secret packed in OVMF's secret table, encrypted with
    the TEK and bound to the measurement with the TIK; then the guest is resumed."""
    from vscen_attest import launch

    secrets = _secrets(secret_file, guid)
    given = _given(firmware, kernel, initrd, cmdline, num_cpus, cpu_family, cpu_model, cpu_stepping,
                   vmsa_cpu0, vmsa_cpu1, insecure)
    keys = launch.load_keys(tik, tek, tk, need_tek=True)
    connection, dom = _domain(connect, name)
    try:
        launch.inject_domain(dom, connection.uri, given, keys, secrets, resume, connection.is_local,
                             launch.host_cpu_of(connection.conn, _note), say=typer.echo, note=_note)
    finally:
        connection.close()
