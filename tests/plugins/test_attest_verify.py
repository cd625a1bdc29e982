"""``vscen attest verify`` against libvirt's own ``virt-qemu-sev-validate``, on the same inputs.

The platform's side is the SEV model of ``sev_platform.py`` (LAUNCH_MEASURE: an HMAC-SHA256
keyed with the TIK over 0x04, the API version, build id, policy, the launch digest and a fresh
nonce); the launch digest of an SEV-ES guest comes from libvirt's own code (its VMSA and
hashes-table classes, imported from ``virt-qemu-sev-validate``), so the measurements are the
ones libvirt's tool expects. Each case, valid or tampered, is checked by
both tools, and both must say the same (exit 0 valid, 1 not).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import subprocess
import sys
import uuid
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sev_platform import VALIDATE, GuestContext, fake_ovmf, launch_data, libvirt_module

OVMF = Path("/usr/share/OVMF/OVMF_CODE.fd")
needs_validate = pytest.mark.skipif(not VALIDATE.exists(), reason="virt-qemu-sev-validate is not installed "
                                    "(Debian: libvirt-clients-qemu)")


def vscen(*args: str) -> tuple[int, str, str]:
    """``vscen ARGS`` in this process: (exit code, stdout, stderr)."""
    from vscen.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["vscen", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def libvirt_validate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(VALIDATE), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def libvirt_mod():
    if not VALIDATE.exists():
        pytest.skip("virt-qemu-sev-validate is not installed")
    return libvirt_module()


@pytest.fixture
def owner(tmp_path):
    """The guest owner's files: keys (mode 600), firmware, kernel, initrd."""
    tek, tik = os.urandom(16), os.urandom(16)
    files = {"tik": tik, "tek": tek, "tk": tek + tik, "other-tik": os.urandom(16),
             "firmware": fake_ovmf(), "kernel": os.urandom(100_000), "initrd": os.urandom(50_000)}
    paths = {}
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name] = str(path)
    return files, paths


SKU = (25, 1, 1)  # EPYC Milan


def cases():
    """(id, launch: the guest as launched, given: what the owner expects (None: the same), policy)."""
    sev = {"policy": 0x1}
    es = {"policy": 0x7, "cpus": 4, "sku": SKU}
    yield "sev", sev, None
    yield "sev-tampered-firmware", sev, {"firmware": "tampered"}
    yield "sev-kernel", {**sev, "kernel": True, "cmdline": "console=ttyS0 root=/dev/vda1"}, None
    yield "sev-kernel-no-initrd-cmdline", {**sev, "kernel": True, "initrd": False}, None
    yield "sev-tampered-cmdline", {**sev, "kernel": True, "cmdline": "console=ttyS0"}, {"cmdline": "console=ttyS0 init=/bin/sh"}
    yield "sev-unmeasured-kernel-expected", sev, {"kernel": True}
    yield "sev-other-tik", sev, {"tik": "other-tik"}
    yield "sev-other-build", sev, {"build": 4}
    yield "sev-other-policy", {"policy": 0x3}, {"policy": 0x1}
    yield "sev-es", es, None
    yield "sev-es-one-cpu", {**es, "cpus": 1}, None
    yield "sev-es-kernel", {**es, "kernel": True, "cmdline": "quiet"}, None
    yield "sev-es-other-stepping", es, {"sku": (25, 1, 0)}
    yield "sev-es-other-cpus", es, {"cpus": 2}
    yield "sev-es-other-family", es, {"sku": (23, 49, 0)}
    yield "sev-es-tk", es, {"keys": "tk"}


