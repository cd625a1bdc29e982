"""Text console, guest agent, no-display guests, and two platform devices.

``serial-console``
    A serial port on a pty with the console on it, so ``virsh console`` reaches the guest's
    boot messages and login prompt without any display.

``guest-agent``
    The virtio-serial channel the QEMU guest agent listens on (``org.qemu.guest_agent.0``),
    through which libvirt freezes filesystems for snapshots, shuts down cleanly and reads the
    guest's addresses.

``headless``
    An explicit ``<video><model type='none'/>``: the guest has no video card even if a display
    is added to it later (libvirt adds a default card for a display that has no ``<video>``),
    which a server guest does not use but pays for in memory and attack surface. It rules out
    ``graphics`` and ``video-virtio``, which would give the guest a display again.

``watchdog``
    An ``i6300esb`` PCI watchdog (a model every x86 and Arm guest kernel has a driver for) that
    resets the guest when it stops feeding it, so a hung guest comes back by itself.

``rng``
    A virtio RNG fed from the host's ``/dev/urandom``, so the guest has entropy from its first
    boot (key generation, TLS) instead of waiting for it. The ``builtin`` backend, with a
    note, where the host does not offer the ``random`` backend.
"""

from __future__ import annotations

from vscen import Conflict, Feature, hookimpl


def apply_serial(domain, ctx) -> None:
    devices = domain.ensure("devices")
    devices.add("serial", type="pty").add("target", port=0)
    devices.add("console", type="pty").add("target", type="serial", port=0)


def apply_agent(domain, ctx) -> None:
    if not ctx.host.offers("channel.type", "unix"):
        ctx.note("guest-agent: the host offers no unix channel; no guest agent")
        return
    domain.ensure("devices").add("channel", type="unix").add(
        "target", type="virtio", name="org.qemu.guest_agent.0")


def apply_headless(domain, ctx) -> None:
    if not ctx.host.offers("video.modelType", "none"):
        # harmless to omit: libvirt adds a default card only for a display, and there is none
        ctx.note("headless: the host does not offer video model 'none'; no <video> written")
        return
    domain.ensure("devices").add("video").add("model", type="none")


def apply_watchdog(domain, ctx) -> None:
    domain.ensure("devices").add("watchdog", model="i6300esb", action="reset")


def apply_rng(domain, ctx) -> None:
    if not ctx.host.offers("rng.model", "virtio"):
        ctx.note("rng: the host does not offer a virtio RNG; the guest gathers its own entropy")
        return
    rng = domain.ensure("devices").add("rng", model="virtio")
    if ctx.host.offers("rng.backendModel", "random"):
        rng.add("backend", model="random").text("/dev/urandom")
    else:
        ctx.note("rng: the host does not offer the 'random' backend; using QEMU's builtin one")
        rng.add("backend", model="builtin")


FEATURES = (
    Feature(
        name="serial-console",
        summary="a serial console on a pty (virsh console)",
        category="console",
        apply=apply_serial,
        details="<serial type='pty'><target port='0'/></serial> and <console type='pty'>"
                "<target type='serial' port='0'/></console>.",
    ),
    Feature(
        name="guest-agent",
        summary="the QEMU guest agent channel",
        category="console",
        apply=apply_agent,
        details="<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>"
                "</channel>: clean shutdown, filesystem freeze, guest addresses.",
    ),
    Feature(
        name="headless",
        summary="no display and no video card",
        category="video",
        conflicts=(
            Conflict("graphics", "a headless guest has no display; graphics would add one"),
            Conflict("video-virtio", "a headless guest has no video card; video-virtio would add one"),
        ),
        apply=apply_headless,
        details="<video><model type='none'/></video>, so libvirt adds no default VGA card.",
    ),
    Feature(
        name="watchdog",
        summary="a watchdog that resets a hung guest",
        category="platform",
        apply=apply_watchdog,
        details="<watchdog model='i6300esb' action='reset'/>",
    ),
    Feature(
        name="rng",
        summary="a virtio RNG fed by the host's /dev/urandom",
        category="platform",
        apply=apply_rng,
        details="<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
