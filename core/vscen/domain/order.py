"""Child order of libvirt's domain XML, as libvirt itself formats it (domain_conf.c).

Children not listed keep the order in which they were added, after the listed ones.
"""

ORDER: dict[str, tuple[str, ...]] = {
    "domain": (
        "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory",
        "currentMemory", "blkiotune", "memtune", "memoryBacking", "vcpu", "vcpus",
        "iothreads", "iothreadids", "defaultiothread", "cputune", "numatune", "resource",
        "sysinfo", "bootloader", "bootloader_args", "os", "idmap", "features", "cpu", "clock",
        "on_poweroff", "on_reboot", "on_crash", "on_lockfailure", "pm", "perf", "devices",
        "seclabel", "keywrap", "launchSecurity",
    ),
    "os": ("type", "firmware", "loader", "nvram", "boot", "bootmenu", "smbios", "bios"),
    "cpu": ("model", "vendor", "topology", "cache", "maxphysaddr", "feature", "numa"),
    "cputune": (
        "shares", "period", "quota", "global_period", "global_quota", "emulator_period",
        "emulator_quota", "iothread_period", "iothread_quota", "vcpupin", "emulatorpin",
        "iothreadpin", "vcpusched", "iothreadsched", "emulatorsched", "cachetune", "memorytune",
    ),
    "memoryBacking": ("hugepages", "nosharepages", "locked", "source", "access", "allocation", "discard"),
    "features": (
        "acpi", "apic", "pae", "hap", "viridian", "privnet", "hyperv", "kvm", "xen", "pvspinlock",
        "capabilities", "pmu", "vmport", "gic", "smm", "ioapic", "hpt", "htm", "nested-hv",
        "msrs", "ccf-assist", "cfpc", "sbbc", "ibs", "tcg", "async-teardown", "ras", "ps2",
    ),
    "devices": (
        "emulator", "disk", "controller", "lease", "filesystem", "interface", "smartcard",
        "serial", "parallel", "console", "channel", "input", "tpm", "graphics", "sound",
        "audio", "video", "hostdev", "redirdev", "redirfilter", "hub", "watchdog", "memballoon",
        "rng", "shmem", "memory", "iommu", "vsock", "crypto", "panic",
    ),
    "disk": (
        "driver", "source", "backingStore", "target", "iotune", "boot", "readonly", "shareable",
        "transient", "serial", "wwn", "vendor", "product", "encryption", "address",
    ),
    "interface": (
        "source", "mac", "target", "model", "driver", "boot", "bandwidth", "address",
    ),
    "launchSecurity": (
        "cbitpos", "reducedPhysBits", "policy", "handle", "dhCert", "session",
        "guestVisibleWorkarounds", "idBlock", "idAuth", "hostData", "mrConfigId", "mrOwner",
        "mrOwnerConfig", "quoteGenerationService",
    ),
}

_INDEX = {parent: {tag: i for i, tag in enumerate(tags)} for parent, tags in ORDER.items()}


def position(parent: str, tag: str) -> int:
    """Sort key of *tag* under *parent*; unknown tags go last (stable sort keeps insertion)."""
    return _INDEX.get(parent, {}).get(tag, 10_000)
