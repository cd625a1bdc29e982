"""The guest's network interface, and multiqueue for it.

``network``
    One ``<interface>`` from ``settings.network``: a libvirt network (``type='network'``, the
    usual NATed ``default``), a host bridge (``type='bridge'``) for a guest on the LAN, or
    user-mode networking (``type='user'``), which needs no privileges and no host setup;
    ``none`` adds nothing. The model is the one asked for (virtio unless told otherwise):
    virtio-net is the paravirtual NIC every current guest has a driver for. No MAC address, so
    the XML stays deterministic and libvirt picks a unique one when the guest is defined. The
    ``network`` host action (plugin ``networks``) makes sure the libvirt network exists and
    runs, or that the bridge exists, before the guest is defined.

``network-multiqueue``
    One queue pair per vCPU on every virtio interface (``<driver name='vhost' queues=N/>``),
    so packet processing spreads over the guest's CPUs instead of funnelling through one.
    Done in ``finish`` to see every interface, whoever added it. Skipped with one vCPU (one
    queue is what it has anyway) and for user-mode networking, which has no tap device and
    so neither vhost nor multiqueue.
"""

from __future__ import annotations

from vscen import Feature, hookimpl

#: the kernel's limit of queues on one tap device (MAX_TAP_QUEUES)
MAX_QUEUES = 256


def apply(domain, ctx) -> None:
    net = ctx.settings.network
    if net.kind == "none":
        return
    iface = domain.ensure("devices").add("interface", type=net.kind)
    if net.kind in ("network", "bridge"):
        iface.add("source", **{net.kind: net.source})
    iface.add("model", type=net.model)


def finish_multiqueue(domain, ctx) -> None:
    vcpu = ctx.settings.vcpu
    devices = domain.find("devices")
    if vcpu < 2 or devices is None:
        return
    queues = min(vcpu, MAX_QUEUES)
    if queues < vcpu:
        ctx.note(f"network-multiqueue: {vcpu} vCPUs but a tap device has at most "
                 f"{MAX_QUEUES} queues; using {MAX_QUEUES}")
    for iface in devices.findall("interface"):
        model = iface.find("model")
        if model is None or model.get("type") != "virtio":
            continue
        if iface.get("type") == "user":
            ctx.note("network-multiqueue: user-mode networking has no tap device, so no "
                     "vhost and no multiqueue; its interface keeps one queue")
            continue
        iface.ensure("driver").set(name="vhost", queues=queues)


FEATURES = (
    Feature(
        name="network",
        summary="the network interface from the settings",
        category="network",
        apply=apply,
        host_actions=("network",),
        details="One <interface>: network=NAME -> type='network' + <source network=NAME/>; "
                "bridge=NAME -> type='bridge' + <source bridge=NAME/>; user -> type='user'; "
                "none -> nothing; <model type=MODEL/> (virtio by default). Host action "
                "'network': starts the libvirt network, or defines it where it is missing.",
    ),
    Feature(
        name="network-multiqueue",
        summary="one vhost queue per vCPU on virtio interfaces",
        category="network",
        requires=("network",),
        finish=finish_multiqueue,
        details="<driver name='vhost' queues=VCPU/> on every virtio interface (not with one "
                "vCPU, not for user-mode networking), so network load spreads over the vCPUs.",
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
