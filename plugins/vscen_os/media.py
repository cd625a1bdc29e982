"""Which OS an install ISO or a disk image holds, by the osinfo database's own rules.

An ISO (``--cdrom``): as libosinfo's ``osinfo_db_identify_media`` does, its primary volume
descriptor (ISO 9660, sector 16; read here directly, nothing mounted) gives the volume,
system, publisher and application ids (trailing blanks removed) and the volume size
(logical blocks x block size). An OS's ``<media><iso>`` rule matches when each id it names is
a regular expression found in the ISO's id (unanchored, case-sensitive; an ISO without that
id fails it) and, where it names a ``<volume-size>``, the sizes are equal. The database's
media rules name nothing else (``<kernel>`` and ``<initrd>`` are paths for a direct kernel
boot, which libosinfo does not use to identify media either).

libosinfo stops at the first OS of its load order with a matching rule; several OSes can
match one ISO (Windows 10 and 11 ISOs share their volume-id rule), so here every match is
found and the OS of the most specific rule (the most ids and sizes named) wins, then a release
over a series' catch-all (``rhel7-unknown``), then the newest release; the note names the
others (but a catch-all). (An ISO's arch is not compared, as libosinfo does not: the rule's arch is shown.)

A disk image (a disk's ``backing`` base, or an existing disk's file): its file name equal to
the base name of an ``<image><url>`` of the database (``debian-11-genericcloud-amd64.qcow2``),
those names being unique there; no other guess is sound.

The rules are read once into ``$XDG_CACHE_HOME/vscen/osinfo-media.json`` (``osdb.cached``),
and only when an OS is to be detected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache

SECTOR = 2048
#: the volume descriptors start at sector 16; a PVD is found among the first few
FIRST_DESCRIPTOR, MAX_DESCRIPTORS = 16, 32
IDS = ("volume", "system", "publisher", "application")
#: a media rule's fields, as the cache holds them
FIELDS = (*IDS, "size")


@dataclass(frozen=True)
class IsoIds:
    """What an ISO's primary volume descriptor says of it (None: the field is blank)."""

    volume: str | None
    system: str | None
    publisher: str | None
    application: str | None
    size: int

    def shown(self) -> str:
        """The volume, system and publisher ids (the application id is mostly the tool's name)."""
        return ", ".join(f"{k} id '{getattr(self, k)}'" for k in IDS[:3] if getattr(self, k))


def _field(raw: bytes) -> str | None:
    text = raw.split(b"\0", 1)[0].decode("latin-1").rstrip()
    return text or None


def read_iso(path: str) -> IsoIds:
    """The ids of the ISO 9660 image at *path*; ValueError saying why where it is none."""
    with open(path, "rb") as f:
        for n in range(FIRST_DESCRIPTOR, FIRST_DESCRIPTOR + MAX_DESCRIPTORS):
            f.seek(n * SECTOR)
            d = f.read(SECTOR)
            if len(d) < SECTOR or d[1:6] != b"CD001":
                break
            if d[0] == 255:  # the set's terminator
                break
            if d[0] == 1:
                size = int.from_bytes(d[80:84], "little") * int.from_bytes(d[128:130], "little")
                return IsoIds(volume=_field(d[40:72]), system=_field(d[8:40]),
                              publisher=_field(d[318:446]), application=_field(d[574:702]), size=size)
    raise ValueError("is not an ISO 9660 image (no primary volume descriptor)")


# -- the rules, from the database -----------------------------------------------------------------


def _build() -> dict:
    from vscen_os import osdb

    media, images, first, released = [], {}, {}, {}
    for _path, os_el in osdb.each_os():
        os_id = os_el.get("id")
        for sid in os_el.iterfind("short-id"):
            if sid.text and sid.text.strip():
                first.setdefault(os_id, sid.text.strip())
        date = osdb._text(os_el, "release-date")
        if date:
            released.setdefault(os_id, date)
        for m in os_el.iterfind("media"):
            iso = m.find("iso")
            if iso is None:
                continue
            rule = {k: (iso.findtext(f"{k}-id") or "").strip() or None for k in IDS}
            size = (iso.findtext("volume-size") or "").strip()
            rule["size"] = int(size) if size.isdigit() and int(size) > 0 else None
            if any(rule.values()):  # libosinfo: a rule naming nothing matches nothing
                media.append([os_id, m.get("arch", "all"), *(rule[k] for k in FIELDS),
                              *(_needed(rule[k]) for k in IDS)])
        for image in os_el.iterfind("image"):
            for url in image.iterfind("url"):
                text = (url.text or "").strip()
                if "://" in text and not text.startswith("docker:"):
                    images.setdefault(text.rsplit("/", 1)[-1], {"os": os_id, "arch": image.get("arch", "all")})
    return {"media": media, "images": images, "short": first, "released": released}


def _needed(pattern: str | None) -> str:
    """A text every string *pattern* matches holds (its longest run of plain characters
    outside any group, repeat or alternative): a rule whose text is not in the ISO's id fails
    without its pattern being compiled (~1,900 patterns, ~100 ms)."""
    if not pattern or "(?" in pattern:
        return ""  # inline flags (case-insensitive...): no shortcut
    try:
        from re import _parser as parser
        from re._constants import LITERAL

        parsed = parser.parse(pattern)
    except Exception:  # a pattern Python cannot read fails anyway; an older re: no shortcut
        return ""
    runs, run = [""], ""
    for op, arg in parsed:
        if op is LITERAL:
            run += chr(arg)
        else:
            runs.append(run)
            run = ""
    return max([*runs, run], key=len)


