"""The easy-migration scenario: a guest that can live-migrate between the hosts given.

``easy-migration``
    The hosts are the one the guest is built for and every ``--peer`` (a libvirt URI, probed
    for the guest's arch, machine and domain type, or recorded host facts: ``FILE`` or
    ``caps.xml,domcaps.xml``). The peers are host facts: the ``easy-migration.peers``
    provider reads them at the facts stage and keeps their documents; ``peers_of(ctx)``
    parses them. What pins a guest to one host is left
    out or refused: a host CPU (``cpu-passthrough``, ``cpu-migratable``), pinned vCPUs
    (``vcpu-pinning``), shared host directories (``host-filesystem``), assigned host devices
    (``host-hardware``, ``--hostdev``) and confidential memory (``launch-security``: libvirt
    cannot migrate it). Huge pages are allowed: libvirt migrates such a guest when the
    destination has as many free pages of that size, and says so when it has not. Disks use
    ``cache=none``: libvirt refuses to live-migrate a disk the host caches (it would lose
    writes still in the source's page cache) unless forced with ``--unsafe``.

``cpu-baseline``
    ``<cpu mode='custom' match='exact' check='partial'>`` with a named model every host runs,
    ``fallback='forbid'`` (a host that does not know the model refuses to start the guest
    rather than give it another CPU). ``check='partial'``: libvirt checks the model against
    the host before starting the guest. The model comes from:

    1. libvirt's baseline, read at the facts stage from a live host (a qemu connection; the
       ``easy-migration.baseline`` fact, which ``vscen host snapshot`` records for the host
       alone and the default settings): ``baselineHypervisorCPU`` with the host-model CPU of
       every host (domain capabilities) and ``VIR_CONNECT_BASELINE_CPU_MIGRATABLE`` (no
       invariant TSC or other feature a migration cannot carry). This host's QEMU answers,
       for the guest's domain type, so for ``--virt-type qemu`` it is a CPU TCG emulates; the
       model and the features libvirt adds to it are written as libvirt gives them. It is
       used only when it was read for this guest's arch, machine, domain type and hosts, and
       every peer's domain capabilities list that model.
    2. Otherwise (recorded host facts without a matching baseline, the embedded test driver,
       a peer with a CPU model the
       local libvirt does not know, such as libvirt 9.0 and an EPYC-Genoa host), vscen's own
       choice from the domain capabilities alone, so the result depends only on the facts and
       golden files stay byte for byte: the named models every host marks ``usable='yes'``
       (unversioned names only, which every QEMU resolves alike); of those, the newest model
       of the hosts' common vendor in the table below, where it reaches at least x86-64-v2
       (what current distributions need) or nothing generic does better; else, and always
       for hosts of different vendors, the generic ``kvm64`` model plus the features of the
       highest x86-64 psABI level (v2, v3, v4) that some model usable on every host carries
       (every host runs Haswell-noTSX: the v3 features). A guest sees its host's CPU vendor
       (QEMU passes it through with KVM), so across vendors it sees the vendor change when it
       migrates: a note says to test the guest OS.

    x86 only: the model table and the psABI levels are x86's.

Validators: ``live-migration`` (host: the peers are readable, of the same arch and domain
type, a common CPU model exists; no ``--hostdev``), ``migration-safe`` (domain: a named CPU
model, no ``<hostdev>`` or ``<filesystem>``, every disk ``cache='none'`` or ``'directsync'``)
and ``shared-storage`` (domain: each disk is a network disk or lies on a shared file system,
told from the host's mounts where the facts carry them; a disk on a local file system can
still migrate with ``virsh migrate --copy-storage-all``, which copies it: a warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from vscen import Check, Conflict, FactProvider, Feature, Scenario, Setting, Validator, hookimpl

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
#: file systems every host can mount at the same path (/proc/mounts types)
SHARED_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "ceph", "fuse.ceph-fuse", "glusterfs", "fuse.glusterfs",
    "gpfs", "lustre", "beegfs", "9p", "virtiofs", "ocfs2", "gfs2",
})
#: disk caches libvirt live-migrates without --unsafe
SAFE_CACHES = ("none", "directsync")


@dataclass(frozen=True)
class CpuChoice:
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


# -- validators -----------------------------------------------------------------------------


def check_live_migration(ctx):
    host, peers = ctx.host, peers_of(ctx)
    checks = []
    arch = ctx.settings.arch or host.arch
    domain_type = ctx.settings.virt_type or host.domain_type
    if not peers:
        checks.append(Check("warn", "no --peer given: the guest can move only to hosts like this one",
                            fix="name every other host: --peer qemu+ssh://HOST/system, or --peer "
                                "FILE with its recorded facts (vscen host snapshot)"))
    for peer in peers:
        if peer.arch != arch:
            checks.append(Check("fail", f"peer {peer.source} is {peer.arch}, the guest {arch}",
                                fix="a guest migrates only between hosts of its arch"))
        elif not peer.has_domcaps:
            checks.append(Check("fail", f"peer {peer.source}: no domain capabilities, so its CPU "
                                        "models are unknown",
                                fix="record them there: virsh domcapabilities > domcaps.xml, or "
                                    "vscen host snapshot"))
        elif peer.domain_type != domain_type:
            checks.append(Check("fail", f"peer {peer.source} offers {peer.domain_type} guests, this "
                                        f"one is {domain_type}",
                                fix="give --virt-type qemu for TCG on every host, or enable KVM on "
                                    "the peer"))
    if ctx.settings.get("hostdev", ()):
        checks.append(Check("fail", f"--hostdev {', '.join(ctx.settings.get('hostdev', ()))}: an assigned "
                                    "host device ties the guest to this host (libvirt refuses to "
                                    "migrate it)",
                            fix="drop --hostdev; give the guest a virtio device instead"))
    if any(c.status == "fail" for c in checks):
        return checks
    try:
        choice = choose_cpu(ctx)
    except NoCommonCpu as exc:
        return checks + [Check("fail", f"no common CPU model: {exc}",
                               fix="leave out the host that has nothing in common with the others")]
    where = ", ".join(h.source for h in hosts_of(ctx))
    return checks + [Check("pass", f"CPU {describe(choice)} runs on {where}")]


def _path(el) -> str:
    return el.getroottree().getpath(el)


def _disks(root):
    return [d for d in root.iterfind("devices/disk") if d.get("device", "disk") == "disk"]


def check_migration_safe(ctx):
    if not ctx.has("easy-migration"):
        return []
    root, checks = ctx.xml, []
    cpu = root.find("cpu")
    mode = cpu.get("mode", "custom") if cpu is not None else "none"
    if mode in ("host-passthrough", "maximum", "host-model") or cpu is None or cpu.find("model") is None:
        checks.append(Check("fail", f"the CPU is {mode}, not a named model: it may not exist on "
                                    "the other hosts", fix="keep the cpu-baseline CPU",
                            element=_path(cpu if cpu is not None else root)))
    for el in root.iterfind("devices/hostdev"):
        checks.append(Check("fail", "an assigned host device ties the guest to this host",
                            fix="drop it (host-hardware, --hostdev)", element=_path(el)))
    for el in root.iterfind("devices/filesystem"):
        checks.append(Check("fail", "a shared host directory ties the guest to this host",
                            fix="drop host-filesystem; share over the network (NFS) instead",
                            element=_path(el)))
    for disk in _disks(root):
        driver = disk.find("driver")
        cache = driver.get("cache", "default") if driver is not None else "default"
        if cache not in SAFE_CACHES:
            checks.append(Check("fail", f"disk cache '{cache}': libvirt refuses to live-migrate a "
                                        "disk the host caches (writes in the source's page cache "
                                        "would be lost)",
                                fix="--disk cache=none", element=_path(driver if driver is not None else disk)))
    return checks or [Check("pass", f"{cpu.findtext('model')} CPU, no host devices, uncached disks")]


def check_shared_storage(ctx):
    if not ctx.has("easy-migration"):
        return []
    local = ctx.host.local
    checks = []
    for disk in _disks(ctx.xml):
        source = disk.find("source")
        where = _path(disk)
        if disk.get("type") == "network":
            what = source.get("protocol", "network") if source is not None else "network"
            checks.append(Check("pass", f"{what} disk: every host reaches it", element=where))
            continue
        path = (source.get("file") or source.get("dev") or "") if source is not None else ""
        mount = local.mount_of(path) if local is not None and local.mounts else None
        if mount is None:
            checks.append(Check("warn", f"{path or 'a disk'}: cannot tell whether it is on shared "
                                        "storage (the host's mounts are not known here)",
                                fix="keep it on storage every host mounts at the same path (NFS, "
                                    "Ceph, GlusterFS...) or use a network disk; else migrate with "
                                    "virsh migrate --copy-storage-all", element=where))
        elif mount.fstype in SHARED_FS:
            checks.append(Check("pass", f"{path} is on {mount.fstype} ({mount.path})", element=where))
        else:
            checks.append(Check("warn", f"{path} is on a local file system ({mount.fstype} at "
                                        f"{mount.path}): the other hosts do not see it",
                                fix="put it on storage every host mounts at the same path (NFS, "
                                    "Ceph, GlusterFS...) or use a network disk; else migrate with "
                                    "virsh migrate --copy-storage-all, which copies the whole disk",
                                element=where))
    return checks


# -- registration ---------------------------------------------------------------------------


CPU_BASELINE = Feature(
    name="cpu-baseline",
    summary="a named CPU model every host (this one and each --peer) runs",
    category="cpu",
    arches=("x86_64",),
    conflicts=(Conflict("cpu-passthrough", "the host's own CPU may not exist on the other hosts"),
               Conflict("cpu-migratable", "a passed-through CPU, even migratable, matches only "
                                          "identical hosts")),
    details="<cpu mode='custom' match='exact' check='partial'><model fallback='forbid'>: libvirt's "
            "migratable baseline of every host's host-model on a live host, else the newest model "
            "every host's domain capabilities mark usable (or kvm64 with x86-64-vN features)",
    facts=(PEERS, BASELINE),
    apply=apply_cpu_baseline,
)

EASY_MIGRATION = Scenario(
    name="easy-migration",
    summary="a guest that can live-migrate between this host and the --peer hosts",
    details=(
        "For guests that must move between hosts without stopping (maintenance, load "
        "balancing). A named CPU model every host runs (libvirt's baseline of the hosts' CPUs), "
        "so the guest never sees an instruction set vanish; disks without host caching "
        "(cache=none), which libvirt requires to migrate them, ideally on shared storage; "
        "nothing that ties the guest to one host: no passthrough CPU, no pinning, no shared "
        "host directories, no assigned devices, no confidential memory. Give the other hosts "
        "with --peer URI or --peer FILE (repeatable). Defaults: machine q35, 4 GiB, 2 vCPUs, "
        "qcow2 disk with cache=none and io=native."
    ),
    features=("cpu-baseline", "storage", "network", "serial-console", "acpi", "clock"),
    defaults={"machine": "q35", "memory": "4GiB", "vcpu": 2,
              "disk": {"format": "qcow2", "cache": "none", "io": "native"}},
    conflicts=(
        Conflict("vcpu-pinning", "pinned host CPUs are this host's; another host may not have them"),
        Conflict("host-filesystem", "a shared host directory cannot follow the guest to another host"),
        Conflict("host-hardware", "an assigned host device cannot follow the guest to another host"),
        Conflict("launch-security", "libvirt cannot live-migrate a confidential (SEV, TDX) guest"),
    ),
    validators=("live-migration",),
    facts=(PEERS,),
)

VALIDATORS = (
    Validator(name="live-migration", kind="host", check=check_live_migration,
              summary="the peers are readable and alike, and a CPU model runs on every host"),
    Validator(name="migration-safe", kind="domain", check=check_migration_safe,
              summary="easy-migration: a named CPU, no host devices or directories, uncached disks"),
    Validator(name="shared-storage", kind="domain", check=check_shared_storage,
              summary="easy-migration: disks on shared storage or the network"),
)


@hookimpl
def vscen_register_features(register):
    register(CPU_BASELINE)


@hookimpl
def vscen_register_scenarios(register):
    register(EASY_MIGRATION)


FACTS = (
    FactProvider(
        name=PEERS, read=read_peers,
        summary="the --peer hosts' libvirt capabilities and domain capabilities, as documents",
        example=[{"source": "qemu+ssh://kvm7/system",
                  "documents": ["<hostFacts libvirtVersion='10.0.0'><capabilities>...</capabilities>"
                                "<domainCapabilities>...</domainCapabilities></hostFacts>"]}],
        setting="peers", unused="--peer: no chosen scenario or feature looks at other hosts; ignored"),
    FactProvider(
        name=BASELINE, read=read_baseline,
        summary="libvirt's migratable baseline CPU of this host and the --peer hosts, and what "
                "it was computed for",
        example={"arch": "x86_64", "machine": "pc-q35-7.2", "virt_type": "kvm",
                 "cpus": ["<cpu mode='custom' match='exact'>...</cpu>"], "uri": "qemu:///system",
                 "cpu": "<cpu mode='custom' match='exact'><model fallback='forbid'>EPYC-Milan"
                        "</model>...</cpu>"}),
)


@hookimpl
def vscen_register_validators(register):
    for v in VALIDATORS:
        register(v)


@hookimpl
def vscen_register_facts(register):
    for f in FACTS:
        register(f)


@hookimpl
def vscen_register_settings(register):
    register(Setting(name="peers", option="--peer", repeatable=True, metavar="HOST", parse=_peer_spec,
                     example="qemu+ssh://kvm8/system",
                     help="Another host the guest must run on: a libvirt URI, or its recorded host facts "
                          "(FILE[,FILE]). Repeatable."))


def _peer_spec(value: str) -> str:
    if not value.strip() or "\0" in value:
        raise ValueError("is neither a libvirt URI nor a file name")
    return value
