"""The ``firmware.descriptors`` fact: the QEMU firmware descriptors installed on the host, the
files libvirt's ``<os firmware='efi'>`` auto-selection chooses from (QEMU's
docs/interop/firmware.json; libvirt src/qemu/qemu_firmware.c), and matching them as libvirt does.

Read on the host itself only (``probe.local``): ``/usr/share/qemu/firmware`` then
``/etc/qemu/firmware``, a file in ``/etc`` replacing the one of the same name, in file name
order (libvirt's privileged daemon does not read the user's ``~/.config``). Each descriptor is
kept as ``{"file", "interfaces", "device", "mode", "features", "targets": [{"architecture",
"machines"}]}``; a file that is not a descriptor is left out.
"""

from __future__ import annotations

import fnmatch

#: where a privileged libvirt looks, lowest precedence first
DIRS = ("usr/share/qemu/firmware", "etc/qemu/firmware")


def read_descriptors(probe):
    if not probe.local:
        return None
    import json

    from vscen import host_path

    found: dict[str, dict] = {}
    for rel in DIRS:
        folder = host_path(rel)
        try:
            names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))
        except OSError:
            continue
        for name in names:
            try:
                doc = json.loads((folder / name).read_text())
            except (OSError, UnicodeDecodeError, ValueError):
                continue
            one = _descriptor(name, doc)
            if one is not None:
                found[name] = one
            else:
                found.pop(name, None)
    return [found[n] for n in sorted(found)]


def _descriptor(name: str, doc) -> dict | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("mapping"), dict):
        return None
    mapping = doc["mapping"]
    targets = [{"architecture": str(t.get("architecture", "")), "machines": [str(m) for m in t.get("machines", [])]}
               for t in doc.get("targets", []) if isinstance(t, dict)]
    return {"file": name, "interfaces": [str(i) for i in doc.get("interface-types", [])],
            "device": str(mapping.get("device", "")), "mode": str(mapping.get("mode", "split")),
            "features": [str(f) for f in doc.get("features", [])], "targets": targets}


def _machine(machine: str) -> str:
    """A machine alias as libvirt expands it before matching (q35 -> pc-q35-*, pc -> pc-i440fx-*)."""
    return {"q35": "pc-q35-0", "pc": "pc-i440fx-0"}.get(machine, machine)


def matches(desc: dict, arch: str, machine: str, want: set[str], refuse: set[str]) -> bool:
    """Whether libvirt would pick *desc* for a UEFI guest of *arch*/*machine* that needs every
    feature of *want* and none of *refuse* (its ``qemuFirmwareMatchDomain``, for what vscen
    writes: the interface, the target, the features)."""
    if "uefi" not in desc["interfaces"]:
        return False
    target = any(t["architecture"] == arch and any(fnmatch.fnmatch(_machine(machine), m) for m in t["machines"])
                 for t in desc["targets"])
    features = set(desc["features"])
    return target and want <= features and not (refuse & features)


def needs(root) -> tuple[set[str], set[str]]:
    """(descriptor features a domain's XML needs, those it refuses): the ``<os><firmware>``
    features asked for on or off, ``requires-smm`` refused where SMM is off, and the launch
    security's own (libvirt: sev -> amd-sev, plus amd-sev-es for the policy's ES bit (0x4),
    sev-snp -> amd-sev-snp, tdx -> intel-tdx)."""
    want: set[str] = set()
    refuse: set[str] = set()
    for feat in root.iterfind("os/firmware/feature"):
        (want if feat.get("enabled") == "yes" else refuse).add(feat.get("name"))
    smm = root.find("features/smm")
    if smm is not None and smm.get("state") == "off":
        refuse.add("requires-smm")
    ls = root.find("launchSecurity")
    if ls is not None:
        kind = ls.get("type")
        if kind == "sev":
            want.add("amd-sev")
            try:
                if int((ls.findtext("policy") or "0").strip(), 16) & 0x4:
                    want.add("amd-sev-es")
            except ValueError:
                pass
        elif kind == "sev-snp":
            want.add("amd-sev-snp")
        elif kind == "tdx":
            want.add("intel-tdx")
    return want, refuse