@cache
def rules() -> dict:
    from vscen_os import osdb

    return osdb.cached("osinfo-media.json", _build)


@cache
def _regex(pattern: str):
    try:
        return re.compile(pattern)
    except re.error:
        return None  # GRegex fails such a pattern too: the rule matches nothing


def _matches(row: list, ids: IsoIds) -> bool:
    """Whether the media rule *row* (``[os, arch, *FIELDS, *needed texts]``) matches."""
    if row[6] is not None and row[6] != ids.size:
        return False
    for i, key in enumerate(IDS):
        pattern = row[2 + i]
        if pattern is None:
            continue
        value = getattr(ids, key)
        if value is None or row[7 + i] not in value:
            return False
        regex = _regex(pattern)
        if regex is None or not regex.search(value):
            return False
    return True


@dataclass(frozen=True)
class Found:
    """An OS detected: its short id, the rule's arch, what it matched, and the other OSes that
    matched too."""

    short_id: str
    os_id: str
    arch: str
    matched: str = ""
    others: tuple[str, ...] = ()


def _rank(os_id: str, rule: dict, data: dict) -> tuple:
    """How much a matching rule says: the ids and size it names; then a release of its own
    over a series' catch-all (``rhel7-unknown``: a later 7.x), then the newest release."""
    return (sum(v is not None for v in rule.values()), not os_id.endswith("-unknown"), data["released"].get(os_id, ""))


def identify(ids: IsoIds) -> Found | None:
    """The OS of the database whose media rule matches *ids*; None where none does."""
    data = rules()
    best: dict[str, tuple] = {}
    for row in data["media"]:
        os_id = row[0]
        if os_id not in data["short"] or not _matches(row, ids):
            continue
        rule = dict(zip(FIELDS, row[2:7], strict=True))
        rank = _rank(os_id, rule, data)
        if os_id not in best or rank > best[os_id][0]:
            best[os_id] = (rank, rule, row[1])
    if not best:
        return None
    order = sorted(best, key=lambda o: (best[o][0], data["short"][o]), reverse=True)
    _rank_, rule, arch = best[order[0]]
    matched = [f"{k} id '{getattr(ids, k)}'" for k in IDS if rule[k] is not None]
    if rule["size"] is not None:
        matched.append(f"volume size {ids.size}")
    return Found(data["short"][order[0]], order[0], arch, ", ".join(matched),
                 tuple(sorted(data["short"][o] for o in order[1:] if not o.endswith("-unknown"))))


def identify_image(path: str) -> Found | None:
    """The OS whose cloud image has *path*'s file name, None where none has."""
    data = rules()
    hit = data["images"].get(os.path.basename(path))
    if hit is None or hit["os"] not in data["short"]:
        return None
    return Found(data["short"][hit["os"]], hit["os"], hit["arch"], os.path.basename(path))


# -- Setting.derive ---------------------------------------------------------------------------------


def _no_db() -> bool:
    from vscen_os import osdb

    return not any((d / "os").is_dir() for d in osdb.db_dirs())


def detect(settings, note) -> str | None:
    """``--os`` where nobody gave it: from the ``--cdrom`` ISO, else from a disk's image."""
    images = [d.backing for d in settings.disks if d.backing]
    images += [d.path for d in settings.disks if d.path and not d.backing and os.path.isfile(d.path)]
    image = settings.get("image")
    if image:
        images.insert(0, str(image))
    if not settings.cdrom and not images:
        return None  # nothing to look at: no cost
    if _no_db():
        if settings.cdrom:  # a disk alone is no reason to nag
            note("os: not detected: no osinfo database found (install the package osinfo-db)")
        return None
    hint = "give --os SHORTID ('vscen list os')"
    if settings.cdrom:
        try:
            ids = read_iso(settings.cdrom)
        except OSError as exc:
            note(f"os: not detected: the --cdrom ISO {settings.cdrom} cannot be read here "
                 f"({exc.strerror or exc}); {hint}")
        except ValueError as exc:
            note(f"os: not detected: the --cdrom file {settings.cdrom} {exc}; {hint}")
        else:
            found = identify(ids)
            if found is not None:
                others = (f"; it matches {', '.join(found.others)} too (give --os to choose)"
                          if found.others else "; give --os to choose another")
                note(f"os: {found.short_id} detected from the --cdrom ISO ({found.matched}: an osinfo "
                     f"{found.arch} install media rule){others}")
                return found.short_id
            note(f"os: not detected: no install media the osinfo database knows has the --cdrom ISO's "
                 f"{ids.shown() or 'blank ids'}; {hint}")
    for path in images:
        found = identify_image(path)
        if found is not None:
            note(f"os: {found.short_id} detected from the disk image's file name {os.path.basename(path)} "
                 f"(an osinfo {found.arch} cloud image); give --os to choose another")
            return found.short_id
    return None
