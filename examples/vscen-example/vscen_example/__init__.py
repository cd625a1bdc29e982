"""vscen-example: a headless build machine (``build-box``) and a guest that yields the host's
CPU and disk to others (``low-priority``).

Everything a plugin contributes is data: frozen ``vscen.Feature`` and ``vscen.Scenario``
objects carrying their rules, a ``vscen.Setting`` (``--cpu-shares``), a ``vscen.FactProvider``
(the host's load, ``example.load``) and a ``vscen.Command`` (``vscen example describe NAME``),
registered by the hooks below. Only ``apply`` and the fact's ``read`` are code, and ``apply``
writes vscen's domain model, never XML text.
"""

from vscen import Command, Conflict, FactProvider, Feature, Scenario, Setting, hookimpl

#: cgroup CPU shares of a low-priority guest (libvirt's default is 1024)
CPU_SHARES = 256
#: block I/O weight (100-1000; the kernel's default is 500)
IO_WEIGHT = 200
#: the host's load fact
LOAD = "example.load"


def _shares(text: str) -> int:
    if not text.isdigit() or not 2 <= int(text) <= 262144:
        raise ValueError("is not a whole number of CPU shares from 2 to 262144 (libvirt's default is 1024)")
    return int(text)


CPU_SHARES_SETTING = Setting(
    name="cpu_shares", parse=_shares, default=CPU_SHARES, example="128", metavar="SHARES",
    help="CPU shares of a low-priority guest: its weight against others under contention (default 256 of 1024).",
)


def _read_load(probe):
    """The host's load average over a minute and its online CPUs: only this machine can tell
    (``/proc/loadavg``); None for a remote or recorded host."""
    import os

    if not probe.local:
        return None
    with open("/proc/loadavg") as fh:
        load1 = float(fh.read().split()[0])
    return {"load1": load1, "cpus": os.cpu_count() or 1}


LOAD_FACT = FactProvider(name=LOAD, summary="the host's 1-minute load average and online CPUs (local hosts)",
                         read=_read_load, example={"load1": 0.42, "cpus": 16})


def _low_priority(domain, ctx):
    domain.ensure("cputune/shares").text(ctx.settings.cpu_shares)
    domain.ensure("blkiotune/weight").text(IO_WEIGHT)


LOW_PRIORITY = Feature(
    name="low-priority",
    summary="Yield the host's CPUs and disks to other guests",
    details=f"<cputune><shares>{CPU_SHARES}</shares> (a quarter of the default 1024; --cpu-shares) and "
            f"<blkiotune><weight>{IO_WEIGHT}</weight>: under contention the guest gets less CPU "
            "time and disk bandwidth than its neighbours; an idle host is still all its own.",
    category="cpu",
    conflicts=(Conflict("vcpu-pinning", "pinned vCPUs own their host CPUs; a low-priority guest floats "
                                        "over all of them"),),
    apply=_low_priority,
)


def _describe(domain, ctx):
    s = ctx.settings
    domain.ensure("description").text(f"build box: {s.vcpu} vCPUs, {s.memory // 1024} MiB, made by vscen-example")
    load = ctx.host.fact(LOAD)  # recorded in 'vscen host snapshot', replayed with --host-facts
    if load and load["load1"] > load["cpus"]:
        ctx.note(f"build-box: the host is busy (load {load['load1']:.1f} on {load['cpus']} CPUs): builds will be slow")


BUILD_BOX = Scenario(
    name="build-box",
    summary="A headless builder with many CPUs, a fast raw disk and a serial console",
    details="Host CPU passed through (compilers tune for it), a raw disk with no host cache and "
            "native AIO on its own I/O thread, a serial console and no display; low priority, so "
            "it does not starve interactive guests. Defaults: 8 vCPUs, 16 GiB, a 100 GiB disk.",
    features=("cpu-passthrough", "storage", "iothreads", "network", "serial-console", "headless",
              "acpi", "clock", "rng", "low-priority"),
    defaults={"machine": "q35", "vcpu": 8, "memory": "16GiB",
              "disk": {"size": "100GiB", "format": "raw", "cache": "none", "io": "native"}},
    conflicts=(Conflict("graphics", "a build box is headless: use 'virsh console'"),),
    arches=("x86_64",),  # machine q35
    validators=("kvm",),  # warns on a host without KVM: builds under TCG are very slow
    facts=(LOAD,),  # read at the facts stage only where a build box is chosen
    apply=_describe,
)


@hookimpl
def vscen_register_features(register):
    register(LOW_PRIORITY)


@hookimpl
def vscen_register_scenarios(register):
    register(BUILD_BOX)


@hookimpl
def vscen_register_settings(register):
    register(CPU_SHARES_SETTING)


@hookimpl
def vscen_register_facts(register):
    register(LOAD_FACT)


@hookimpl
def vscen_register_commands(register):
    # a "module:attribute" string: the command's module (and Typer) are imported only when
    # the command line is built
    register(Command(name="example", summary="vscen-example's tools: describe a build box vscen made.",
                     app="vscen_example.cli:app"))
