"""Host tuning: kernel memory settings a scenario wants of its host, and the ``host-tuning``
action that applies them.

The features write no XML: they name the setting, and the ``host-tuning`` action writes it to
``/sys/kernel/mm/...`` -- only with ``--tune-host`` (they affect every process on the host, so
the user has to agree) and only for a guest on this machine (vscen does not log in to remote
hosts). Otherwise a note says what to set and how. Each change is recorded with the value it
replaced; undo writes that value back unless someone changed the setting again since. The
settings are host-wide: a second guest wanting the same value finds it set and records
nothing, so destroying the first guest restores the old value under the second.

``ksm-off``
    ``/sys/kernel/mm/ksm/run = 0``: stops ksmd, the kernel thread that scans memory marked
    mergeable (QEMU marks all guest RAM so) for identical pages. For number crunching that
    saves the scanning CPU time and the copy-on-write faults when a guest writes a merged
    page, and no page of the guest is shared with another guest (page sharing across guests
    is a known timing side channel). Pages merged before stay merged until written (``2``
    would unmerge them all at once, a sudden memory demand on a busy host).
``ksm-on``
    ``/sys/kernel/mm/ksm/run = 1``: desktops run many similar systems (same OS, same
    libraries) whose identical pages KSM merges: less host memory per guest, at the cost of a
    little CPU for ksmd. (Where ksmtuned or ksm.service manage KSM they may override it.)
``thp-madvise``
    ``/sys/kernel/mm/transparent_hugepage/enabled = madvise``: QEMU asks for transparent huge
    pages on guest RAM (``MADV_HUGEPAGE``), so a guest without hugetlbfs backing (``--hugepages
    auto`` with none free) still gets 2 MiB pages -- which ``never`` would deny it -- while
    other host processes are not given huge pages they did not ask for, the memory bloat and
    khugepaged compaction stalls of ``always``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vscen import (
    Conflict,
    Feature,
    HostAction,
    HostError,
    Setting,
    Step,
    UsageError,
    check_host,
    check_record,
    hookimpl,
    host_identity,
    on_this_machine,
)

#: where the settings live (tests point it at a fake tree)
SYSFS_ROOT = Path("/sys/kernel/mm")


@dataclass(frozen=True)
class Tuning:
    """One sysfs setting of the host and the value a feature wants."""

    #: the file under SYSFS_ROOT
    setting: str
    value: str
    #: what lacking the file means
    missing: str


TUNINGS = {
    "ksm-off": Tuning("ksm/run", "0", "the kernel has no KSM, so nothing is merged anyway"),
    "ksm-on": Tuning("ksm/run", "1", "the kernel has no KSM (CONFIG_KSM)"),
    "thp-madvise": Tuning("transparent_hugepage/enabled", "madvise",
                          "the kernel has no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE)"),
}
SETTINGS = {t.setting for t in TUNINGS.values()}
#: the values each setting can hold: all that undo ever writes back
VALUES = {"ksm/run": ("0", "1", "2"), "transparent_hugepage/enabled": ("always", "madvise", "never")}


def read_setting(path: Path) -> str:
    """The current value: '1' for ksm/run; the bracketed choice of 'always [madvise] never'."""
    text = path.read_text().strip()
    if "[" in text:
        return text[text.index("[") + 1:text.index("]", text.index("["))]
    return text


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except OSError as exc:
        raise HostError(f"host tuning: cannot write '{value}' to {path} ({exc.strerror})") from None


def _set_step(feature: str, tuning: Tuning, path: Path, current: str, connection) -> Step:
    def do():
        previous = read_setting(path)
        if previous == tuning.value:
            return None
        _write(path, tuning.value)
        now = read_setting(path)
        if now != tuning.value:
            _write(path, previous)
            raise HostError(f"host tuning: {path} reads '{now}' after writing '{tuning.value}'; "
                            f"set back to '{previous}'")
        return {"kind": "sysfs", "setting": tuning.setting, "path": str(path),
                "value": tuning.value, "previous": previous, "feature": feature,
                "host": host_identity(connection)}

    return Step(f"set {path} to {tuning.value} (now {current}) for {feature}", do)


def plan(ctx) -> list[Step]:
    wanted = [(f, t) for f, t in TUNINGS.items() if ctx.has(f)]
    if not wanted:
        return []
    connection = ctx.connection
    if connection is None or connection.is_test:
        where = connection.uri if connection is not None else "no libvirt connection"
        for feature, t in wanted:
            ctx.note(f"host tuning skipped: {where} is not a real host ({feature} would set "
                     f"{SYSFS_ROOT / t.setting} to {t.value})")
        return []
    if not connection.is_local:
        for feature, t in wanted:
            path = SYSFS_ROOT / t.setting
            ctx.note(f"remote host {connection.uri}: vscen tunes only this machine; for {feature} "
                     f"set {path} to {t.value} there (echo {t.value} > {path})")
        return []
    steps = []
    for feature, t in wanted:
        path = SYSFS_ROOT / t.setting
        if not path.exists():
            ctx.note(f"host tuning: {path} does not exist: {t.missing}; {feature} changes nothing")
            continue
        try:
            current = read_setting(path)
        except (OSError, ValueError) as exc:
            raise HostError(f"host tuning: cannot read {path} ({exc})") from None
        if current == t.value:
            ctx.note(f"host tuning: {path} is {t.value} already ({feature}): unchanged")
            continue
        if not ctx.settings.tune_host:
            ctx.note(f"host tuning skipped: {feature} wants {path} = {t.value}, it is {current} "
                     "(pass --tune-host to apply)")
            continue
        if not os.access(path, os.W_OK):
            raise HostError(f"host tuning: cannot write {path} ({feature} wants {t.value}): run "
                            "vscen as root, or leave out --tune-host")
        steps.append(_set_step(feature, t, path, current, connection))
    return steps


def undo(connection, record: dict) -> None:
    """Write the previous value back: only a setting vscen tunes, to a value it can hold, on the
    host (and boot) where it was changed, never through a test driver."""
    check_record(record, {"kind": str, "setting": str, "value": str, "previous": str}, "host tuning")
    setting = record["setting"]
    if record["kind"] != "sysfs" or setting not in SETTINGS:
        raise UsageError(f"host tuning: {setting!r} is not a setting vscen tunes; not touched")
    for key in ("value", "previous"):
        if record[key] not in VALUES[setting]:
            raise UsageError(f"host tuning: {record[key]!r} is not a value of {setting} "
                             f"({', '.join(VALUES[setting])}); not touched")
    path = SYSFS_ROOT / setting
    if on_this_machine(connection) and (
            not path.exists() or read_setting(path) != record["value"]):
        return  # gone, or changed again since: that value is someone's choice
    check_record(record, {"host": dict}, "host tuning")
    if not check_host(record["host"], connection, f"host tuning {setting}"):
        return  # changed before the host rebooted: the kernel's default is back
    _write(path, record["previous"])


HOST_TUNING = HostAction(
    name="host-tuning",
    summary="write the host's kernel memory settings the guest's features ask for (--tune-host)",
    details=(
        "For ksm-off, ksm-on, thp-madvise: writes /sys/kernel/mm/ksm/run or "
        "/sys/kernel/mm/transparent_hugepage/enabled, only with --tune-host and only on this "
        "machine (else a note says what to set); records the previous value, which undo "
        "writes back unless the setting changed again since."
    ),
    plan=plan,
    undo=undo,
)

_KSM = "KSM is one switch for the whole host: on or off"

FEATURES = (
    Feature(
        name="ksm-off",
        summary="KSM off on the host: no page-merging scans, no page sharing across guests",
        category="host tuning",
        host_actions=("host-tuning",),
        conflicts=(Conflict("ksm-on", _KSM),),
        details="Host action host-tuning (--tune-host, local host): /sys/kernel/mm/ksm/run = 0. "
                "ksmd stops scanning guest RAM for identical pages: no scanning CPU time, no "
                "copy-on-write faults on merged pages, no cross-guest page sharing (a timing side "
                "channel). Pages merged earlier stay merged until written.",
    ),
    Feature(
        name="ksm-on",
        summary="KSM on on the host: identical pages of similar guests merged",
        category="host tuning",
        host_actions=("host-tuning",),
        conflicts=(Conflict("ksm-off", _KSM),),
        details="Host action host-tuning (--tune-host, local host): /sys/kernel/mm/ksm/run = 1. "
                "Guests running the same system share identical pages: less host memory per "
                "guest for a little ksmd CPU time.",
    ),
    Feature(
        name="thp-madvise",
        summary="transparent huge pages for processes that ask (QEMU's guest RAM) only",
        category="host tuning",
        host_actions=("host-tuning",),
        details="Host action host-tuning (--tune-host, local host): "
                "/sys/kernel/mm/transparent_hugepage/enabled = madvise. QEMU asks for THP on "
                "guest RAM, so a guest without hugetlbfs pages still gets 2 MiB pages (unlike "
                "'never'), and other host processes are spared the bloat and compaction stalls "
                "of 'always'.",
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)


@hookimpl
def vscen_register_host_actions(register):
    register(HOST_TUNING)


@hookimpl
def vscen_register_settings(register):
    register(Setting(name="tune_host", flag=True, default=False, example="yes",
                     help="Apply the host tuning the scenarios ask for (THP, KSM) on this host; undone by 'vscen destroy'."))
