"""The features a named CPU model implies, from libvirt's cpu_map (``index.xml`` and the
``x86_<model>.xml`` files it includes), so that the host CPU's flags are the model's features
plus those domcaps lists with it. Where the cpu_map is not installed, or does not know the
model, a model implies nothing: the caller keeps the explicit features only.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

#: where libvirt installs its CPU map (the same path on Debian, Fedora and SUSE)
CPU_MAP_DIR = Path("/usr/share/libvirt/cpu_map")
#: libvirt's arch names in the cpu_map
_ARCHES = {"x86_64": "x86", "i686": "x86", "aarch64": "arm", "ppc64": "ppc64", "ppc64le": "ppc64",
           "s390x": "s390"}
#: models that name a model they extend (older cpu_maps): followed at most this deep
_MAX_DEPTH = 16


def model_features(arch: str, model: str, cpu_map: Path | None = None) -> frozenset[str]:
    """The features *model* implies on *arch*, from *cpu_map* (default: libvirt's); empty
    where it is not installed or does not know the model."""
    models = _models(str(cpu_map or CPU_MAP_DIR), _ARCHES.get(arch, arch))
    features: set[str] = set()
    seen: set[str] = set()
    name = model
    for _ in range(_MAX_DEPTH):
        if name in seen or name not in models:
            break
        seen.add(name)
        own, parent = models[name]
        features |= own
        if not parent:
            break
        name = parent
    return frozenset(features)


@lru_cache(maxsize=8)
def _models(directory: str, arch: str) -> dict[str, tuple[frozenset[str], str]]:
    """model -> (its own features, the model it extends or ""), read once per process."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root_dir = Path(directory)
    try:
        index = etree.parse(str(root_dir / "index.xml"), parser).getroot()
    except (OSError, etree.XMLSyntaxError):
        return {}
    files = [inc.get("filename", "") for inc in index.iterfind(f"arch[@name='{arch}']/include")]
    # a cpu_map of one file (libvirt before 5.x) holds the models inside index.xml itself
    trees = [index.find(f"arch[@name='{arch}']")]
    for name in files:
        if "/" in name or not name.endswith(".xml"):
            continue
        try:
            trees.append(etree.parse(str(root_dir / name), parser).getroot())
        except (OSError, etree.XMLSyntaxError):
            continue
    models: dict[str, tuple[frozenset[str], str]] = {}
    for tree in trees:
        if tree is None:
            continue
        for m in tree.iterfind("model"):
            parent = m.find("model")
            models[m.get("name", "")] = (frozenset(f.get("name", "") for f in m.iterfind("feature")),
                                         parent.get("name", "") if parent is not None else "")
    return models
