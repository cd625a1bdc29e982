"""On a real libvirt daemon (qemu:///system, started by .ci/run): desktop and computation for
the local host are defined and started as TCG guests, seen running, then destroyed and
undefined. Skipped where no daemon runs, except in CI, where that is a failure."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

IMAGES = Path("/var/lib/libvirt/images")




@pytest.fixture
def workdir():
    path = IMAGES / f"vscen-test-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cleanup(conn, name: str) -> None:
    import libvirt

    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_TPM", 0))


@pytest.mark.parametrize("scenario,fmt", [("desktop", "qcow2"), ("computation", "raw")])
def test_start_tcg_guest_on_qemu_system(system_conn, workdir, tmp_path, scenario, fmt):
    import libvirt

    from vscen.apply import apply, rollback
    from vscen.journal import Journal
    from vscen.pipeline import Request, render
    from vscen.plan import make_plan

    name = f"vscen-test-{uuid.uuid4().hex[:8]}-{scenario}"
    disk = workdir / f"{name}.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(disk), "64M"], check=True)
    request = Request(
        scenarios=[scenario], connect="qemu:///system",
        options={"name": name, "virt_type": "qemu", "network": "none", "memory": "256MiB", "vcpu": 1},
        disks=[f"path={disk}"],
    )
    result = render(request)
    try:
        assert result.ctx.host.source == "qemu:///system"
        plan = make_plan(result, tmp_path, start=True)
        journal = Journal.open(plan.out_dir, name, "qemu:///system")
        apply(plan, journal, result.connection, result.ctx.registry)
        dom = system_conn.lookupByName(name)
        assert dom.isActive(), f"{name} is not running"
        state, _ = dom.state()
        assert state == libvirt.VIR_DOMAIN_RUNNING
        # a second identical run changes nothing
        again = make_plan(render(request), tmp_path, start=True)
        assert again.steps == [], [s.description for s in again.steps]
        # what vscen destroy does: take back every journalled record
        assert rollback(list(journal.entries), journal, result.connection, result.ctx.registry) == []
        assert not plan.out_dir.exists()
    finally:
        cleanup(system_conn, name)
        if result.connection is not None:
            result.connection.close()
    with pytest.raises(libvirt.libvirtError):
        system_conn.lookupByName(name)
