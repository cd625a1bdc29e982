"""Golden XML: every scenario, and every scenario combination that composes, rendered for the
recorded hosts, compared byte for byte with tests/data/golden/, validated against libvirt's
RelaxNG schema (inside render) and defined on libvirt's test:///default driver with
VIR_DOMAIN_DEFINE_VALIDATE.

Regenerate with ``pytest tests/test_golden.py --regen-golden`` and review the diff.

Launch security depends on what libvirt knows: the cases pin it. "libvirt 9.0" knows only
``sev`` (what is installed here); "newer libvirt" also knows ``sev-snp`` and ``tdx``. Goldens
of the newer kind can only be checked against the schema where the installed libvirt knows
them; elsewhere the test says so and checks the rest.
"""

from __future__ import annotations

import pytest
from conftest import DATA, define_on_test_driver, host_files, osinfo_or_skip, render_for

from vscen.pipeline import Request, render
from vscen.validate import Support

GOLDEN = DATA / "golden"
LIBVIRT_9 = Support({"launchSecurity/@type": frozenset({"sev"})}, schema=True)
NEWER = Support({"launchSecurity/@type": frozenset({"sev", "sev-snp", "tdx"})}, schema=True)

#: recorded hosts with local facts attached (a <hostFacts> holding only <local>)
WITH_LOCAL = {"numa4-rt": ("numa4-hugepages", DATA / "hosts" / "numa4-rt-local.xml")}

# (scenarios, host, libvirt profile[, peers: recorded hosts the guest must run on too]);
# a "+NAME" among the scenarios adds feature NAME, as --feature +NAME does; "KEY=VALUE" is the
# option --KEY VALUE ("os=win11": those cases need the osinfo database, see osinfo_or_skip)
CASES = [
    (("secure-vm",), "amd-sev", "libvirt9"),
    (("secure-vm",), "amd-sev", "newer"),
    (("secure-vm",), "intel-tdx", "newer"),
    (("secure-vm",), "kvm", "newer"),
    (("desktop",), "amd-sev", "libvirt9"),
    (("desktop",), "intel-tdx", "libvirt9"),
    (("desktop",), "kvm", "libvirt9"),
    (("desktop",), "tcg", "libvirt9"),
    (("desktop",), "local-tcg", "libvirt9"),
    (("computation",), "amd-sev", "libvirt9"),
    (("computation",), "intel-tdx", "libvirt9"),
    (("computation",), "kvm", "libvirt9"),
    (("computation",), "tcg", "libvirt9"),
    (("computation",), "numa4-hugepages", "libvirt9"),
    (("computation",), "local-tcg", "libvirt9"),
    (("computation", "secure-vm"), "amd-sev", "libvirt9"),
    (("computation", "secure-vm"), "intel-tdx", "newer"),
    (("os-testing",), "amd-sev", "libvirt9"),
    (("os-testing",), "kvm", "libvirt9"),
    (("os-testing",), "tcg", "libvirt9"),
    (("easy-migration",), "amd-sev", "libvirt9", ("kvm",)),
    (("easy-migration",), "amd-sev", "libvirt9", ("intel-tdx",)),
    (("easy-migration",), "local-tcg", "libvirt9"),
    (("soft-rt",), "numa4-rt", "libvirt9"),
    (("soft-rt",), "numa4-hugepages", "libvirt9"),
    (("desktop", "+storage-perf"), "kvm", "libvirt9"),
    (("computation", "+network-perf"), "kvm", "libvirt9"),
    (("desktop", "+video-perf", "+network-perf", "+clock-perf"), "kvm", "libvirt9"),
    (("computation", "+storage-perf", "+cpu-perf", "+clock-perf"), "amd-sev", "libvirt9"),
    (("computation", "secure-vm", "+storage-perf", "+network-perf"), "amd-sev", "libvirt9"),
    (("desktop", "os=win11"), "kvm", "libvirt9"),
    (("desktop", "os=win11"), "local-tcg", "libvirt9"),
    (("desktop", "os=debian11"), "kvm", "libvirt9"),
    (("computation", "os=debian11"), "amd-sev", "libvirt9"),
    (("computation", "os=win10"), "kvm", "libvirt9"),
    (("os-testing", "os=fedora36"), "kvm", "libvirt9"),
    (("os-testing", "os=win11"), "kvm", "libvirt9"),
    (("secure-vm", "os=sle15sp4"), "amd-sev", "libvirt9"),
]


