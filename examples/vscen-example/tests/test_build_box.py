"""vscen-example's tests, written with vscen's test kit (the vscen_* fixtures come with vscen
as a pytest plugin). Every test but the first passes the module in-process
(``plugins=[vscen_example]``), so it runs the same whether the distribution is installed or not.

``pytest --vscen-regen`` rewrites tests/golden/ after a deliberate change: review the diff.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import vscen_example

from vscen import RulesError, UsageError
from vscen.testing import host_files

HOSTS = ("amd-sev", "kvm", "local-tcg")


def test_the_installed_plugin_loads(vscen_plugins):
    loaded = vscen_plugins()  # found through the entry point "example" in pyproject.toml
    info = loaded.info("example")
    assert (info.status, info.reason) == ("loaded", "")
    assert (info.distribution, info.module) == ("vscen-example", "vscen_example")
    assert info.registers == {"features": ["low-priority"], "scenarios": ["build-box"], "settings": ["cpu_shares"],
                              "facts": ["example.load"], "commands": ["example"]}
    assert info.hooks == ["vscen_register_commands", "vscen_register_facts", "vscen_register_features",
                          "vscen_register_scenarios", "vscen_register_settings"]
    assert loaded.registry.plugin_of("build-box") == "example"


@pytest.mark.parametrize("host", HOSTS)
def test_build_box_on_recorded_hosts(vscen_render, vscen_validate, vscen_golden, host):
    result = vscen_render("build-box", plugins=[vscen_example], host=host)
    assert "<shares>256</shares>" in result.xml and "<weight>200</weight>" in result.xml
    assert '<driver name="qemu" type="raw" cache="none" io="native" iothread="1"/>' in result.xml
    assert "<graphics" not in result.xml
    vscen_validate(result.xml)  # libvirt's schema, and a define on test:///default
    vscen_golden(result.xml, f"build-box@{host}")


def test_a_host_without_kvm_is_warned_about(vscen_render):
    def kvm_check(host):
        checks = vscen_render("build-box", plugins=[vscen_example], host=host).checks
        return [c.status for c in checks if c.validator == "kvm"]

    assert kvm_check("local-tcg") == ["warn"]
    assert kvm_check("amd-sev") == ["pass"]


def test_the_user_wins_over_the_scenario_defaults(vscen_render):
    result = vscen_render("build-box", plugins=[vscen_example], vcpu=16, memory="32GiB", disk={"format": "qcow2"})
    s = result.settings
    assert (s.vcpu, s.memory, s.disks[0].format) == (16, 32 * 1024**2, "qcow2")
    assert s.source("vcpu") == "option" and s.source("machine") == "scenario build-box"
    assert "<description>build box: 16 vCPUs, 32768 MiB, made by vscen-example</description>" in result.xml


def test_set_wins_over_the_feature_and_explain_says_who_set_what(vscen_render):
    result = vscen_render("build-box", plugins=[vscen_example], sets=["./cputune/shares=512"])
    assert "<shares>512</shares>" in result.xml
    assert result.customised == [("/domain/cputune/shares", "512")]
    who = {path: owner for path, value, owner in result.ctx.domain.explain() if value}
    assert who["/domain/blkiotune/weight"] == "low-priority (feature)"
    assert who["/domain/description"] == "build-box (scenario)"


def test_low_priority_can_be_removed(vscen_render):
    result = vscen_render("build-box", plugins=[vscen_example], remove=["low-priority"])
    assert "low-priority" not in result.resolution.names
    assert "<cputune>" not in result.xml and "<blkiotune>" not in result.xml


def test_the_rules_refuse_with_every_reason(vscen_render):
    with pytest.raises(RulesError) as refused:
        vscen_render("build-box", features=["graphics", "vcpu-pinning"], plugins=[vscen_example])
    problems = " ".join(refused.value.problems)
    assert "a build box is headless: use 'virsh console'" in problems
    assert "pinned vCPUs own their host CPUs" in problems


def test_other_architectures_are_refused(vscen_render):
    with pytest.raises(RulesError, match="scenario 'build-box' supports x86_64, not aarch64"):
        vscen_render("build-box", plugins=[vscen_example], host="aarch64")


def test_low_priority_adds_to_any_guest(vscen_render, vscen_validate):
    result = vscen_render([], features=["low-priority", "storage"], plugins=[vscen_example], host="kvm")
    assert result.resolution.why == {"low-priority": "chosen", "storage": "chosen"}
    assert "<shares>256</shares>" in result.xml
    vscen_validate(result.xml)


# -- the plugin's own setting, host fact and command ------------------------------------------


def test_the_cpu_shares_setting(vscen_render):
    result = vscen_render("build-box", plugins=[vscen_example], cpu_shares="128")
    assert "<shares>128</shares>" in result.xml and result.settings.source("cpu_shares") == "option"
    with pytest.raises(UsageError, match="cpu_shares: '1' is not a whole number of CPU shares from 2 to 262144"):
        vscen_render("build-box", plugins=[vscen_example], cpu_shares="1")


def test_the_load_fact_is_replayed_from_a_snapshot(vscen_render, tmp_path):
    """A recorded host has no load: no note. A snapshot that recorded a busy host replays it."""
    assert not any("busy" in n for n in vscen_render("build-box", plugins=[vscen_example]).ctx.notes)
    [recorded] = host_files("amd-sev")
    busy = json.dumps({"load1": 40.0, "cpus": 16})
    snapshot = tmp_path / "busy.xml"
    snapshot.write_text(recorded.read_text().replace(
        "</hostFacts>", f'<facts><fact name="example.load">{busy}</fact></facts></hostFacts>'))
    result = vscen_render("build-box", plugins=[vscen_example], host=str(snapshot))
    assert result.ctx.host.fact("example.load") == {"load1": 40.0, "cpus": 16}
    assert "build-box: the host is busy (load 40.0 on 16 CPUs): builds will be slow" in result.ctx.notes


def test_the_describe_command_on_a_guest_vscen_made(tmp_path):
    """``vscen example describe`` on the real command line, the plugin loaded from this
    directory (VSCEN_PLUGIN_PATH) whether installed or not."""
    env = dict(os.environ, VSCEN_PLUGIN_PATH=str(Path(__file__).resolve().parents[1]),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("LIBVIRT_DEFAULT_URI", None)

    def vscen(*args):
        return subprocess.run([sys.executable, "-m", "vscen.cli", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    out = str(tmp_path / "out")
    made = vscen("run", "build-box", "--connect", "test:///default", "--output", out, "--disk", "none",
                 "--network", "none", "--cpu-shares", "512")
    assert made.returncode == 0, made.stderr
    shown = vscen("example", "describe", "build-box", "--output", out)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:2] == ["build-box: build box: 8 vCPUs, 16384 MiB, made by vscen-example",
                                             "  cpu shares 512, block I/O weight 200"]
    refused = vscen("example", "describe", "other", "--output", out)
    assert refused.returncode == 2 and "example describe: vscen made no guest 'other' here" in refused.stderr
