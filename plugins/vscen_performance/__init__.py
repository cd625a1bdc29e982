"""Performance features, each usable on its own and with the scenarios.

They tune what other features added, so most of the work is done in ``finish``; where another
feature or a setting already chose a value, they keep it (the domain model would otherwise
report two features setting one path) and a note says what was kept and how to change it.

``storage-perf``
    Every disk (not the cdrom): ``cache='none'`` (no double caching in the host's page cache;
    O_DIRECT, so the host file system must support it: not tmpfs) and ``io='native'`` (Linux
    AIO, what ``cache='none'`` is made for; ``io_uring``, which libvirt 9.0 accepts, is left to
    ``--disk io=io_uring`` because a QEMU built without liburing fails to start the guest and
    libvirt's capabilities cannot tell), ``discard='unmap'`` (the guest's TRIM frees space in
    the image) and ``detect_zeroes='unmap'`` (zero writes become unmaps: a mkfs or a zero fill
    costs metadata only; ``'on'`` where discard is off). Virtio disks also get one I/O thread
    each (``<iothreads>N`` and ``iothread=i``: disks do not wait on each other or on QEMU's
    main loop) and ``queues`` = vCPUs (multi-queue virtio-blk: each vCPU submits on its own
    queue). A cache, io or discard value the disk settings chose (the user's, or a scenario's
    such as desktop's writeback) is kept, with a note: settings outrank features. With the
    ``iothreads`` feature, its shared I/O thread is kept too.

``network-perf``
    Every virtio interface: vhost (``<driver name='vhost'>``: packets are moved by the host
    kernel, not QEMU's main loop), one queue pair per vCPU (at most 256, the tap limit; the
    same values ``network-multiqueue`` writes, so the two agree) and ``rx_queue_size='1024'``
    (a deeper receive ring drops fewer packets in bursts). No ``tx_queue_size``: QEMU keeps the
    transmit ring at 256 for every backend but vhost-user and vDPA, so 1024 would be a value the
    guest never gets. User-mode networking has no tap device: receive ring only.

``video-perf``
    A virtio GPU (it implies ``video-virtio``) with 3D acceleration (virgl:
    ``<acceleration accel3d='yes'/>``, rendered on the host's GPU through an
    ``<graphics type='egl-headless'/>`` display next to spice or vnc, so remote clients still
    see it), where the host offers egl-headless and lists a DRM render node (libvirt's node
    devices, so remote and recorded hosts are read as libvirt sees them) and, on this machine,
    QEMU's ``hw-display-virtio-gpu-gl`` module is installed (both are host facts, read at the
    facts stage and recorded by ``vscen host snapshot``) (distributions ship it apart, and
    libvirt's capabilities list egl-headless without it; the guest would not start). Elsewhere the plain
    virtio GPU, with a note: virtio-gpu has no VRAM to enlarge (its framebuffers live in guest
    RAM), so there is nothing more to tune in 2D. Not in a confidential guest: the host cannot
    read the encrypted guest memory virgl's resources live in. Conflicts with ``headless``.

``cpu-perf``
    ``cpu-passthrough`` (implied: the host CPU, ``migratable='off'``, a topology of the host's
    threads per core) plus ``<cache mode='passthrough'/>``: the guest sees the host's cache
    sizes and sharing, so its scheduler and math libraries size their work to the real caches.
    The invariant TSC reaches the guest where the host has it, because ``migratable='off'``
    passes non-migratable features (an explicit ``<feature name='invtsc'/>`` would only make
    the start fail where the host lacks it). Cache passthrough needs host-passthrough: skipped,
    with a note, where the host (TCG) does not offer it. Conflicts with ``cpu-migratable``.

``clock-perf``
    ``clock`` (implied: UTC, RTC catch-up, PIT delay, no HPET) plus
    ``<timer name='kvmclock' present='yes'/>``: the paravirtual clock, read from shared memory
    without a VM exit (KVM only: skipped under TCG). The guest reads its TSC natively where the
    CPU is passed through non-migratable (``cpu-perf``, ``cpu-passthrough``), which is what
    lets Linux use the TSC as its clock source; a note says so where the CPU is migratable.
    No ``<timer name='tsc' mode='native'/>``: libvirt's QEMU driver ignores the tsc mode (it is
    a Xen setting), so it would promise what it does not do.
"""

from __future__ import annotations

from vscen import Conflict, FactProvider, Feature, hookimpl

