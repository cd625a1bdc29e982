"""The confidential-computing rows of ``vscen host``: what the host offers (the
``launch-security.host`` fact), on a local host the kernel's side, and which types the
installed libvirt knows."""

from __future__ import annotations

from vscen_launch_security.types import TYPES, known_by, param


def _yn(value, yes="yes", no="no", unknown="unknown") -> str:
    return unknown if value is None else yes if value else no


def _param(name: str, value) -> str:
    return f"{name}={_yn(value, 'Y', 'N', 'unset')}"


def rows(value, host, support) -> list[tuple[str, str]]:
    value = value or {"offered": [], "sev": None}
    offered = [t.name for t in TYPES if t.name in value["offered"]]
    sev = value.get("sev")
    local = host.local is not None and value.get("kernel") is not None

    def kernel(name):
        return f"; kernel {_param(name, param(value, name))}" if local else ""

    out = [
        ("AMD SEV", ("offered" + f" (cbitpos {sev['cbitpos']}, reducedPhysBits "
                                 f"{sev['reduced_phys_bits']}, {sev['max_guests']} guests)"
                     if sev else "not offered")
         + (kernel("kvm_amd.sev") + f", /dev/sev {_yn(value.get('sev_device'), 'present', 'absent')}"
            if local else "")),
        ("AMD SEV-ES", ("offered" + (f" ({sev['max_es_guests']} guests)" if sev else "")
                        if "sev-es" in offered else "not offered") + kernel("kvm_amd.sev_es")),
        ("AMD SEV-SNP", ("offered" if "sev-snp" in offered else "not offered") + kernel("kvm_amd.sev_snp")),
        ("Intel TDX", ("offered" if "tdx" in offered else "not offered") + kernel("kvm_intel.tdx")),
    ]
    known = known_by(support)
    out.append(("launch security", f"offered: {', '.join(offered) or 'none'}; the installed "
                                    f"libvirt knows: {', '.join(known) or 'none'}; "
                                    f"usable: {', '.join(t for t in offered if t in known) or 'none'}"))
    return out
