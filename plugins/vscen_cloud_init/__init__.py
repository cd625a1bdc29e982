"""Cloud images and cloud-init: a guest that boots a ready-made OS image and configures itself.

``cloud-image`` (``--image FILE``)
    The guest's first disk becomes a new copy-on-write qcow2 overlay whose read-only base
    (backing store) is the cloud image: the image is never written, so one image serves any
    number of guests. The image's format is read from its header (qcow2 or raw; compressed
    files, archives, ISOs and other formats are refused with what to do) and written
    explicitly, never left to QEMU's probing: as the overlay's backing format by the
    ``storage-volume`` action of plugin ``volumes`` (the disk's ``backing=`` key, which this
    feature sets) and as ``<backingStore>`` of the disk in the domain XML. The overlay has the
    disk's size (``--disk size=...``, 20GiB by default), or the image's where that is larger;
    the guest's cloud-init grows its root file system to fill it. FILE is read on the machine
    vscen runs on; for a remote host it must be at the same path there (where libvirt reads it).

``cloud-init`` (``--cloud-init KEY=VALUE``)
    A NoCloud seed for cloud-init: an ISO 9660 image labelled ``cidata`` holding
    ``user-data``, ``meta-data`` and (when given) ``network-config``, attached as a read-only
    CD-ROM on a virtio-scsi controller (cloud kernels, Debian's among them, have no AHCI
    driver, so a SATA CD-ROM would go unseen). Keys: ``user-data=FILE``, ``meta-data=FILE``,
    ``network-config=FILE`` (files of one's own), or the shortcuts ``ssh-key=FILE`` (OpenSSH
    public keys for root and the image's default user), ``root-password-file=FILE`` (mode
    600; its first line is root's password) and ``hostname=NAME``, from which vscen writes a
    ``#cloud-config`` user-data. Without ``meta-data=FILE`` the meta-data says
    ``instance-id: vscen-NAME`` and ``local-hostname`` (``hostname=`` or the guest's name).

``cloud-init-seed`` (host action)
    Writes the seed as a volume ``NAME-cidata.iso`` of the storage pool that holds the first
    disk's directory (libvirt's images directory without disks), mode 600 and owned by root,
    through libvirt (remote hosts too). The password is read when the step runs (and, where
    a seed exists already, to compare it with that one, in memory), and goes into the seed
    only: never on a command line, in the plan, the journal or a log. A seed that exists with
    the same files is left unchanged; with others it is replaced only with ``--force``. ``vscen destroy`` deletes it (also with
    ``--keep-storage``: it holds configuration, not data), while it is still the file vscen
    wrote. Record: ``{"kind": "seed", "pool", "name", "path", "size", "identity"}``
    (the identity's digest covers 256 random bits in the ISO, so it tells nothing of a
    password).

    vscen run computation --image /images/debian-12-genericcloud-amd64.qcow2 \\
        --cloud-init ssh-key=~/.ssh/id_ed25519.pub,hostname=build1 --start
"""

from __future__ import annotations

from vscen import Feature, HostAction, Setting, hookimpl
from vscen_cloud_init import spec

# image.py and seed.py are imported by the functions below, when a run uses them: the
# cloud_init setting's check runs in every run, and needs only spec.py


def _prepare_image(ctx) -> None:
    from vscen_cloud_init import image

    image.prepare(ctx)


def _finish_image(domain, ctx) -> None:
    from vscen_cloud_init import image

    image.finish(domain, ctx)


def _parse_image(value):
    from vscen_cloud_init import image

    return image.parse_image(value)


def _plan_seed(ctx):
    from vscen_cloud_init import seed

    return seed.plan(ctx)


def _undo_seed(connection, record) -> None:
    from vscen_cloud_init import seed

    seed.undo(connection, record)


