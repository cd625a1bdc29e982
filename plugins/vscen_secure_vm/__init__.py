"""The secure-vm scenario: a confidential guest whose memory the host cannot read.

Rules are data: the features, the default settings and the conflicts below are all there is.
"""

from vscen import Conflict, Scenario, hookimpl

SECURE_VM = Scenario(
    name="secure-vm",
    summary="a confidential guest: memory encrypted by AMD SEV or Intel TDX, measured UEFI boot",
    details=(
        "For workloads that must stay private from the host's administrators: the guest runs "
        "with the strongest launch security the host offers and the installed libvirt knows "
        "(SEV-SNP, TDX, SEV-ES, SEV), which encrypts its memory. UEFI firmware, because the "
        "encrypted launch is measured from the OVMF firmware; iommu-platform, because encrypted "
        "memory forces virtio devices through bounce buffers; locked memory and no memory "
        "balloon, because the host can neither swap nor reclaim encrypted pages; an emulated "
        "TPM for measured boot inside the guest; destroy-on-events, because an encrypted guest "
        "cannot be reset in place (its register state is encrypted), so a reboot must relaunch "
        "it. The host CPU passed through, not migratable (a confidential guest cannot migrate, and "
        "QEMU's default CPU model hides the features the guest's kernel checks for SEV). "
        "Defaults: machine q35, the only x86 machine type confidential guests are supported "
        "on; 4 GiB of memory and 2 vCPUs, since the locked, unswappable memory of a "
        "confidential guest should be sized for it rather than for the 2 GiB general default. "
        "It cannot share host directories: virtiofs would cross the confidentiality boundary. "
        "Its disk is LUKS-encrypted by default (encrypted-disk) wherever the connection keeps "
        "libvirt secrets: with no passphrase given, the key is a random one that only libvirt's "
        "private secret store holds, and vscen destroy removes it with the disk; on the embedded "
        "test driver, which keeps no secrets, a note says the disk is not encrypted; "
        "--no-encrypt-disk leaves encryption out. Secure Boot (--feature +secure-boot) needs "
        "SMM, which SEV-ES, SEV-SNP and TDX guests cannot have: it is refused there and kept "
        "with plain SEV."
    ),
    features=(
        "launch-security", "confidential-host", "cpu-passthrough", "uefi", "iommu-platform", "locked-memory",
        "no-memballoon", "tpm", "destroy-on-events", "acpi", "clock", "storage", "encrypted-disk", "network",
        "serial-console", "rng",
    ),
    defaults={"machine": "q35", "memory": "4GiB", "vcpu": 2},
    conflicts=(
        Conflict("host-filesystem", "sharing a host directory exposes guest data outside the "
                                    "encrypted memory, which a confidential guest exists to prevent"),
    ),
    validators=("kvm", "confidential-computing"),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_scenarios(register):
    register(SECURE_VM)