#: the kernel's limit of queues on one tap device, as network-multiqueue uses it
MAX_NET_QUEUES = 256
#: QEMU's limit of virtqueues per device (VIRTIO_QUEUE_MAX)
MAX_BLK_QUEUES = 1024
RX_QUEUE_SIZE = 1024
#: interface types with a tap (or macvtap) device, which vhost-net serves
VHOST_TYPES = ("network", "bridge", "direct", "ethernet")
#: where distributions install QEMU's loadable modules, and the one 3D virtio-gpu needs
QEMU_MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/qemu", "/usr/lib/aarch64-linux-gnu/qemu", "/usr/lib64/qemu",
                    "/usr/lib/qemu")
VIRGL_MODULE = "hw-display-virtio-gpu-gl.so"
HEADLESS = Conflict("headless", "a headless guest has no video card to accelerate")


def _virtio_disk(disk) -> bool:
    target = disk.find("target")
    return target is not None and target.get("bus") == "virtio"


def _target(disk) -> str:
    target = disk.find("target")
    return target.get("dev") if target is not None else "?"


# -- storage-perf -------------------------------------------------------------------------


def finish_storage(domain, ctx) -> None:
    devices = domain.find("devices")
    disks = devices.findall("disk", device="disk") if devices is not None else []
    if not disks:
        return
    vcpu = ctx.settings.vcpu
    kept: dict[tuple[str, str], list[str]] = {}
    for disk in disks:
        driver = disk.ensure("driver")
        cache, io = driver.get("cache"), driver.get("io")
        if cache is None:
            cache = "none"
            driver.set(cache=cache)
        if io is None and cache in ("none", "directsync"):
            io = "native"
            driver.set(io=io)
        if cache not in ("none", "directsync") or io not in ("native", "io_uring"):
            kept.setdefault((cache, io or "default"), []).append(_target(disk))
        discard = driver.get("discard")
        if discard is None:
            discard = "unmap"
            driver.set(discard=discard)
        driver.set(detect_zeroes="unmap" if discard == "unmap" else "on")
        if _virtio_disk(disk) and vcpu > 1:
            driver.set(queues=min(vcpu, MAX_BLK_QUEUES))
    for (cache, io), targets in kept.items():
        ctx.note(f"storage-perf: {', '.join(targets)} keep{'s' if len(targets) == 1 else ''} cache='{cache}' "
                 f"io='{io}' from the disk settings ({_disk_source(ctx.settings)}); "
                 "cache=none,io=native is faster where the host's file system supports O_DIRECT "
                 "(--disk cache=none,io=native)")
    if vcpu > MAX_BLK_QUEUES and any(_virtio_disk(d) for d in disks):
        ctx.note(f"storage-perf: {vcpu} vCPUs but a virtio disk has at most {MAX_BLK_QUEUES} queues")
    _iothread_per_disk(domain, ctx, [d for d in disks if _virtio_disk(d)])


def _disk_source(settings) -> str:
    """Where the disks' settings came from: --disk, or the layer that set disk.cache."""
    return "--disk" if settings.source("disks") == "option" else settings.source("disk.cache")


def _iothread_per_disk(domain, ctx, disks) -> None:
    if not disks:
        return
    if ctx.has("iothreads"):
        if len(disks) > 1:
            ctx.note("storage-perf: the iothreads feature serves every virtio disk from one I/O thread; "
                     "no thread per disk (--feature -iothreads gives each disk its own)")
        return
    if ctx.host.has_domcaps and "iothreads" not in ctx.host.supported:
        ctx.note("storage-perf: the host's domain capabilities do not list I/O threads; disks use "
                 "QEMU's main loop")
        return
    domain.ensure("iothreads").text(len(disks))
    for i, disk in enumerate(disks, 1):
        disk.ensure("driver").set(iothread=i)


# -- network-perf -------------------------------------------------------------------------


def finish_network(domain, ctx) -> None:
    devices = domain.find("devices")
    vcpu = ctx.settings.vcpu
    for iface in devices.findall("interface") if devices is not None else ():
        model = iface.find("model")
        kind = iface.get("type")
        if model is None or model.get("type") != "virtio":
            ctx.note(f"network-perf: the {kind} interface's model is "
                     f"{model.get('type') if model is not None else 'the default'}, not virtio: left as it is")
            continue
        driver = iface.ensure("driver")
        if kind in VHOST_TYPES:
            driver.set(name="vhost")
            if vcpu > 1:
                driver.set(queues=min(vcpu, MAX_NET_QUEUES))
        else:
            ctx.note(f"network-perf: a {kind} interface has no tap device, so no vhost and no "
                     "multiqueue; only its receive ring is enlarged")
        driver.set(rx_queue_size=RX_QUEUE_SIZE)


