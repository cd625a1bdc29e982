"""easy-migration's CPU: the hosts (this one and the --peer hosts, as facts), libvirt's
migratable baseline of their CPUs where it was read, else the newest model every host's
domain capabilities mark usable."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

#: x86 models by vendor, newest first, each with the x86-64 psABI level it reaches (1: the
#: x86-64 baseline; 2: + SSE4.2, POPCNT...; 3: + AVX2, BMI, FMA...; 4: + AVX-512)
MODELS: dict[str, tuple[tuple[str, int], ...]] = {
    "AMD": (
        ("EPYC-Turin", 4), ("EPYC-Genoa", 4), ("EPYC-Milan", 3), ("EPYC-Rome", 3),
        ("EPYC-IBPB", 3), ("EPYC", 3), ("Opteron_G5", 2), ("Opteron_G4", 2), ("Opteron_G3", 1),
        ("Opteron_G2", 1), ("Opteron_G1", 1), ("phenom", 1),
    ),
    "Intel": (
        ("DiamondRapids", 4), ("GraniteRapids", 4), ("SapphireRapids", 4), ("Icelake-Server", 4),
        ("Icelake-Server-noTSX", 4), ("Cooperlake", 4), ("Cascadelake-Server", 4),
        ("Cascadelake-Server-noTSX", 4), ("Skylake-Server-IBRS", 4), ("Skylake-Server", 4),
        ("Skylake-Server-noTSX-IBRS", 4), ("ClearwaterForest", 3), ("SierraForest", 3),
        ("Skylake-Client-IBRS", 3), ("Skylake-Client", 3), ("Skylake-Client-noTSX-IBRS", 3),
        ("Broadwell-IBRS", 3), ("Broadwell", 3), ("Broadwell-noTSX-IBRS", 3), ("Broadwell-noTSX", 3),
        ("Haswell-IBRS", 3), ("Haswell", 3), ("Haswell-noTSX-IBRS", 3), ("Haswell-noTSX", 3),
        ("Snowridge", 2), ("Denverton", 2), ("IvyBridge-IBRS", 2), ("IvyBridge", 2),
        ("SandyBridge-IBRS", 2), ("SandyBridge", 2), ("Westmere-IBRS", 2), ("Westmere", 2),
        ("Nehalem-IBRS", 2), ("Nehalem", 2), ("Penryn", 1), ("Conroe", 1), ("core2duo", 1),
    ),
    "Hygon": (("Dhyana", 3),),
}
#: vendor-neutral models, preferred first: kvm64 is QEMU's common KVM CPU
GENERIC = ("kvm64", "qemu64")
#: the features each x86-64 psABI level adds (libvirt's names: pni is SSE3, abm is LZCNT)
LEVEL_FEATURES = {
    2: ("cx16", "lahf_lm", "pni", "popcnt", "sse4.1", "sse4.2", "ssse3"),
    3: ("abm", "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave"),
    4: ("avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl"),
}
#: what current distributions need (RHEL 9, SLES 16...): below it a vendor model loses to kvm64
DISTRO_LEVEL = 2


@dataclass(frozen=True)
class CpuChoice:
    """The CPU model and features every host of a migration group offers."""

    model: str
    #: "" where the model alone says it
    vendor: str = ""
    #: (policy, name) on top of the model
    features: tuple[tuple[str, str], ...] = ()
    #: how it was chosen, for notes and checks
    how: str = ""
    notes: tuple[str, ...] = ()


class NoCommonCpu(Exception):
    """No CPU model every host runs: the message says why."""


#: the facts this plugin reads at the facts stage
PEERS = "easy-migration.peers"
BASELINE = "easy-migration.baseline"


def hosts_of(ctx) -> list:
    return [ctx.host, *peers_of(ctx)]


def peers_of(ctx) -> list:
    """The other hosts the guest must be able to run on (``--peer``), as host facts."""
    return peers_in(ctx.host)


def peers_in(host) -> list:
    return [_peer(p["source"], tuple(p["documents"])) for p in host.fact(PEERS, [])]


@lru_cache(maxsize=32)
def _peer(source: str, documents: tuple[str, ...]):
    from vscen import host_facts_from_xml

    return host_facts_from_xml(list(documents), source)


# -- the facts: the peers' documents, libvirt's baseline --------------------------------------


def read_peers(probe):
    """Each ``--peer`` as {"source", "documents"}: a libvirt URI opened and probed for the
    guest's arch, machine and domain type (one ``<hostFacts>`` document), or recorded files
    (``caps.xml,domcaps.xml``) as they are. None where no peer is given."""
    from pathlib import Path

    from vscen import UsageError, host_document

    s = probe.settings
    specs = list(getattr(s, "peers", None) or ())
    if not specs:
        return None
    host = probe.host
    arch = getattr(s, "arch", None) or host.arch
    virt_type = getattr(s, "virt_type", None) or host.domain_type
    peers = []
    for spec in specs:
        if "://" in spec:
            peers.append({"source": spec, "documents": [
                host_document(spec, arch, getattr(s, "machine", None), virt_type)]})
            continue
        paths = [Path(p) for p in spec.split(",")]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UsageError(f"--peer {spec}: '{missing[0]}' is neither a libvirt URI "
                             "(qemu+ssh://HOST/system) nor a recorded host facts file")
        try:
            documents = [p.read_text() for p in paths]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--peer {spec}: cannot read it ({exc})") from None
        peers.append({"source": ", ".join(str(p) for p in paths), "documents": documents})
    return peers


def baseline_inputs(settings, host, hosts) -> dict:
    """What libvirt's baseline is computed from: the guest's arch, machine (canonical), domain
    type and every host's host-model CPU; a recorded baseline is used only for the same."""
    arch = getattr(settings, "arch", None) or host.arch
    machine = getattr(settings, "machine", None) or host.machine
    return {"arch": arch, "machine": host.machine_aliases.get(machine, machine),
            "virt_type": getattr(settings, "virt_type", None) or host.domain_type,
            "cpus": [host_model_cpu(h) for h in hosts]}


