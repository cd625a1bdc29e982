"""The desktop scenario: an interactive graphical guest, pleasant to use from a viewer."""

from vscen import Scenario, hookimpl

DESKTOP = Scenario(
    name="desktop",
    summary="an interactive graphical guest: SPICE display, virtio video, sound, USB tablet",
    details=(
        "For a workstation guest used through virt-viewer or virt-manager. SPICE graphics (VNC "
        "where the host offers no SPICE) with the guest agent channel for clipboard and display "
        "resizing; virtio video; ich9 sound; a USB tablet on an xHCI controller so the pointer "
        "follows the viewer's without grabbing; an emulated TPM and UEFI, which current desktop "
        "systems (Windows 11) expect; a migratable host CPU, so a desktop can be live-migrated "
        "between like hosts; power management so the guest can suspend; a memory balloon so "
        "idle desktops give memory back; with --tune-host, KSM on the host, so similar desktops "
        "share their identical pages. Defaults: machine q35; 4 GiB of memory and 2 vCPUs, what a current "
        "desktop needs to be responsive; graphics spice; the disk is qcow2 (thin, with "
        "snapshots) with cache=writeback and io=threads, which favour interactive latency over "
        "crash consistency, and discard=unmap so space freed in the guest returns to the host."
    ),
    features=(
        "uefi", "graphics", "video-virtio", "audio", "usb-tablet", "usb-xhci", "guest-agent",
        "tpm", "cpu-migratable", "power-management", "acpi", "clock", "storage", "network",
        "memballoon", "rng", "ksm-on",
    ),
    defaults={
        "machine": "q35", "memory": "4GiB", "vcpu": 2, "graphics": "spice",
        "disk": {"format": "qcow2", "cache": "writeback", "io": "threads", "discard": "unmap"},
    },
    validators=("kvm",),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_scenarios(register):
    register(DESKTOP)