def _args(files, paths, launch, given, measurement, tmp_path) -> list[str]:
    want = {**launch, **(given or {})}
    firmware = paths["firmware"]
    if want.get("firmware") == "tampered":
        data = bytearray(files["firmware"])
        data[1000] ^= 1
        (tmp_path / "tampered").write_bytes(bytes(data))
        firmware = str(tmp_path / "tampered")
    args = ["--measurement", measurement, "--api-major", "1", "--api-minor", "51",
            "--build-id", str(want.get("build", 3)), "--policy", str(want["policy"]), "--firmware", firmware]
    if want.get("keys") == "tk":
        args += ["--tk", paths["tk"]]
    else:
        args += ["--tik", paths[want.get("tik", "tik")], "--tek", paths["tek"]]
    if want.get("kernel"):
        args += ["--kernel", paths["kernel"]]
        if want.get("initrd", True):
            args += ["--initrd", paths["initrd"]]
        if want.get("cmdline") is not None:
            args += ["--cmdline", want["cmdline"]]
    if want.get("sku"):
        family, model, stepping = want["sku"]
        args += ["--num-cpus", str(want["cpus"]), "--cpu-family", str(family), "--cpu-model", str(model),
                 "--cpu-stepping", str(stepping)]
    return args


@needs_validate
@pytest.mark.parametrize("case", list(cases()), ids=lambda c: c[0])
def test_verify_agrees_with_virt_qemu_sev_validate(case, owner, libvirt_mod, tmp_path):
    name, launch, given = case
    files, paths = owner
    data = launch_data(files["firmware"], launch["policy"],
                       kernel=files["kernel"] if launch.get("kernel") else None,
                       initrd=files["initrd"] if launch.get("kernel") and launch.get("initrd", True) else None,
                       cmdline=launch.get("cmdline"), cpus=launch.get("cpus", 1), cpu=launch.get("sku"), mod=libvirt_mod)
    measurement = GuestContext(files["tik"], policy=launch["policy"]).measure(data)
    args = _args(files, paths, launch, given, measurement, tmp_path)

    theirs = libvirt_validate(*args)
    code, out, err = vscen("attest", "verify", *args)
    expected = 0 if given is None or given == {"keys": "tk"} else 1  # the keys in one file: the same keys
    assert theirs.returncode == expected, theirs.stderr
    assert code == expected, err
    if expected:
        assert err.startswith("error: measurement does not match") and err.count("\n") == 1, err
        assert "not trustworthy" in err
    else:
        assert out.startswith("valid:"), out


@needs_validate
@pytest.mark.skipif(not OVMF.exists(), reason="no OVMF firmware installed")
@pytest.mark.parametrize("policy", [0x1, 0x5])
def test_real_ovmf(policy, owner, libvirt_mod):
    """The distribution's OVMF (its footer table and SEV info block, for SEV-ES), both tools."""
    files, paths = owner
    firmware = OVMF.read_bytes()
    sku = SKU if policy & 4 else None
    measurement = GuestContext(files["tik"], policy=policy).measure(
        launch_data(firmware, policy, cpus=2, cpu=sku, mod=libvirt_mod))
    args = ["--measurement", measurement, "--api-major", "1", "--api-minor", "51", "--build-id", "3",
            "--policy", str(policy), "--firmware", str(OVMF), "--tik", paths["tik"], "--tek", paths["tek"]]
    if sku:
        args += ["--num-cpus", "2", "--cpu-family", "25", "--cpu-model", "1", "--cpu-stepping", "1"]
    assert libvirt_validate(*args).returncode == 0
    assert vscen("attest", "verify", *args)[0] == 0
    tampered = list(args)
    tampered[tampered.index("--api-minor") + 1] = "52"
    assert libvirt_validate(*tampered).returncode == 1
    assert vscen("attest", "verify", *tampered)[0] == 1


@needs_validate
def test_vmsa_files(owner, libvirt_mod, tmp_path):
    """--vmsa-cpu0/--vmsa-cpu1 (save areas dumped elsewhere) instead of the CPU signature."""
    files, paths = owner
    cvm = libvirt_mod.OfflineConfidentialVM(policy=0x7, num_cpus=3)
    cvm.firmware = files["firmware"]
    cvm.build_vmsas(25, 17, 0)
    (tmp_path / "vmsa0").write_bytes(cvm.vmsa_cpu0)
    (tmp_path / "vmsa1").write_bytes(cvm.vmsa_cpu1)
    measurement = GuestContext(files["tik"], policy=0x7).measure(cvm.get_measured_data())
    args = ["--measurement", measurement, "--api-major", "1", "--api-minor", "51", "--build-id", "3",
            "--policy", "7", "--firmware", paths["firmware"], "--tk", paths["tk"], "--num-cpus", "3",
            "--vmsa-cpu0", str(tmp_path / "vmsa0"), "--vmsa-cpu1", str(tmp_path / "vmsa1")]
    assert libvirt_validate(*args).returncode == 0
    assert vscen("attest", "verify", *args)[0] == 0
    swapped = [str(tmp_path / "vmsa1") if a.endswith("vmsa0") else str(tmp_path / "vmsa0") if a.endswith("vmsa1")
               else a for a in args]
    assert libvirt_validate(*swapped).returncode == 1
    assert vscen("attest", "verify", *swapped)[0] == 1