# -- video-perf ---------------------------------------------------------------------------


#: the facts video-perf reads, read at the facts stage (and recorded by vscen host snapshot)
RENDER_NODES = "performance.render-nodes"
DISPLAY_MODULES = "performance.qemu-display-modules"


def read_render_nodes(probe) -> list[str] | None:
    """The DRM render nodes the connection's host lists (libvirt node devices, so a remote
    host is read as libvirt sees it); None where there is no connection (recorded hosts)."""
    conn = probe.conn
    if conn is None:
        return None
    import libvirt
    from lxml import etree

    try:
        found = conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_DRM)
        xmls = [etree.fromstring(dev.XMLDesc(0).encode()) for dev in found]
    except libvirt.libvirtError:
        return []
    return sorted(x.findtext("name") for x in xmls if x.findtext("capability[@type='drm']/type") == "render")


def read_display_modules(probe) -> list[dict] | None:
    """On this machine: QEMU's module directories that hold display modules, with them
    ({"dir", "modules"}, in QEMU_MODULE_DIRS' order); None elsewhere (only this machine's
    files can tell, and libvirt's capabilities do not)."""
    if not probe.local:
        return None
    import os

    found = []
    for moddir in QEMU_MODULE_DIRS:
        if os.path.isdir(moddir):
            modules = sorted(f for f in os.listdir(moddir) if f.startswith("hw-display-"))
            if modules:
                found.append({"dir": moddir, "modules": modules})
    return found


def render_nodes(ctx) -> list[str]:
    """The host's DRM render nodes (a fact); [] where unknown."""
    return ctx.host.fact(RENDER_NODES, [])


def missing_virgl(ctx) -> str | None:
    """The module directory of a QEMU built with modules that lacks the virtio-gpu-gl device
    (a fact of a local host), which libvirt's capabilities do not tell; None where unknown."""
    for entry in ctx.host.fact(DISPLAY_MODULES, []):
        if VIRGL_MODULE not in entry["modules"]:
            return entry["dir"]
    return None


def finish_video(domain, ctx) -> None:
    devices = domain.find("devices")
    models = [m for v in devices.findall("video") if (m := v.find("model", type="virtio")) is not None] \
        if devices is not None else []
    if not models:
        ctx.note("video-perf: the guest has no virtio GPU (the host does not offer one): nothing to accelerate")
        return
    why = None
    if ctx.has("launch-security"):
        why = "a confidential guest's memory is encrypted against the host, which renders for virgl"
    elif not ctx.host.offers("graphics.type", "egl-headless"):
        why = "the host's QEMU does not offer egl-headless"
    elif not render_nodes(ctx):
        why = f"{ctx.uri or 'the host'} lists no DRM render node (a GPU with a render node is needed)"
    elif (moddir := missing_virgl(ctx)) is not None:
        why = (f"QEMU's 3D virtio GPU module ({VIRGL_MODULE}) is not in {moddir}: install it "
               "(Debian/Ubuntu: qemu-system-gui; Fedora: qemu-device-display-virtio-gpu-gl)")
    if why:
        ctx.note(f"video-perf: no 3D acceleration: {why}; the plain virtio GPU (virtio-gpu has no "
                 "VRAM to enlarge)")
        return
    for model in models:
        model.ensure("acceleration").set(accel3d="yes")
    devices.child("graphics", type="egl-headless")


# -- cpu-perf, clock-perf -----------------------------------------------------------------


def apply_cpu(domain, ctx) -> None:
    cpu = domain.ensure("cpu")
    if cpu.get("mode") != "host-passthrough":
        ctx.note(f"cpu-perf: the guest CPU is {cpu.get('mode')}, not host-passthrough (the host does "
                 "not offer it): no cache passthrough")
        return
    cpu.ensure("cache").set(mode="passthrough")


def apply_clock(domain, ctx) -> None:
    if (ctx.settings.virt_type or ctx.host.domain_type) != "kvm":
        ctx.note("clock-perf: no KVM, so no kvm-clock: the guest keeps the emulated clocks")
        return
    domain.ensure("clock").child("timer", name="kvmclock").set(present="yes")