def _finish_seed(domain, ctx) -> None:
    """The seed's CD-ROM, once every disk is in place (its target takes the next free letter)."""
    if not ctx.settings.get("cloud_init"):
        return
    devices = domain.ensure("devices")
    used = {t.get("dev") for d in devices.findall("disk") for t in [d.find("target")] if t is not None}
    dev = next(f"sd{_letters(i)}" for i in range(len(used) + 1) if f"sd{_letters(i)}" not in used)
    devices.child("controller", type="scsi", model="virtio-scsi")
    cd = devices.add("disk", type="file", device="cdrom")
    cd.add("driver", name="qemu", type="raw")
    from vscen_cloud_init import seed

    cd.add("source", file=seed.seed_path(ctx.settings))
    cd.add("target", dev=dev, bus="scsi")
    cd.add("readonly")


def _letters(index: int) -> str:
    out, index = "", index + 1
    while index:
        index, rest = divmod(index - 1, 26)
        out = chr(ord("a") + rest) + out
    return out


FEATURES = (
    Feature(
        name="cloud-image",
        summary="the first disk as a copy-on-write overlay on a cloud image (--image)",
        category="storage",
        requires=("storage",),
        prepare=_prepare_image,
        finish=_finish_image,
        details="Disk 1 becomes a qcow2 overlay (backing= of plugin volumes' storage-volume action) on "
                "the image given with --image, whose format (qcow2 or raw) is read from its header; "
                "<backingStore type='file'> with that format and the image as source, ending the chain, "
                "in the disk's XML. The image is only read. The overlay has the disk's size, or the "
                "image's if larger.",
    ),
    Feature(
        name="cloud-init",
        summary="a NoCloud seed (cidata ISO) for cloud-init as a read-only CD-ROM (--cloud-init)",
        category="storage",
        requires=("storage",),
        finish=_finish_seed,
        host_actions=("cloud-init-seed",),
        details="A <disk type='file' device='cdrom'> with <readonly/>, raw, on the next free sd "
                "letter of a virtio-scsi controller, whose source is the seed NAME-cidata.iso beside "
                "disk 1; the seed itself is made by the host action cloud-init-seed.",
    ),
)

ACTIONS = (
    HostAction(
        name="cloud-init-seed",
        summary="the cloud-init NoCloud seed ISO, as a private volume of the guest's pool",
        plan=_plan_seed,
        undo=_undo_seed,
        details="An ISO 9660 image labelled cidata (Joliet and Rock Ridge names user-data, meta-data, "
                "network-config), built in memory with pycdlib, uploaded through libvirt as the raw "
                "volume NAME-cidata.iso (mode 0600, owner root) of the active pool holding disk 1's "
                "directory. The root password is read only when the step runs (or to compare a seed that exists). An identical seed is "
                "left unchanged; another one is replaced only with --force. Undo deletes the volume "
                "while it is the one vscen wrote (same pool, path, size and, locally, file identity).",
    ),
)

SETTINGS = (
    Setting(name="image", parse=_parse_image, metavar="FILE", implies=("cloud-image",),
            example="/images/debian-12-genericcloud-amd64.qcow2",
            help="Cloud image (qcow2 or raw) as the read-only base of disk 1, a new copy-on-write overlay."),
    Setting(name="cloud_init", option="--cloud-init", parse=spec.parse_item, check=spec.check, repeatable=True,
            metavar="KEY=VALUE", implies=("cloud-init",), example="ssh-key=~/.ssh/id_ed25519.pub,hostname=web1",
            spec={"user-data": "path", "meta-data": "path", "network-config": "path", "ssh-key": "path",
                  "root-password-file": "path", "hostname": None},
            help="cloud-init NoCloud seed: user-data=FILE, meta-data=FILE, network-config=FILE, or "
                 "ssh-key=FILE, root-password-file=FILE, hostname=NAME. Repeatable."),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)


@hookimpl
def vscen_register_host_actions(register):
    for action in ACTIONS:
        register(action)


@hookimpl
def vscen_register_settings(register):
    for setting in SETTINGS:
        register(setting)
