"""The guest clock.

``clock``: the guest's RTC runs in UTC (``offset='utc'``), as Linux and modern Windows
expect, so a host's time zone or DST change never shifts guest time. Timers: the RTC
``catchup`` replays ticks missed while the vCPU was descheduled, so the guest's wall clock
stays right; the PIT ``delay`` delivers late ticks late instead of in a burst (old guests
count PIT ticks for time keeping and a burst confuses them); the HPET is removed because
guests then use the cheaper, more precise kvm-clock / TSC.
"""

from __future__ import annotations

from vscen import Feature, hookimpl


def apply_clock(domain, ctx) -> None:
    clock = domain.ensure("clock").set(offset="utc")
    clock.child("timer", name="rtc").set(tickpolicy="catchup")
    clock.child("timer", name="pit").set(tickpolicy="delay")
    clock.child("timer", name="hpet").set(present="no")


FEATURES = (
    Feature(
        name="clock",
        summary="UTC clock with catch-up RTC, delayed PIT and no HPET",
        category="clock",
        details="<clock offset='utc'> timers rtc tickpolicy=catchup, pit tickpolicy=delay, hpet present=no",
        apply=apply_clock,
    ),
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_features(register):
    for feature in FEATURES:
        register(feature)
