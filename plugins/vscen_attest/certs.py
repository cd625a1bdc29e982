"""AMD SEV certificates: the platform's (PDH, PEK, OCA, CEK) and AMD's root keys (ARK, ASK).

Two binary formats, both little-endian, as the SEV API specification (AMD 55766, appendix C)
defines them:

- the SEV "Certificate" (2084 bytes): version 1, the firmware's API version, a public key
  (usage, algorithm, then ECDSA/ECDH P-384 ``x``/``y`` or an RSA exponent/modulus, 1028
  bytes) and two signature slots (usage, algorithm, 512 bytes: ECDSA ``r``/``s`` or an RSA
  signature). The signed part is the first 1044 bytes (version to key).
- AMD's signing-key certificate (ARK, ASK: 64 + 3 x key-size bytes): version 1, key id,
  signer id, usage, the public exponent and modulus sizes, exponent, modulus, then the
  RSA-PSS signature (SHA-256 for 2048-bit keys, SHA-384 for 4096-bit ones; salt length =
  digest length) over everything before it.

The chain that vouches for a platform's Diffie-Hellman key: ARK (self-signed) -> ASK -> CEK
(the chip's key, signed by AMD) -> PEK <- OCA (the owner's CA, self-signed: the PEK carries
both signatures) -> PDH. ARK and ASK of each CPU generation ship with this plugin
(``data/sev/<generation>/``, with their source in ``data/sev/SOURCES.md``); the CEK says which
generation the chip is. ``cryptography`` is imported only when a key is used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vscen import UsageError

SEV_CERT_SIZE = 2084
_BODY = 1044  # version .. public key: what the signatures cover
_SIG_OFFSETS = (1044, 1564)

USAGES = {0x0000: "ARK", 0x0013: "ASK", 0x1001: "OCA", 0x1002: "PEK", 0x1003: "PDH", 0x1004: "CEK"}
USAGE = {name: code for code, name in USAGES.items()}
_INVALID_USAGE = 0x1000
#: the algorithm codes: (kind, hash)
ALGOS = {0x0001: ("rsa", "sha256"), 0x0101: ("rsa", "sha384"), 0x0002: ("ecdsa", "sha256"),
         0x0102: ("ecdsa", "sha384"), 0x0003: ("ecdh", "sha256"), 0x0103: ("ecdh", "sha384")}
ALGO = {v: k for k, v in ALGOS.items()}
_P384 = 2
_COORD = 72  # bytes per little-endian coordinate field (48 used for P-384)

#: CPU generations with shipped ARK/ASK, oldest first
GENERATIONS = ("naples", "rome", "milan", "genoa", "turin")


class CertError(UsageError):
    """A certificate or chain that cannot be trusted: the message says which and why."""


def _le(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _hash(name: str):
    from cryptography.hazmat.primitives import hashes

    return {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}[name]


@dataclass(frozen=True)
class Signature:
    """One signature slot of a SEV certificate."""

    usage: int  # of the key that signed
    algo: int
    data: bytes  # the 512 bytes of the slot


@dataclass(frozen=True)
class SevCert:
    """One certificate in the SEV API's format."""

    raw: bytes
    api: tuple[int, int]
    usage: int
    algo: int
    sigs: tuple[Signature, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return USAGES.get(self.usage, hex(self.usage))

    def public_key(self):
        """The P-384 public key (cryptography's), checked to be on the curve."""
        from cryptography.hazmat.primitives.asymmetric import ec

        curve = _le(self.raw[16:20])
        if curve != _P384:
            raise CertError(f"{self.name} certificate: curve {curve} is not P-384 (2), the only one SEV uses")
        x, y = _le(self.raw[20:20 + _COORD]), _le(self.raw[92:92 + _COORD])
        try:
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
        except ValueError:
            raise CertError(f"{self.name} certificate: its public key is not a point on P-384") from None

    def signed_part(self) -> bytes:
        return self.raw[:_BODY]


@dataclass(frozen=True)
class CaCert:
    """An ARK or ASK in AMD's signing-key format."""

    raw: bytes
    kid: bytes
    sid: bytes
    usage: int
    bits: int

    @property
    def name(self) -> str:
        return USAGES.get(self.usage, hex(self.usage))

    @property
    def hash(self) -> str:
        return "sha256" if self.bits == 2048 else "sha384"

    def _part(self, index: int) -> bytes:
        size = self.bits // 8
        return self.raw[64 + index * size:64 + (index + 1) * size]

    def public_key(self):
        from cryptography.hazmat.primitives.asymmetric import rsa

        return rsa.RSAPublicNumbers(_le(self._part(0)), _le(self._part(1))).public_key()

    def signed_part(self) -> bytes:
        return self.raw[:64 + 2 * self.bits // 8]

    def signature(self) -> bytes:
        return self._part(2)[::-1]


def parse_sev_cert(data: bytes, where: str = "certificate") -> SevCert:
    if len(data) < SEV_CERT_SIZE:
        raise CertError(f"{where}: {len(data)} bytes, an SEV certificate has {SEV_CERT_SIZE}")
    version, major, minor = struct.unpack_from("<IBB", data, 0)
    if version != 1:
        raise CertError(f"{where}: version {version}, only version 1 SEV certificates exist")
    usage, algo = struct.unpack_from("<II", data, 8)
    if usage not in (0x1001, 0x1002, 0x1003, 0x1004):
        raise CertError(f"{where}: key usage {usage:#x} is not one of a platform's (OCA, PEK, PDH, CEK)")
    if algo not in ALGOS or ALGOS[algo][0] == "rsa":
        raise CertError(f"{where}: key algorithm {algo:#x} is not ECDSA or ECDH")
    sigs = []
    for off in _SIG_OFFSETS:
        s_usage, s_algo = struct.unpack_from("<II", data, off)
        if s_algo in ALGOS and s_usage in USAGES:  # an empty slot has usage 0x1000 or algorithm 0
            sigs.append(Signature(s_usage, s_algo, bytes(data[off + 8:off + 520])))
    return SevCert(bytes(data[:SEV_CERT_SIZE]), (major, minor), usage, algo, tuple(sigs))


def parse_ca_cert(data: bytes, where: str = "certificate") -> CaCert:
    if len(data) < 64:
        raise CertError(f"{where}: {len(data)} bytes, too short for an AMD signing-key certificate")
    version, = struct.unpack_from("<I", data, 0)
    usage, = struct.unpack_from("<I", data, 36)
    psize, msize = struct.unpack_from("<II", data, 56)
    if version != 1 or usage not in (0x0000, 0x0013):
        raise CertError(f"{where}: not an AMD ARK or ASK certificate (version {version}, usage {usage:#x})")
    if psize != msize or msize not in (2048, 4096):
        raise CertError(f"{where}: key sizes {psize}/{msize} bits, AMD's keys are RSA-2048 or RSA-4096")
    size = 64 + 3 * msize // 8
    if len(data) < size:
        raise CertError(f"{where}: {len(data)} bytes, an RSA-{msize} {USAGES[usage]} has {size}")
    return CaCert(bytes(data[:size]), bytes(data[4:20]), bytes(data[20:36]), usage, msize)


def _is_sev_cert(data: bytes) -> bool:
    return len(data) >= 16 and struct.unpack_from("<I", data, 8)[0] in (0x1001, 0x1002, 0x1003, 0x1004)


def split(data: bytes, where: str) -> list[SevCert | CaCert]:
    """Every certificate in *data*, one after the other: a PDH, libvirt's PEK/OCA/CEK chain,
    ``sevctl export``'s PDH/PEK/OCA/CEK (``--full``: then ASK and ARK)."""
    certs, off = [], 0
    while off < len(data):
        here = f"{where} (at byte {off})"
        if _is_sev_cert(data[off:]):
            cert = parse_sev_cert(data[off:], here)
        else:
            cert = parse_ca_cert(data[off:], here)
        certs.append(cert)
        off += len(cert.raw)
    if not certs:
        raise CertError(f"{where}: empty, no certificate in it")
    return certs


def _verify_ecdsa(signer: SevCert, sig: Signature, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    der = encode_dss_signature(_le(sig.data[:_COORD]), _le(sig.data[_COORD:2 * _COORD]))
    try:
        signer.public_key().verify(der, message, ec.ECDSA(_hash(ALGOS[sig.algo][1])))
    except InvalidSignature:
        return False
    return True


def _verify_rsa(signer: CaCert, signature: bytes, hash_name: str, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import padding

    algorithm = _hash(hash_name)
    try:
        signer.public_key().verify(signature, message,
                                   padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size),
                                   algorithm)
    except (InvalidSignature, ValueError):
        return False
    return True


def signed_by(signer: SevCert | CaCert, cert: SevCert | CaCert) -> bool:
    """Whether *cert* carries a valid signature by *signer*'s key."""
    if isinstance(cert, CaCert):
        if not isinstance(signer, CaCert) or signer.usage != 0x0000 or cert.sid != signer.kid:
            return False
        return _verify_rsa(signer, cert.signature(), signer.hash, cert.signed_part())
    for sig in cert.sigs:
        if sig.usage != signer.usage:
            continue
        kind, hash_name = ALGOS[sig.algo]
        if isinstance(signer, CaCert):
            if kind == "rsa" and hash_name == signer.hash:
                value = _le(sig.data)
                if value.bit_length() <= signer.bits and _verify_rsa(
                        signer, value.to_bytes(signer.bits // 8, "big"), hash_name, cert.signed_part()):
                    return True
        elif kind == "ecdsa" and _verify_ecdsa(signer, sig, cert.signed_part()):
            return True
    return False


def anchors(generation: str) -> tuple[CaCert, CaCert]:
    """AMD's (ARK, ASK) of *generation*, shipped with this plugin."""
    from importlib.resources import files

    base = files("vscen_attest") / "data" / "sev" / generation
    ark = parse_ca_cert(base.joinpath("ark.cert").read_bytes(), f"{generation} ARK")
    ask = parse_ca_cert(base.joinpath("ask.cert").read_bytes(), f"{generation} ASK")
    return ark, ask


@dataclass(frozen=True)
class Chain:
    """A platform's certificates, by usage; ASK and ARK when the file carried them."""

    pdh: SevCert
    pek: SevCert
    oca: SevCert
    cek: SevCert
    ask: CaCert | None = None
    ark: CaCert | None = None


def assemble(certs, where: str) -> Chain:
    """The chain from certificates in any order; each usage at most once, PDH to CEK all there."""
    found: dict[str, SevCert | CaCert] = {}
    for cert in certs:
        if cert.name in found and found[cert.name].raw != cert.raw:
            raise CertError(f"{where}: two different {cert.name} certificates; give one platform's chain")
        found[cert.name] = cert
    missing = [n for n in ("PDH", "PEK", "OCA", "CEK") if n not in found]
    if missing:
        raise CertError(f"{where}: no {', '.join(missing)} certificate (a chain needs PDH, PEK, OCA and CEK: "
                        "--pdh with the PDH, --cert-chain with libvirt's PEK/OCA/CEK or sevctl export's file)")
    return Chain(found["PDH"], found["PEK"], found["OCA"], found["CEK"], found.get("ASK"), found.get("ARK"))


def verify(chain: Chain, generation: str | None = None, trust: dict | None = None) -> str:
    """Check every link from the PDH up to AMD's root key; return the CPU generation.

    *trust* maps generation names to (ARK, ASK) (default: AMD's, shipped); *generation*
    limits the search to one. Raises CertError naming the first link that does not hold.
    """
    trust = trust if trust is not None else {g: anchors(g) for g in GENERATIONS}
    if generation is not None and generation not in trust:
        raise CertError(f"generation: '{generation}' is not one of {', '.join(trust)}")
    wanted = [generation] if generation else list(trust)
    matched = None
    for name in wanted:
        ark, ask = trust[name]
        if signed_by(ask, chain.cek):
            matched = name
            break
    if matched is None:
        others = [g for g in trust if g not in wanted and signed_by(trust[g][1], chain.cek)]
        hint = f": it is signed by AMD's {others[0].capitalize()} ASK (--generation {others[0]})" if others else (
            ": the chip is not vouched for by AMD (no shipped ASK signed it)")
        raise CertError(f"certificate chain: the CEK is not signed by the {' or '.join(g.capitalize() for g in wanted)} "
                        f"ASK{hint}")
    ark, ask = trust[matched]
    if not signed_by(ark, ark):
        raise CertError(f"certificate chain: the {matched} ARK's self-signature does not verify")
    if not signed_by(ark, ask):
        raise CertError(f"certificate chain: the {matched} ASK is not signed by the {matched} ARK")
    for given, ours in ((chain.ask, ask), (chain.ark, ark)):
        if given is not None and given.raw != ours.raw:
            raise CertError(f"certificate chain: the {given.name} in the file is not AMD's {matched} {given.name} "
                            "shipped with vscen; the file's own root is not trusted")
    links = ((chain.oca, chain.oca, "the OCA is not self-signed"),
             (chain.oca, chain.pek, "the PEK is not signed by the OCA"),
             (chain.cek, chain.pek, "the PEK is not signed by the CEK"),
             (chain.pek, chain.pdh, "the PDH is not signed by the PEK"))
    for signer, cert, problem in links:
        if not signed_by(signer, cert):
            raise CertError(f"certificate chain: {problem}")
    if ALGOS[chain.pdh.algo][0] != "ecdh":
        raise CertError(f"certificate chain: the PDH's key algorithm {chain.pdh.algo:#x} is not ECDH")
    chain.pdh.public_key()  # a P-384 point, or a CertError saying it is not
    return matched


def encode_sev_cert(usage: int, algo: int, public_key, api: tuple[int, int] = (0, 0),
                    sigs: tuple[tuple[int, int, bytes], ...] = ()) -> bytes:
    """An SEV certificate of a P-384 *public_key*; *sigs* fill the slots as (usage, algo, 512 bytes),
    the others are empty (usage 0x1000, algorithm 0, as the firmware writes them)."""
    nums = public_key.public_numbers()
    key = struct.pack("<I", _P384) + nums.x.to_bytes(_COORD, "little") + nums.y.to_bytes(_COORD, "little")
    body = struct.pack("<IBBHII", 1, api[0], api[1], 0, usage, algo) + key.ljust(1028, b"\0")
    slots = list(sigs) + [(_INVALID_USAGE, 0, b"")] * (2 - len(sigs))
    out = body + b"".join(struct.pack("<II", u, a) + data.ljust(512, b"\0") for u, a, data in slots)
    assert len(out) == SEV_CERT_SIZE
    return out
