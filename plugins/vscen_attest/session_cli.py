"""``vscen attest session`` and ``set-session``: the guest owner's DH certificate and launch
session blob, and putting one made elsewhere into a guest.

The platform's PDH and certificate chain come from libvirt (``virNodeGetSEVInfo`` on the SEV
host, through ``--connect``) or from files exported on the host (``--pdh``, ``--cert-chain``:
libvirt's base64 values saved to files, ``sevctl export`` or ``--full``'s binary file, or
single certificates). The chain is verified up to AMD's root key for the CPU generation
(:mod:`vscen_attest.certs`) before the session is made (:mod:`vscen_attest.session`). The
public parts go into the guest's ``<launchSecurity>`` (``--domain``: a defined guest is
updated through libvirt; ``--dh-cert``/``--session``: files; neither: printed); TEK and TIK
only into the owner's private ``--tk`` file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from vscen_attest.cli import ConnectOpt

app = typer.Typer(rich_markup_mode=None)


def _read_certs(path: Path, option: str):
    """The certificates in *path*, binary or base64 (as libvirt hands them out)."""
    import base64
    import binascii

    from vscen_attest.certs import split
    from vscen_attest.launch import read_file

    data = read_file(option, Path(path))
    text = b"".join(data.split())
    where = f"{option} '{path}'"
    try:
        data = base64.b64decode(text, validate=True) if text else data
        where += " (read as base64)"
    except (binascii.Error, ValueError):
        pass  # binary, as sevctl writes it
    return split(data, where)


def _from_libvirt(connect: str | None):
    """The PDH and PEK/OCA/CEK of the host at *connect* (``virNodeGetSEVInfo``)."""
    import base64

    import libvirt

    from vscen import HostError, LibvirtError
    from vscen_attest.certs import split
    from vscen_attest.launch import open_host

    connection = open_host(connect)
    try:
        try:
            info = connection.conn.getSEVInfo(0)
        except libvirt.libvirtError as exc:
            raise HostError(f"attest: {connection.uri} gives no SEV platform certificates "
                            f"(virNodeGetSEVInfo: {exc.get_error_message()}); on an SEV host export them "
                            "there and give --pdh and --cert-chain") from None
        except AttributeError:
            raise LibvirtError("attest: the installed libvirt-python has no getSEVInfo") from None
    finally:
        connection.close()
    certs = []
    for key in ("pdh", "cert-chain"):
        if not info.get(key):
            raise HostError(f"attest: {connection.uri}'s SEV information has no '{key}'")
        certs += split(base64.b64decode(info[key]), f"{connection.uri} {key}")
    return certs, connection.uri


def _domain_launch_security(conn, name: str):
    """(domain, its inactive XML tree, its <launchSecurity>) for *name*; refuses what cannot take a session."""
    import libvirt
    from lxml import etree

    from vscen import LibvirtError, UsageError
    from vscen_attest.launch import lookup

    dom = lookup(conn, name)
    try:
        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE).encode())
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"attest: '{name}': {exc.get_error_message()}") from None
    ls = root.find("launchSecurity")
    if ls is None or ls.get("type") != "sev":
        kind = "none" if ls is None else f"type '{ls.get('type')}'"
        raise UsageError(f"attest: '{name}' has launch security {kind}; a session is for an SEV or SEV-ES guest "
                         "(<launchSecurity type='sev'>, as vscen run secure-vm writes on an SEV host; SEV-SNP "
                         "and TDX guests attest from inside the guest)")
    return dom, root, ls


def _check_policy(ls, name: str, policy: str | None) -> int:
    """The guest's policy; a UsageError when *policy* (the session's) is another."""
    from vscen import UsageError
    from vscen_attest.session import parse_policy

    text = ls.findtext("policy")
    if text is None:
        raise UsageError(f"attest: '{name}' has no <policy> in <launchSecurity>; the session binds one")
    value = parse_policy(text.strip())
    if policy is not None and parse_policy(policy) != value:
        raise UsageError(f"--policy: '{policy}' is not the policy of '{name}' ({text.strip()}); "
                         "the firmware refuses a session made for another policy")
    return value


def _set_session(conn, root, ls, dh_cert_b64: str, session_b64: str, force: bool) -> None:
    from lxml import etree

    from vscen import ExistsError, LibvirtError

    name = root.findtext("name")
    for tag, value in (("dhCert", dh_cert_b64), ("session", session_b64)):
        el = ls.find(tag)
        if el is not None and (el.text or "").strip() != value and not force:
            raise ExistsError(f"attest: '{name}' has a <{tag}> of another session; give --force to replace it")
        if el is None:
            el = etree.SubElement(ls, tag)
        el.text = value
    # libvirt's schema orders them: cbitpos, reducedPhysBits, policy, handle, dhCert, session
    order = {t: i for i, t in enumerate(("cbitpos", "reducedPhysBits", "policy", "handle", "dhCert", "session"))}
    ls[:] = sorted(ls, key=lambda el: order.get(el.tag, len(order)))
    import libvirt

    try:
        conn.defineXML(etree.tostring(root, encoding="unicode"))
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"attest: libvirt refused '{name}' with the session: {exc.get_error_message()}") from None


TkOpt = Annotated[Path, typer.Option("--tk", metavar="FILE", help=(
    "Where TEK and TIK go (32 bytes, TEK then TIK, mode 600): the guest owner's secret, for "
    "`vscen attest launch`, `inject` and `verify` (their --tk)."))]
PdhOpt = Annotated[Optional[Path], typer.Option("--pdh", metavar="FILE", help=(
    "The platform's PDH certificate exported on the host (binary or base64)."))]
ChainOpt = Annotated[Optional[list[Path]], typer.Option("--cert-chain", metavar="FILE", help=(
    "The platform's certificates: libvirt's cert-chain (PEK, OCA, CEK), `sevctl export`'s file (PDH to "
    "CEK, with --full ASK and ARK) or single certificates; repeatable."))]
DomainOpt = Annotated[Optional[str], typer.Option("--domain", metavar="NAME", help=(
    "Put the DH certificate and session into the <launchSecurity> of this defined guest (on --connect); "
    "its policy is the session's."))]
PolicyOpt = Annotated[Optional[str], typer.Option("--policy", metavar="POLICY", help=(
    "The guest's launch policy, as its <policy> (default: the --domain's, else 0x0003)."))]
GenerationOpt = Annotated[Optional[str], typer.Option("--generation", metavar="GEN", help=(
    "The CPU generation whose AMD keys must sign the chip's key: naples, rome, milan, genoa, turin "
    "(default: whichever does)."))]
ArkAskOpt = Annotated[Optional[Path], typer.Option("--ark-ask", metavar="FILE", help=(
    "Trust this ASK and ARK (AMD's ask_ark_<generation>.cert, ASK then ARK) instead of the ones vscen "
    "ships, for a generation it does not know."))]
DhCertOpt = Annotated[Optional[Path], typer.Option("--dh-cert", metavar="FILE", help=(
    "Write the DH certificate (base64, <dhCert>) here."))]
SessionOpt = Annotated[Optional[Path], typer.Option("--session", metavar="FILE", help=(
    "Write the session blob (base64, <session>) here."))]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing files and a guest's existing session.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the public parts only).")]


@app.command("session")
def session_cmd(tk: TkOpt, pdh: PdhOpt = None, cert_chain: ChainOpt = None, connect: ConnectOpt = None,
                domain: DomainOpt = None, policy: PolicyOpt = None, generation: GenerationOpt = None,
                ark_ask: ArkAskOpt = None, dh_cert_out: DhCertOpt = None, session_out: SessionOpt = None,
                force: ForceOpt = False, json_: JsonOpt = False):
    """Make the guest owner's launch session for an SEV guest.

    The platform's certificate chain is verified up to AMD's root key (ARK -> ASK -> CEK -> PEK
    <- OCA, PEK -> PDH) before a fresh owner key pair, TEK and TIK are made: the session blob
    wraps TEK and TIK for that platform only, and binds the launch policy. Run it where the
    owner keeps secrets, not on the host; only --tk is secret.
    """
    from vscen import ExistsError, UsageError
    from vscen_attest import certs
    from vscen_attest import session as sev_session
    from vscen_attest.launch import open_host

    if generation is not None and generation not in certs.GENERATIONS:
        raise UsageError(f"--generation: '{generation}' is not one of {', '.join(certs.GENERATIONS)}")
    found, source = [], None
    if pdh or cert_chain:
        for path, option in ([(pdh, "--pdh")] if pdh else []) + [(p, "--cert-chain") for p in cert_chain or ()]:
            found += _read_certs(path, option)
        source = "files"
    else:
        found, source = _from_libvirt(connect)
    chain = certs.assemble(found, "certificates" if source == "files" else f"{source}")
    trust = None
    if ark_ask is not None:
        roots = {c.name: c for c in _read_certs(ark_ask, "--ark-ask")}
        if set(roots) != {"ASK", "ARK"}:
            raise UsageError(f"--ark-ask: '{ark_ask}' holds {', '.join(roots) or 'nothing'}, not one ASK and one ARK")
        trust = {generation or "given": (roots["ARK"], roots["ASK"])}
    gen = certs.verify(chain, generation if trust is None else None, trust)

    conn = dom_parts = None
    try:
        if domain is not None:
            conn = open_host(connect)
            dom_parts = _domain_launch_security(conn.conn, domain)
            value = _check_policy(dom_parts[2], domain, policy)
        else:
            value = sev_session.parse_policy(policy if policy is not None else "0x0003")
        sess = sev_session.create(chain.pdh, value)
        for path, what in ((dh_cert_out, "--dh-cert"), (session_out, "--session")):
            if path is not None and Path(path).exists() and not force:
                raise ExistsError(f"{what}: '{path}' exists; give --force to replace it")
            if path is not None and not Path(path).parent.is_dir():
                raise UsageError(f"{what}: '{path}': the directory {Path(path).parent} does not exist")
        # the key file is staged first and put in place last: a failure in between keeps the old one
        staged = sev_session.PrivateFile(tk, sess.tk, force)
        try:
            if dom_parts is not None:
                _set_session(conn.conn, dom_parts[1], dom_parts[2], sess.dh_cert_b64, sess.session_b64, force)
            staged.commit()
        except BaseException:
            staged.discard()
            raise
        for path, text, what in ((dh_cert_out, sess.dh_cert_b64, "--dh-cert"),
                                 (session_out, sess.session_b64, "--session")):
            if path is not None:
                sev_session.write_public(path, text, what, force)
    finally:
        if conn is not None:
            conn.close()

    keys = f"the ARK and ASK of {ark_ask}" if ark_ask else f"AMD's {gen.capitalize()} keys"
    platform = f"firmware API {chain.pdh.api[0]}.{chain.pdh.api[1]}"
    if json_:
        typer.echo(json.dumps({"generation": gen, "api": list(chain.pdh.api), "policy": f"{value:#06x}",
                               "dh_cert": sess.dh_cert_b64, "session": sess.session_b64, "tk": str(tk),
                               "domain": domain}, indent=2))
        return
    typer.echo(f"verified: PDH <- PEK <- OCA, CEK <- ASK <- ARK of {keys}; {platform}", err=True)
    typer.echo(f"policy {value:#06x} ({sev_session.describe_policy(value)})", err=True)
    typer.echo(f"TEK and TIK: {tk} (mode 600; keep it private: it checks the launch measurement "
               "and encrypts injected secrets)", err=True)
    for path, what in ((dh_cert_out, "DH certificate"), (session_out, "session blob")):
        if path is not None:
            typer.echo(f"{what}: {path}", err=True)
    if domain is not None:
        typer.echo(f"{domain}: <dhCert> and <session> set in <launchSecurity>; used at its next start", err=True)
    if domain is None and dh_cert_out is None and session_out is None:
        typer.echo(sev_session.launch_security_xml(sess))


def _read_b64(path: Path, option: str, size: int | None = None) -> bytes:
    import base64
    import binascii

    from vscen import UsageError
    from vscen_attest.launch import read_file

    try:
        data = base64.b64decode(b"".join(read_file(option, Path(path)).split()), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{option}: '{path}' is not base64 (as `vscen attest session {option}` writes it)") from None
    if size is not None and len(data) != size:
        raise UsageError(f"{option}: '{path}' holds {len(data)} bytes, a launch session blob has {size}")
    return data


SetDhCertOpt = Annotated[Path, typer.Option("--dh-cert", metavar="FILE", help=(
    "The guest owner's DH certificate (base64), from `vscen attest session --dh-cert`."))]
SetSessionOpt = Annotated[Path, typer.Option("--session", metavar="FILE", help=(
    "The guest owner's session blob (base64), from `vscen attest session --session`."))]
SetPolicyOpt = Annotated[str, typer.Option("--policy", metavar="POLICY", help=(
    "The policy the owner made the session for (`vscen attest session` prints it): it must be the guest's."))]


@app.command("set-session")
def set_session_cmd(name: Annotated[str, typer.Argument(help="The defined guest.")],
                    dh_cert: SetDhCertOpt, session: SetSessionOpt, policy: SetPolicyOpt,
                    connect: ConnectOpt = None, force: ForceOpt = False):
    """Put a guest owner's DH certificate and session into guest NAME's <launchSecurity>.

    For the host's administrator when the owner made the session elsewhere from exported
    certificates: the files are public (TEK and TIK never leave the owner). The guest must be
    an SEV or SEV-ES guest with the policy the owner named; it is used at the guest's next start.
    """
    import base64

    from vscen import UsageError
    from vscen_attest.certs import parse_sev_cert
    from vscen_attest.launch import open_host
    from vscen_attest.session import SESSION_SIZE

    dh = _read_b64(dh_cert, "--dh-cert")
    cert = parse_sev_cert(dh, f"--dh-cert '{dh_cert}'")
    if cert.name != "PDH" or len(dh) != len(cert.raw):
        raise UsageError(f"--dh-cert: '{dh_cert}' is a {cert.name} certificate of {len(dh)} bytes, not a guest owner's DH certificate")
    cert.public_key()
    blob = _read_b64(session, "--session", SESSION_SIZE)
    conn = open_host(connect)
    try:
        _, root, ls = _domain_launch_security(conn.conn, name)
        _check_policy(ls, name, policy)
        _set_session(conn.conn, root, ls, base64.b64encode(dh).decode(), base64.b64encode(blob).decode(), force)
    finally:
        conn.close()
    typer.echo(f"{name}: <dhCert> and <session> set in <launchSecurity> (policy {policy}); used at its next start")