def read_baseline(probe):
    """libvirt's migratable baseline of this host's and the peers' host-model CPUs, computed
    by this host's hypervisor: {inputs..., "uri", "cpu": XML} or {inputs..., "uri", "error"};
    None where the host is not live (recorded, the embedded test driver)."""
    connection = probe.connection
    if probe.conn is None or connection.is_test:
        return None
    import libvirt

    host = probe.host
    hosts = [host, *peers_in(host)]
    inputs = {**baseline_inputs(probe.settings, host, hosts), "uri": connection.uri}
    missing = [_name(h) for h in hosts if not h.host_model]
    if missing:
        return {**inputs, "error": f"no host-model CPU known for {', '.join(missing)}"}
    try:
        xml = probe.conn.baselineHypervisorCPU(
            host.emulator or None, inputs["arch"], inputs["machine"] or None, inputs["virt_type"],
            inputs["cpus"], libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE)
    except libvirt.libvirtError as exc:
        return {**inputs, "error": f"libvirt's baseline failed: {exc.get_error_message()}"}
    return {**inputs, "cpu": xml}


def _vendor(host) -> str:
    return host.host_model_vendor or host.cpu_vendor


def _name(host) -> str:
    return host.source


# -- 1. libvirt's baseline ------------------------------------------------------------------


def host_model_cpu(host) -> str:
    """The host's host-model CPU (domcaps) as the ``<cpu>`` libvirt's baseline takes."""
    from lxml import etree

    cpu = etree.Element("cpu", mode="custom", match="exact")
    etree.SubElement(cpu, "model", fallback="forbid").text = host.host_model
    if host.host_model_vendor:
        etree.SubElement(cpu, "vendor").text = host.host_model_vendor
    for policy, name in host.host_model_features:
        etree.SubElement(cpu, "feature", policy=policy, name=name)
    return etree.tostring(cpu, encoding="unicode")


