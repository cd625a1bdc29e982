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

from vscen import Conflict, FactProvider, Feature, Scenario, Setting, Validator, hookimpl
from vscen_easy_migration.checks import SAFE_CACHES, SHARED_FS, check_live_migration, check_migration_safe, check_shared_storage
from vscen_easy_migration.cpu import (
    BASELINE,
    GENERIC,
    LEVEL_FEATURES,
    MODELS,
    PEERS,
    CpuChoice,
    NoCommonCpu,
    apply_cpu_baseline,
    baseline_inputs,
    choose_cpu,
    domcaps_choice,
    peers_of,
    read_baseline,
    read_peers,
)

__all__ = ["BASELINE", "GENERIC", "LEVEL_FEATURES", "MODELS", "PEERS", "SAFE_CACHES", "SHARED_FS", "CpuChoice", "NoCommonCpu",
           "baseline_inputs", "check_live_migration", "check_migration_safe", "check_shared_storage", "choose_cpu",
           "domcaps_choice", "peers_of"]


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
    validators=("live-migration", "migration-safe", "shared-storage"),
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


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


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