def finish_clock(domain, ctx) -> None:
    if (ctx.settings.virt_type or ctx.host.domain_type) != "kvm":
        return
    cpu = domain.find("cpu")
    mode = cpu.get("mode") if cpu is not None else None
    if mode == "host-passthrough" and cpu.get("migratable") == "off":
        return
    what = ("QEMU's default model" if mode is None else
            "host-passthrough, but migratable" if mode == "host-passthrough" else mode)
    ctx.note(f"clock-perf: the guest CPU is {what}, so the host's invariant TSC is not passed and "
             "the guest keeps kvm-clock (cpu-perf passes it, where the guest need not migrate)")


FEATURES = (
    Feature(
        name="storage-perf",
        summary="disks tuned for throughput: no host cache, native AIO, an I/O thread each",
        category="storage",
        requires=("storage",),
        finish=finish_storage,
        details="finish, on every disk (not the cdrom), where the disk settings chose nothing: "
                "cache='none' (no double caching; O_DIRECT), io='native' (Linux AIO; io_uring "
                "only when asked, as QEMU may lack it), discard='unmap' (TRIM frees image space); "
                "detect_zeroes='unmap' (zero writes become unmaps; 'on' without discard). Virtio "
                "disks: queues=vCPUs (multi-queue virtio-blk) and <iothreads>N with iothread=i, one "
                "I/O thread per disk, unless the iothreads feature shares one. Values the disk "
                "settings chose (desktop's writeback) are kept, with a note.",
    ),
    Feature(
        name="network-perf",
        summary="virtio interfaces with vhost, a queue per vCPU and a deep receive ring",
        category="network",
        requires=("network",),
        finish=finish_network,
        details="finish, on every virtio interface: <driver name='vhost' queues=VCPU "
                "rx_queue_size='1024'/> (vhost-net in the host kernel, multi-queue up to 256 as "
                "network-multiqueue does, fewer drops in bursts). No tx_queue_size: QEMU keeps "
                "the TX ring at 256 except for vhost-user/vDPA. User-mode networking: receive "
                "ring only.",
    ),
    Feature(
        name="video-perf",
        summary="a virtio GPU with 3D acceleration (virgl) where the host has a render node",
        category="video",
        implies=("video-virtio",),
        conflicts=(HEADLESS,),
        facts=(RENDER_NODES, DISPLAY_MODULES),
        finish=finish_video,
        details="<acceleration accel3d='yes'/> on the virtio GPU and a <graphics "
                "type='egl-headless'/> display (rendering on the host GPU, shown through spice "
                "or vnc), where the host offers egl-headless and lists a DRM render node, the "
                "guest is not confidential and (on this machine) QEMU's virtio-gpu-gl module is "
                "installed; else the plain virtio GPU with a note (it has no VRAM to enlarge).",
    ),
    Feature(
        name="cpu-perf",
        summary="host CPU passed through with its cache topology and invariant TSC",
        category="cpu",
        implies=("cpu-passthrough",),
        conflicts=(Conflict("cpu-migratable",
                            "cpu-perf passes the host's caches and non-migratable features "
                            "(invariant TSC): the guest can no longer migrate"),),
        apply=apply_cpu,
        details="cpu-passthrough (host-passthrough, migratable='off', which passes invtsc "
                "where the host has it; topology of the host's threads per core) plus <cache "
                "mode='passthrough'/>: the guest sizes its work to the host's real caches. Not "
                "where the host lacks host-passthrough (TCG), with a note.",
    ),
    Feature(
        name="clock-perf",
        summary="paravirtual kvm-clock on top of the tuned clock",
        category="clock",
        implies=("clock",),
        apply=apply_clock,
        finish=finish_clock,
        details="clock (UTC, rtc catchup, pit delay, no hpet) plus <timer name='kvmclock' "
                "present='yes'/> on KVM: time read from shared memory without a VM exit. The "
                "TSC is read natively where the CPU is passed through non-migratable (note "
                "otherwise); no tsc mode, which QEMU ignores.",
    ),
)


FACTS = (
    FactProvider(name=RENDER_NODES, read=read_render_nodes,
                 summary="the host's DRM render nodes (libvirt node devices), for video-perf's virgl",
                 example=["drm_renderD128"]),
    FactProvider(name=DISPLAY_MODULES, read=read_display_modules,
                 summary="on a local host: QEMU's display modules by directory (is virtio-gpu-gl "
                         "installed?)",
                 example=[{"dir": "/usr/lib/x86_64-linux-gnu/qemu",
                           "modules": ["hw-display-virtio-gpu-gl.so", "hw-display-virtio-gpu.so"]}]),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)


@hookimpl
def vscen_register_facts(register):
    for fact in FACTS:
        register(fact)
