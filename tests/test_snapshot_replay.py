"""The acceptance of host facts (issue 9): for every registered scenario, a live
``vscen run SCENARIO --dry-run -c qemu:///system`` and a run from that host's own
``vscen host snapshot`` (``--host-facts``) give the same domain XML (uuid aside) and the same
checks, or refuse the same way. Builds read facts only, so nothing may differ but the names
of the host and of the connection the guest would be defined on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import system_or_skip
from lxml import etree


def vscen(home, *args: str) -> subprocess.CompletedProcess:
    """The real command line, with no user config (the snapshot is taken before the per-test
    isolation applies, so every call names its own empty config and data dirs)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LIBVIRT_DEFAULT_URI", "VSCEN_DISABLED_PLUGINS", "VSCEN_PLUGIN_PATH")}
    env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"))
    return subprocess.run([sys.executable, "-m", "vscen.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def scenarios() -> list[str]:
    from vscen.pipeline import Request, load

    _pm, reg = load(Request(scenarios=[]))
    return sorted(reg.scenarios)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def snapshot(home):
    conn = system_or_skip()
    conn.close()
    proc = vscen(home, "host", "snapshot", "--connect", "qemu:///system")
    assert proc.returncode == 0, proc.stderr
    assert "warning:" not in proc.stderr, proc.stderr  # every fact provider read its fact
    path = home / "snap.xml"
    path.write_text(proc.stdout)
    return path


def outcome(proc: subprocess.CompletedProcess, host: str = "") -> dict:
    """What must not depend on where the facts came from: the XML without its uuid, the checks
    and the error; *host*, the name of the recorded host, is read as the live host's."""
    def neutral(text: str) -> str:
        return text.replace(host, "qemu:///system") if host else text

    if proc.returncode != 0:
        return {"returncode": proc.returncode,
                "errors": [neutral(line) for line in proc.stderr.splitlines() if not line.startswith("note:")]}
    # --dry-run --json prints one JSON document, the domain XML in it
    data = json.loads(proc.stdout)
    root = etree.fromstring(data["domain_xml"].encode())
    for uuid in root.findall("uuid"):
        root.remove(uuid)
    return {"returncode": 0, "xml": etree.tostring(root, encoding="unicode"),
            "checks": [(c["validator"], c["status"], neutral(c["message"]), neutral(c.get("fix", "")))
                       for c in data["checks"]]}


@pytest.mark.parametrize("scenario", scenarios())
def test_a_snapshot_replays_the_live_run(home, snapshot, scenario, tmp_path):
    common = ("run", scenario, "--dry-run", "--json", "--network", "none", "--output", str(tmp_path))
    live = vscen(home, *common, "--connect", "qemu:///system")
    replay = vscen(home, *common, "--host-facts", str(snapshot))
    assert outcome(replay, f"{snapshot} (snapshot of qemu:///system)") == outcome(live)