def case_id(case) -> str:
    scenarios, host, profile = case[:3]
    peers = case[3] if len(case) > 3 else ()
    return (f"{'+'.join(n.lstrip('+').replace('=', '-') for n in scenarios)}@{host}" + ("" if profile == "libvirt9" else "+newer-libvirt")
            + "".join(f"+peer-{p}" for p in peers))


def facts_files(host: str) -> list:
    if host in WITH_LOCAL:
        base, local = WITH_LOCAL[host]
        return [*host_files(base), local]
    return host_files(host)


def peer_options(case) -> dict:
    """--peer for each recorded host of the case: its files joined by ','."""
    peers = case[3] if len(case) > 3 else ()
    return {"peers": [",".join(str(f) for f in host_files(p)) for p in peers]} if peers else {}


def needs_newer(xml: str) -> str | None:
    """The launch security type the installed libvirt cannot validate, if any."""
    installed = Support.installed()
    for sectype in ("sev-snp", "tdx"):
        if f"type=\"{sectype}\"" in xml and not installed.accepts("launchSecurity", "type", sectype):
            return sectype
    return None


def render_case(case, loaded=None):
    scenarios, host, profile = case[:3]
    add = [n[1:] for n in scenarios if n.startswith("+")]
    options = dict(n.split("=", 1) for n in scenarios if "=" in n)
    if "os" in options:
        osinfo_or_skip()
    scenarios = [n for n in scenarios if not n.startswith("+") and "=" not in n]
    support = LIBVIRT_9 if profile == "libvirt9" else NEWER
    # the installed schema cannot judge what only a newer libvirt knows: checked below
    schema = profile == "libvirt9" or Support.installed().accepts("launchSecurity", "type", "tdx")
    return render(Request(scenarios=scenarios, host_facts=facts_files(host), support=support, schema=schema,
                          add=add, options={"name": "golden", **options, **peer_options(case)}, loaded=loaded),
                  keep_connection=False)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_golden(case, regen_golden):
    result = render_case(case)
    path = GOLDEN / f"{case_id(case)}.xml"
    if regen_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.xml)
    assert path.exists(), f"no golden file {path}: run pytest --regen-golden"
    assert result.xml == path.read_text(), f"{path.name} differs: review, then --regen-golden"
    sectype = needs_newer(result.xml)
    if sectype:
        pytest.skip(f"{path.name} uses launch security '{sectype}', which the installed libvirt "
                    "does not know: compared byte for byte, not validated or defined here")
    define_on_test_driver(result.xml)



def test_the_goldens_from_the_registrations_cache(monkeypatch):
    """What the plugins registered, read back from vscen's cache (vscen.regcache) as the next
    command does, renders every golden file byte for byte."""
    from vscen import cache
    from vscen.registry import load

    monkeypatch.setattr(cache, "RECENT", 0)  # a plugin file edited just now is kept too
    load()  # registers the plugins the usual way, and keeps what they registered
    pm, reg = load()
    assert all(i.cached is not None for i in pm.infos.values() if i.status == "loaded")
    osinfo = True
    for case in CASES:
        if any(n.startswith("os=") for n in case[0]) and not osinfo:
            continue
        try:
            result = render_case(case, loaded=(pm, reg))
        except pytest.skip.Exception:
            osinfo = False
            continue
        assert result.xml == (GOLDEN / f"{case_id(case)}.xml").read_text(), case_id(case)


def test_every_golden_file_is_a_case():
    """A golden file nobody renders any more is stale."""
    expected = {f"{case_id(c)}.xml" for c in CASES}
    # cloud-*.xml: rendered by tests/plugins/test_cloud_init.py (its --image is a file the test makes)
    assert {p.name for p in GOLDEN.glob("*.xml") if not p.name.startswith("cloud-")} == expected


def test_rendering_is_deterministic():
    a = render_for(("desktop",), host="kvm", support=LIBVIRT_9).xml
    b = render_for(("desktop",), host="kvm", support=LIBVIRT_9).xml
    assert a == b


def test_golden_files_pass_the_cli_validator(tmp_path):
    """`vscen validate` agrees with the pipeline on every golden file libvirt 9 can validate."""
    import subprocess
    import sys

    for path in sorted(GOLDEN.glob("*.xml")):
        if needs_newer(path.read_text()):
            continue
        proc = subprocess.run([sys.executable, "-m", "vscen.cli", "validate", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{path.name}: {proc.stderr}"