def parse_cpu(xml: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(model, vendor, features) of a ``<cpu>`` document."""
    from lxml import etree

    cpu = etree.fromstring(xml.encode())
    return (cpu.findtext("model", "").strip(), cpu.findtext("vendor", "").strip(),
            tuple((f.get("policy", "require"), f.get("name", "")) for f in cpu.iterfind("feature")))


def libvirt_baseline(ctx, hosts) -> CpuChoice | str | None:
    """libvirt's migratable baseline of the hosts' host-model CPUs as read at the facts stage
    (``easy-migration.baseline``); a reason string where it cannot be used; None where it was
    not read (recorded hosts, the embedded driver)."""
    got = ctx.host.fact(BASELINE)
    if got is None:
        return None
    if {k: got.get(k) for k in ("arch", "machine", "virt_type", "cpus")} != \
            baseline_inputs(ctx.settings, ctx.host, hosts):
        return "libvirt's baseline in the host facts was read for other hosts or settings"
    if "cpu" not in got:
        return got.get("error") or "libvirt gave no baseline"
    model, vendor, features = parse_cpu(got["cpu"])
    for peer in hosts[1:]:
        if peer.cpu_models and model not in {m.name for m in peer.cpu_models}:
            return f"libvirt's baseline {model} is not offered by {_name(peer)}"
    return CpuChoice(model, vendor, features, how=f"libvirt's baseline on {got.get('uri', '?')}")


# -- 2. from the domain capabilities --------------------------------------------------------


def level_features(level: int) -> tuple[tuple[str, str], ...]:
    return tuple(("require", f) for n in sorted(LEVEL_FEATURES) if n <= level for f in LEVEL_FEATURES[n])


def domcaps_choice(hosts) -> CpuChoice:
    """The model every host runs, from the domain capabilities alone (deterministic)."""
    unknown = [_name(h) for h in hosts if not h.cpu_models]
    if unknown:
        raise NoCommonCpu(f"no CPU models known for {', '.join(unknown)} (give its domain "
                          "capabilities: virsh domcapabilities)")
    usable = set.intersection(*({m.name for m in h.cpu_models if m.usable == "yes"} for h in hosts))
    known = [(name, level) for models in MODELS.values() for name, level in models if name in usable]
    witness = max(known, key=lambda m: m[1], default=None)
    shared = witness[1] if witness else 1
    vendors = sorted({_vendor(h) or "unknown" for h in hosts})
    if len(vendors) == 1:
        best = next(((n, lv) for n, lv in MODELS.get(vendors[0], ()) if n in usable), None)
        if best and (best[1] >= DISTRO_LEVEL or best[1] >= shared):
            return CpuChoice(best[0], how=f"the newest {vendors[0]} model every host runs")
    generic = next((g for g in GENERIC if g in usable), None)
    if generic is None:
        fallback = max(known, key=lambda m: m[1], default=None)
        if fallback is None:
            raise NoCommonCpu("no named CPU model is usable on every host "
                              f"({', '.join(_name(h) for h in hosts)})")
        return CpuChoice(fallback[0], how="the only kind of model every host runs")
    notes = []
    if len(vendors) > 1:
        notes.append(f"easy-migration: hosts of different CPU vendors ({', '.join(vendors)}): a guest "
                     "sees its host's vendor, which changes when it migrates; test the guest OS")
    if shared >= 2:
        how = (f"the generic {generic} model with the x86-64-v{shared} features (every host "
               f"runs {witness[0]})")
        return CpuChoice(generic, features=level_features(shared), how=how, notes=tuple(notes))
    return CpuChoice(generic, how=f"the generic {generic} model", notes=tuple(notes))


def choose_cpu(ctx) -> CpuChoice:
    """The CPU for the guest (see the module docstring); raises NoCommonCpu."""
    hosts = hosts_of(ctx)
    got = libvirt_baseline(ctx, hosts)
    if isinstance(got, CpuChoice):
        return got
    reason = got or ""
    choice = domcaps_choice(hosts)
    if reason:
        from dataclasses import replace

        choice = replace(choice, notes=(f"easy-migration: {reason}: using the domain "
                                        "capabilities instead",) + choice.notes)
    return choice


def describe(choice: CpuChoice) -> str:
    extra = f" + {len(choice.features)} features" if choice.features else ""
    return f"{choice.model}{extra} ({choice.how})"


def apply_cpu_baseline(domain, ctx) -> None:
    choice = choose_cpu(ctx)
    cpu = domain.ensure("cpu").set(mode="custom", match="exact", check="partial")
    cpu.ensure("model").set(fallback="forbid").text(choice.model)
    if choice.vendor:
        cpu.ensure("vendor").text(choice.vendor)
    for policy, name in choice.features:
        if cpu.find("feature", name=name) is None:  # libvirt's attribute order: policy, name
            cpu.add("feature", policy=policy, name=name)
    for note in choice.notes:
        ctx.note(note)
    hosts = ", ".join(_name(h) for h in hosts_of(ctx))
    ctx.note(f"easy-migration: CPU {describe(choice)} for {hosts}")
