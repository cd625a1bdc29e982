"""vscen-example: a headless build machine (``build-box``) and a guest that yields the host's
CPU and disk to others (``low-priority``).

Everything a plugin contributes is data: frozen ``vscen.Feature`` and ``vscen.Scenario``
objects carrying their rules, registered by the two hooks below. Only ``apply`` is code, and it
writes vscen's domain model, never XML text.
"""

from vscen import Conflict, Feature, Scenario, hookimpl

#: cgroup CPU shares of a low-priority guest (libvirt's default is 1024)
CPU_SHARES = 256
#: block I/O weight (100-1000; the kernel's default is 500)
IO_WEIGHT = 200


def _low_priority(domain, ctx):
    domain.ensure("cputune/shares").text(CPU_SHARES)
    domain.ensure("blkiotune/weight").text(IO_WEIGHT)


LOW_PRIORITY = Feature(
    name="low-priority",
    summary="Yield the host's CPUs and disks to other guests",
    details=f"<cputune><shares>{CPU_SHARES}</shares> (a quarter of the default 1024) and "
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
    apply=_describe,
)


@hookimpl
def vscen_register_features(register):
    register(LOW_PRIORITY)


@hookimpl
def vscen_register_scenarios(register):
    register(BUILD_BOX)
