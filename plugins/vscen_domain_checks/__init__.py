"""Domain checks: rules libvirt's schema cannot express, checked on the finished XML.

Each validator reads ``ctx.xml`` (the rendered ``<domain>``), returns nothing where it does not
apply, and points each failure at the XPath of the offending element so the pipeline can name
the plugin that wrote it. ``launch-security-platform`` (q35 and UEFI for the x86 types) belongs
to the launch-security plugin, which owns the launch-security types.
"""

from __future__ import annotations

from vscen import Check, Validator, hookimpl


def virtio_model(model: str) -> bool:
    """``virtio`` and its variants (``virtio-transitional``, ``virtio-non-transitional``)."""
    return model == "virtio" or model.startswith("virtio-")


def path(el) -> str:
    return el.getroottree().getpath(el)


# -- launch-security-iommu ------------------------------------------------------------------


def is_virtio(el) -> bool:
    """Whether QEMU attaches device *el* as virtio (which may carry ``<driver iommu=...>``)."""
    tag, model = el.tag, el.find("model")
    if tag == "disk":
        return el.find("target[@bus='virtio']") is not None
    if tag == "interface":
        return model is not None and virtio_model(model.get("type", ""))
    if tag == "video":
        return model is not None and model.get("type") == "virtio"
    if tag in ("memballoon", "rng", "vsock"):
        return virtio_model(el.get("model", ""))
    if tag == "input":
        return el.get("bus") == "virtio"
    if tag == "controller":  # virtio-serial, virtio-scsi
        return el.get("type") == "virtio-serial" or virtio_model(el.get("model", ""))
    return tag == "filesystem"  # virtiofs and 9p are both virtio transports


def describe(el) -> str:
    if el.tag == "disk":
        return f"disk {el.find('target').get('dev')}"
    return f"controller {el.get('type')}" if el.tag == "controller" else el.tag


def virtio_devices(root):
    return [el for el in root.iterfind("devices/*") if is_virtio(el)]


def check_launch_security_iommu(ctx):
    root = ctx.xml
    if root.find("launchSecurity") is None:
        return []
    checks = []
    devices = virtio_devices(root)
    for el in devices:
        driver = el.find("driver")
        if driver is None or driver.get("iommu") != "on":
            what = describe(el)
            checks.append(Check(
                "fail", f"the virtio {what} has no iommu='on': a confidential guest's memory is "
                        "encrypted, so virtio must go through the (bounce-buffered) IOMMU",
                fix="add the iommu-platform feature (--feature +iommu-platform)",
                element=path(driver if driver is not None else el),
            ))
    # virtio channels and consoles sit on a virtio-serial controller; one libvirt adds by itself
    # has no iommu='on'
    uses_serial = root.xpath("devices/channel[target/@type='virtio'] | "
                             "devices/console[target/@type='virtio']")
    if uses_serial and root.find("devices/controller[@type='virtio-serial']") is None:
        checks.append(Check(
            "fail", "virtio channels need a virtio-serial controller, and the one libvirt adds by "
                    "itself has no iommu='on'",
            fix="add <controller type='virtio-serial'><driver iommu='on'/></controller> (the "
                "iommu-platform feature does)", element=path(uses_serial[0]),
        ))
    if not checks and devices:
        checks.append(Check("pass", f"all {len(devices)} virtio devices have iommu='on'"))
    return checks


# -- virtiofs-shared-memory -----------------------------------------------------------------


def check_virtiofs_shared_memory(ctx):
    root = ctx.xml
    shares = root.xpath("devices/filesystem[driver/@type='virtiofs']")
    if not shares:
        return []
    # libvirt also accepts shared memory given per NUMA cell
    cells = root.findall("cpu/numa/cell")
    shared = root.find("memoryBacking/access[@mode='shared']") is not None or (
        bool(cells) and all(c.get("memAccess") == "shared" for c in cells))
    if shared:
        return [Check("pass", "virtiofs has shared guest memory")]
    return [Check(
        "fail", "virtiofs needs shared guest memory (virtiofsd maps the guest's RAM), and "
                "<memoryBacking> has no <access mode='shared'/>",
        fix="add <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking> "
            "(the host-filesystem feature does)",
        element=path(fs),
    ) for fs in shares]


# -- io-native-cache ------------------------------------------------------------------------


def check_io_native_cache(ctx):
    drivers = ctx.xml.xpath("devices/disk/driver[@io='native']")
    if not drivers:
        return []
    checks = []
    for driver in drivers:
        cache = driver.get("cache")
        if cache not in ("none", "directsync"):
            checks.append(Check(
                "fail", f"io='native' needs cache='none' or 'directsync' (O_DIRECT), not "
                        f"{repr(cache) if cache else 'the default cache (writeback)'}",
                fix="set --disk cache=none, or io=threads", element=path(driver),
            ))
    return checks or [Check("pass", "every disk with io='native' bypasses the host page cache")]


# -- host-offers ----------------------------------------------------------------------------

#: (what, XPath of elements, attribute, domcaps enum)
OFFERS = (
    ("video model", "devices/video/model[@type]", "type", "video.modelType"),
    ("graphics type", "devices/graphics[@type]", "type", "graphics.type"),
    ("TPM model", "devices/tpm[@model]", "model", "tpm.model"),
    ("disk bus", "devices/disk/target[@bus]", "bus", "disk.bus"),
)


def check_host_offers(ctx):
    host = ctx.host
    checks, used = [], []
    for what, xpath, attr, enum in OFFERS:
        for el in ctx.xml.xpath(xpath):
            value = el.get(attr)
            used.append(f"{what} {value}")
            if not host.offers(enum, value):
                offered = ", ".join(sorted(host.enums.get(enum, ())))
                checks.append(Check(
                    "fail", f"the host does not offer {what} '{value}' (it offers {offered})",
                    fix=f"choose one of {offered}", element=path(el),
                ))
    if checks or not used:
        return checks
    return [Check("pass", "the host offers " + ", ".join(dict.fromkeys(used)))]


VALIDATORS = (
    Validator(name="launch-security-iommu", kind="domain",
              summary="a confidential guest's virtio devices use the IOMMU",
              check=check_launch_security_iommu),
    Validator(name="virtiofs-shared-memory", kind="domain",
              summary="virtiofs has shared guest memory", check=check_virtiofs_shared_memory),
    Validator(name="io-native-cache", kind="domain",
              summary="io='native' disks bypass the host page cache", check=check_io_native_cache),
    Validator(name="host-offers", kind="domain",
              summary="the host offers every device model the domain uses",
              check=check_host_offers),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_validators(register):
    for v in VALIDATORS:
        register(v)
