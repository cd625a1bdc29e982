"""What a guest with a desktop needs: a display, a video card, sound, USB input.

``graphics``
    The remote display from ``settings.graphics`` (spice unless told otherwise). Spice gives
    the guest clipboard sharing, USB redirection and audio over one connection, and the
    ``spicevmc`` channel is how the guest's spice agent reaches the client for them. No
    spice-only children on the ``<graphics>`` element itself, so that ``--set
    ./devices/graphics/@type=vnc`` gives a valid vnc display. ``autoport`` lets libvirt pick a
    free port, so several guests never clash, and the ``address`` listen keeps libvirt's
    default (localhost) listen address. Where the host does not offer spice (QEMU built
    without it), vnc, with a note; ``none`` adds no display.

``video-virtio``
    A virtio GPU, the primary (and only) head: current guests have a driver for it and it
    resizes with the client window. vga, with a note, where the host does not offer virtio.

``audio``
    An Intel HDA (``ich9``) sound card, which every guest OS has a driver for, wired to the
    ``spice`` audio backend, so sound reaches the spice client. With a vnc display (chosen, or
    the host offers no spice) or none, no sound device and a note: libvirt routes guest sound
    only to spice, and a card wired to ``<audio type='none'>`` plays into nothing. The display
    is derived from the settings and the host exactly as ``graphics`` derives its type,
    because features apply in name order and ``audio`` comes before ``graphics``.

``usb-xhci``
    A USB 3 (``qemu-xhci``) controller with 15 ports: one controller for USB 1 to 3 devices,
    with fewer interrupts than the older EHCI/UHCI combination.

``usb-tablet``
    A USB tablet, which reports absolute positions, so the pointer follows the client's
    without grabbing it. It needs a USB controller, hence it implies ``usb-xhci``.
"""

from __future__ import annotations

from vscen import Conflict, Feature, hookimpl

HEADLESS = Conflict("headless", "a headless guest has no display or video card")


def display(ctx) -> str | None:
    """The graphics type this guest gets ('spice', 'vnc' or None), noting any fallback."""
    if not ctx.has("graphics"):
        return None
    wanted = ctx.settings.graphics or "spice"
    if wanted == "none":
        return None
    # vnc is the fallback for spice: distributions drop spice from QEMU (RHEL 9) but keep vnc
    for kind in (wanted, "vnc") if wanted == "spice" else (wanted,):
        if ctx.host.offers("graphics.type", kind):
            if kind != wanted:
                ctx.note(f"graphics: the host's QEMU does not offer {wanted}; using {kind} "
                         "(no clipboard sharing, USB redirection or audio over the display)")
            return kind
    ctx.note(f"graphics: the host's QEMU does not offer {wanted}"
             + (" nor vnc" if wanted == "spice" else "") + "; the guest has no display")
    return None


def apply_graphics(domain, ctx) -> None:
    kind = display(ctx)
    if kind is None:
        return
    devices = domain.ensure("devices")
    gfx = devices.add("graphics", type=kind, autoport="yes")
    gfx.add("listen", type="address")
    if kind == "spice":
        if ctx.host.offers("channel.type", "spicevmc"):
            devices.add("channel", type="spicevmc").add(
                "target", type="virtio", name="com.redhat.spice.0")
        else:
            ctx.note("graphics: the host offers no spicevmc channel; no spice agent "
                     "(clipboard sharing, display resizing by the agent)")


def apply_video(domain, ctx) -> None:
    model = "virtio"
    if not ctx.host.offers("video.modelType", "virtio"):
        model = "vga"
        ctx.note("video-virtio: the host does not offer a virtio GPU; using vga")
    domain.ensure("devices").add("video").add("model", type=model, heads=1, primary="yes")


def apply_audio(domain, ctx) -> None:
    shown = display(ctx)
    if shown != "spice":
        # libvirt routes a guest's sound to a spice client only: a sound card behind vnc or no
        # display would play into <audio type='none'>, a device with no output
        ctx.note(f"audio: no sound device: {'a vnc display' if shown else 'a guest without a display'} "
                 "carries no sound (spice does: --graphics spice)")
        return
    devices = domain.ensure("devices")
    devices.add("sound", model="ich9").add("audio", id=1)
    devices.add("audio", id=1, type="spice")


def apply_xhci(domain, ctx) -> None:
    domain.ensure("devices").child("controller", type="usb").set(model="qemu-xhci", ports=15)


def apply_tablet(domain, ctx) -> None:
    domain.ensure("devices").child("input", type="tablet", bus="usb")


FEATURES = (
    Feature(
        name="graphics",
        summary="a spice (or vnc) display",
        category="video",
        conflicts=(HEADLESS,),
        apply=apply_graphics,
        details="From settings.graphics (default spice): spice -> <graphics type='spice' "
                "autoport='yes'> with <listen type='address'/> "
                "and the spicevmc channel for the spice agent; vnc -> <graphics type='vnc' "
                "autoport='yes'>; none -> nothing. vnc, with a note, where the host has no spice.",
    ),
    Feature(
        name="video-virtio",
        summary="a virtio GPU",
        category="video",
        conflicts=(HEADLESS,),
        apply=apply_video,
        details="<video><model type='virtio' heads='1' primary='yes'/>; vga, with a note, "
                "where the host does not offer virtio.",
    ),
    Feature(
        name="audio",
        summary="an HDA sound card, played through spice",
        category="sound",
        apply=apply_audio,
        details="<sound model='ich9'><audio id='1'/></sound> and <audio id='1' type=T/>, T "
                "spice when the display is spice, else none.",
    ),
    Feature(
        name="usb-xhci",
        summary="a USB 3 (qemu-xhci) controller",
        category="input",
        apply=apply_xhci,
        details="<controller type='usb' model='qemu-xhci' ports='15'/>",
    ),
    Feature(
        name="usb-tablet",
        summary="a USB tablet: the pointer follows the client's",
        category="input",
        implies=("usb-xhci",),
        apply=apply_tablet,
        details="<input type='tablet' bus='usb'/>, absolute positioning so the pointer is "
                "never grabbed.",
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