@needs_validate
@pytest.mark.parametrize("sku", [(23, 1, 2), (23, 49, 0), (25, 1, 1), (25, 17, 1), (26, 2, 0), (6, 15, 11)])
def test_vmsa_bytes_are_libvirts(sku, libvirt_mod):
    """The save areas, byte for byte, and the hashes table, as libvirt lays them out."""
    from vscen_attest import measure

    firmware = fake_ovmf(reset=0x80C004)
    cvm = libvirt_mod.OfflineConfidentialVM(policy=0x7, num_cpus=2)
    cvm.firmware = firmware
    cvm.build_vmsas(*sku)
    assert measure.vmsas(firmware, *sku) == (cvm.vmsa_cpu0, cvm.vmsa_cpu1)
    table = libvirt_mod.KernelTable()
    table.kernel = hashlib.sha256(b"kernel").digest()
    table.load_cmdline("root=/dev/vda")
    assert measure.hashes_table(b"kernel", None, "root=/dev/vda") == table.build()


def test_bad_input_is_one_line(owner, tmp_path):
    """Bad input: exit 2 and one line naming the option, the value and what is allowed."""
    files, paths = owner
    base = ["--measurement", base64.b64encode(bytes(48)).decode(), "--api-major", "1", "--api-minor", "51",
            "--build-id", "3", "--policy", "1", "--firmware", paths["firmware"], "--tik", paths["tik"]]

    def run(*change, drop=()):
        args = list(base)
        for option in drop:
            i = args.index(option)
            del args[i:i + 2]
        for option, value in zip(change[::2], change[1::2], strict=True):
            if option in args:
                args[args.index(option) + 1] = value
            else:
                args += [option, value]
        return vscen("attest", "verify", *args)

    loose = tmp_path / "loose-tik"
    loose.write_bytes(files["tik"])
    loose.chmod(0o644)
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    short.chmod(0o600)
    for (change, drop), words in [
        ((("--measurement", "not base64!"), ()), ["--measurement", "base64 of 48 bytes"]),
        ((("--measurement", "two\nlines"), ()), ["--measurement", "'two\\nlines'"]),
        ((("--measurement", base64.b64encode(bytes(32)).decode()), ()), ["--measurement", "48 bytes"]),
        ((("--api-major", "256"), ()), ["--api-major", "256", "0 to 255"]),
        ((("--policy", "-1"), ()), ["--policy", "-1"]),
        ((("--tik", str(loose)), ()), ["--tik", "read by others", "chmod 600"]),
        ((("--tik", str(short)), ()), ["--tik", "3 bytes", "16 bytes"]),
        ((("--tik", str(tmp_path / "nope")), ()), ["--tik", "cannot read"]),
        (((), ("--tik",)), ["--tik", "missing"]),
        ((("--tk", paths["tk"]), ()), ["--tk", "not allowed with --tik"]),
        (((), ("--firmware",)), ["--firmware", "missing"]),
        (((), ("--build-id",)), ["--build-id", "missing"]),
        ((("--initrd", paths["initrd"]), ()), ["--initrd", "without --kernel"]),
        ((("--policy", "7"), ()), ["--num-cpus", "missing"]),
        ((("--policy", "7", "--num-cpus", "2"), ()), ["--cpu-family", "missing"]),
        ((("--policy", "7", "--num-cpus", "2", "--cpu-family", "25"), ()), ["--cpu-family", "all three"]),
        ((("--policy", "7", "--num-cpus", "1", "--cpu-family", "999", "--cpu-model", "1", "--cpu-stepping", "1"), ()),
         ["--cpu-family", "999", "0 to 270"]),
        ((("--policy", "7", "--num-cpus", "0"), ()), ["--num-cpus", "0", "1 to 65535"]),
        ((("--connect", "test:///default"), ()), ["--connect", "without --domain"]),
    ]:
        code, out, err = run(*change, drop=drop)
        assert code == 2, (change, drop, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        for word in words:
            assert word in err, (word, err)
    # a firmware without OVMF's table cannot give an SEV-ES guest's AP start address
    plain = tmp_path / "plain.fd"
    plain.write_bytes(os.urandom(4096))
    code, _, err = run("--policy", "7", "--num-cpus", "2", "--cpu-family", "25", "--cpu-model", "1",
                       "--cpu-stepping", "1", "--firmware", str(plain))
    assert code == 2 and "SEV info block" in err, err


def test_verify_domain_on_the_test_driver(owner):
    """--domain on a driver that cannot report launch security: a clear error, no traceback."""
    files, paths = owner
    code, out, err = vscen("attest", "verify", "--domain", "test", "--connect", "test:///default",
                           "--firmware", paths["firmware"], "--tik", paths["tik"])
    assert code == 7, err
    assert err.startswith("error: attest: test:///default cannot report the launch measurement of 'test'"), err
    assert err.count("\n") == 1
    code, out, err = vscen("attest", "verify", "--domain", "nosuch", "--connect", "test:///default",
                           "--firmware", paths["firmware"], "--tik", paths["tik"])
    assert code == 2 and err == "error: attest: no guest 'nosuch' is defined on test:///default\n", err


# -- hostile input: a verdict or a one-line error, never an internal error ------------------

FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FOOTER = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le


def firmware_tails():
    """Images whose last bytes look, more or less, like OVMF's table."""
    table = st.binary(max_size=80).map(lambda b: b + struct.pack("<H", len(b) + 18) + FOOTER + bytes(32))
    odd_length = st.tuples(st.binary(max_size=40), st.integers(0, 0xFFFF)).map(
        lambda t: t[0] + struct.pack("<H", t[1]) + FOOTER + bytes(32))
    return st.one_of(st.binary(max_size=200), table, odd_length)


@FUZZ
@given(tail=firmware_tails())
def test_any_firmware_table_parses_or_says_why(tail):
    from vscen_attest import measure

    from vscen.errors import VscenError

    image = bytes(64) + tail
    entries = measure.ovmf_table(image)
    assert all(isinstance(v, bytes) for v in entries.values())
    try:
        measure.vmsas(image, 25, 1, 1)
    except VscenError as exc:
        assert "SEV info block" in str(exc)
    measure.secret_area(image)


@FUZZ
@given(measurement=st.one_of(st.text(max_size=70), st.just("a\nb"), st.binary(min_size=40, max_size=56).map(
           lambda b: base64.b64encode(b).decode())),
       numbers=st.lists(st.integers(-3, 2**33), min_size=4, max_size=4),
       es=st.booleans(), cpus=st.integers(-2, 70000), family=st.integers(-1, 5000),
       tail=firmware_tails(), key_size=st.sampled_from([0, 15, 16, 17, 32]))
def test_verify_input_gives_a_verdict_or_one_line(tmp_path, measurement, numbers, es, cpus, family, tail,
                                                   key_size):
    firmware = tmp_path / "fw"
    firmware.write_bytes(bytes(1024) + tail)
    tik = tmp_path / "tik"
    tik.write_bytes(os.urandom(key_size))
    tik.chmod(0o600)
    major, minor, build, policy = numbers
    policy = policy | 4 if es else policy
    args = ["--measurement", measurement, "--api-major", str(major), "--api-minor", str(minor),
            "--build-id", str(build), "--policy", str(policy), "--firmware", str(firmware), "--tik", str(tik)]
    if es:
        args += ["--num-cpus", str(cpus), "--cpu-family", str(family), "--cpu-model", "1", "--cpu-stepping", "1"]
    code, out, err = vscen("attest", "verify", *args)
    assert code in (1, 2), (code, err)  # random inputs are never valid
    assert err.startswith("error: ") and err.count("\n") == 1 and "internal error" not in err, err
