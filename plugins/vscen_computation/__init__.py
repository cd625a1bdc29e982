"""The computation scenario: a headless number cruncher tuned for throughput."""

from vscen import Scenario, hookimpl

COMPUTATION = Scenario(
    name="computation",
    summary="a headless guest tuned for throughput: host CPU, huge pages, pinned vCPUs, raw disk",
    details=(
        "For batch and HPC work where every cycle counts. The host CPU passed through with a "
        "matching topology, so compilers and math libraries see every instruction set; vCPUs "
        "pinned to one NUMA cell with its memory, avoiding cross-node traffic; huge pages to "
        "cut TLB misses; an I/O thread for the disk and multi-queue networking, so I/O does "
        "not contend with the vCPUs; no memory balloon, so memory is never taken back mid-job; "
        "headless, with a serial console, and a watchdog that resets a hung guest. With "
        "--tune-host, the host's KSM is switched off (no merging scans, no pages shared with "
        "other guests) and transparent huge pages are given to processes that ask, as QEMU "
        "does for guest RAM (thp-madvise). Defaults: "
        "machine q35; 4 GiB of memory and 2 vCPUs (raise both for real work); graphics none; "
        "the disk is raw (no qcow2 metadata on the I/O path) with cache=none and io=native, "
        "which bypass the host page cache and use Linux native AIO for predictable throughput."
    ),
    features=(
        "cpu-passthrough", "hugepages", "vcpu-pinning", "iothreads", "storage", "network",
        "network-multiqueue", "serial-console", "headless", "watchdog", "acpi", "clock",
        "no-memballoon", "ksm-off", "thp-madvise",
    ),
    defaults={
        "machine": "q35", "memory": "4GiB", "vcpu": 2, "graphics": "none",
        "disk": {"format": "raw", "cache": "none", "io": "native"},
    },
    validators=("kvm",),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_scenarios(register):
    register(COMPUTATION)
