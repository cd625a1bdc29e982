"""Speed benchmark (issue 12): each figure is a ratio to a floor measured side by side, in one run.

1. start-up: ``vscen run secure-vm --dry-run`` (embedded ``test:///default``) against a bare
   ``python -c "import typer, lxml.etree, pluggy"``; target <= 1.5. Also shown: the same
   command with no cache (``VSCEN_NO_CACHE=1``: a first run, or after an install).
2. discovery: the same command with 300 extra installed distributions (minimal ``.dist-info``
   directories, none a vscen plugin, on ``PYTHONPATH``) against none; target <= 1.2. Also the
   discovery alone (``vscen.plugincache.entry_points``), with and without the cache.
3. lifecycle (``--lifecycle``: it starts guests on ``qemu:///system``): ``vscen run computation
   --start`` then ``vscen destroy`` (TCG, a 64 MiB raw volume, user networking, 128 MiB of
   memory; the disk is empty, nothing boots) against ``virsh`` doing the same with the same
   XML (vol-create-as, define, start, destroy, undefine, vol-delete); target <= 1.1. Guests
   are named ``speed-<pid>-<n>`` and removed.

Run: ``python tests/bench_speed.py [--runs N] [--instructions] [--lifecycle]`` (or ``tox -e
bench``). A benchmark, not a test: it prints figures and never fails a suite. Wall time is
noisy on a shared machine: the floor and vscen run alternately, and a wall ratio is the median
of the ratios of each pair (the medians of the times are shown beside it); ``--instructions``
counts the instructions each command executes under valgrind's callgrind, which the machine's
load does not change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_startup import instructions, timed  # noqa: E402

BARE = [sys.executable, "-c", "import typer, lxml.etree, pluggy"]
DRY_RUN = [sys.executable, "-m", "vscen.cli", "run", "secure-vm", "--dry-run"]
DISCOVER = [sys.executable, "-c", """
try:
    from vscen.plugincache import entry_points
except ImportError:  # a vscen before the cache, for comparison
    from importlib_metadata import entry_points as all_entry_points

    def entry_points(group):
        return sorted(all_entry_points(group=group), key=lambda e: e.name)
entry_points('vscen')
"""]
POOL = "vscen-var-lib-libvirt-images"


def paired_ms(floor: tuple[list[str], dict], ours: tuple[list[str], dict], runs: int) -> tuple[float, float, float]:
    """(median floor ms, median ours ms, median of the per-pair ratios): the two commands run
    alternately, so that both see the same load of a shared machine; one run of each first."""
    timed(*floor, 1)
    timed(*ours, 1)
    pairs = [(timed(*floor, 1)[0], timed(*ours, 1)[0]) for _ in range(runs)]
    return (statistics.median(f for f, _ in pairs) * 1000, statistics.median(o for _, o in pairs) * 1000,
            statistics.median(o / f for f, o in pairs))


def row(label: str, floor: float, ours: float, target: float | None, unit: str = "ms",
        ratio: float | None = None) -> None:
    goal = f"  (target <= {target}x)" if target else ""
    ratio = ours / floor if ratio is None else ratio
    print(f"  {label:<44} {floor:9.0f} {ours:9.0f} {unit}  {ratio:5.2f}x{goal}")


def base_env(tmp: Path) -> dict:
    env = dict(os.environ)
    env["LIBVIRT_DEFAULT_URI"] = "test:///default"  # the embedded default, daemon or not
    # as installed, with bytecode cached (pip compiles a wheel's modules at install time)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("VSCEN_NO_CACHE", None)
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # vscen's cache, filled by the first run
    env["XDG_DATA_HOME"] = str(tmp / "data")
    return env


def make_dists(root: Path, count: int) -> Path:
    """*count* installed distributions as pip leaves them, none a vscen plugin (some with
    console scripts, as many are)."""
    root.mkdir(parents=True)
    for i in range(count):
        info = root / f"benchdist_{i:03d}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: benchdist-{i:03d}\nVersion: 1.0\n")
        if i % 3 == 0:
            (info / "entry_points.txt").write_text(f"[console_scripts]\nbench{i} = benchdist_{i:03d}:main\n")
    past = time.time() - 60  # as an installation some time ago (vscen caches nothing younger)
    for path in [*root.iterdir(), root]:
        os.utime(path, (past, past))
    return root


def startup(env: dict, args, tmp: Path) -> None:
    print("start-up                                        floor      vscen       ratio")
    cold = env | {"VSCEN_NO_CACHE": "1"}
    b, o, ratio = paired_ms((BARE, env), (DRY_RUN, env), args.runs)
    row("run secure-vm --dry-run (wall)", b, o, 1.5, ratio=ratio)
    b, c, ratio = paired_ms((BARE, env), (DRY_RUN, cold), args.runs)
    row("  the same, no cache (wall)", b, c, None, ratio=ratio)
    if args.instructions:
        ib, io, ic = instructions(BARE, env), instructions(DRY_RUN, env), instructions(DRY_RUN, cold)
        row("run secure-vm --dry-run (instructions)", ib / 1e6, io / 1e6, 1.5, "M ")
        row("  the same, no cache (instructions)", ib / 1e6, ic / 1e6, None, "M ")


def discovery(env: dict, args, tmp: Path) -> None:
    print("300 installed distributions                      none       300        ratio")
    more = os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    none_env = env | {"PYTHONPATH": str(make_dists(tmp / "none", 0)) + more}
    many_env = env | {"PYTHONPATH": str(make_dists(tmp / "many", 300)) + more}
    n, m, ratio = paired_ms((DRY_RUN, none_env), (DRY_RUN, many_env), args.runs)
    row("run secure-vm --dry-run (wall)", n, m, 1.2, ratio=ratio)
    n, m, ratio = paired_ms((DISCOVER, none_env), (DISCOVER, many_env), args.runs)
    row("discovery alone (wall)", n, m, 1.2, ratio=ratio)
    no_cache = {"VSCEN_NO_CACHE": "1"}
    n, m, ratio = paired_ms((DISCOVER, none_env | no_cache), (DISCOVER, many_env | no_cache), args.runs)
    row("  discovery alone, no cache (wall)", n, m, None, ratio=ratio)
    if args.instructions:
        row("run secure-vm --dry-run (instructions)", instructions(DRY_RUN, none_env) / 1e6,
            instructions(DRY_RUN, many_env) / 1e6, 1.2, "M ")
        row("discovery alone (instructions)", instructions(DISCOVER, none_env) / 1e6,
            instructions(DISCOVER, many_env) / 1e6, 1.2, "M ")
        row("  discovery alone, no cache (instructions)", instructions(DISCOVER, none_env | no_cache) / 1e6,
            instructions(DISCOVER, many_env | no_cache) / 1e6, None, "M ")


def lifecycle(env: dict, args, tmp: Path) -> None:
    env = env | {"LIBVIRT_DEFAULT_URI": "qemu:///system"}
    out = tmp / "guests"
    options = ["--disk-size", "64M", "--network", "user", "--memory", "128MiB", "--virt-type", "qemu",
               "--output", str(out)]
    vscen = [sys.executable, "-m", "vscen.cli"]
    virsh = ["virsh", "-q", "-c", "qemu:///system"]

    def run(cmd, **kw):
        return subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, **kw)

    ours, floor = [], []
    for n in range(args.lifecycle_runs):
        name = f"speed-{os.getpid()}-{n}"
        try:
            t0 = time.perf_counter()
            run([*vscen, "run", "computation", "--name", name, "--start", *options])
            run([*vscen, "destroy", name, "--output", str(out)])
            ours.append(time.perf_counter() - t0)
        finally:
            subprocess.run([*vscen, "destroy", name, "--output", str(out)], env=env, capture_output=True)
        xml = tmp / f"{name}.xml"  # the same guest, defined by virsh
        xml.write_text(run([*vscen, "run", "computation", "--name", name, "--dry-run", *options]).stdout)
        try:
            t0 = time.perf_counter()
            run([*virsh, "vol-create-as", POOL, f"{name}.raw", "64M", "--format", "raw"])
            run([*virsh, "define", str(xml)])
            run([*virsh, "start", name])
            run([*virsh, "destroy", name])
            run([*virsh, "undefine", name])
            run([*virsh, "vol-delete", f"{name}.raw", "--pool", POOL])
            floor.append(time.perf_counter() - t0)
        finally:  # whatever is left of it
            for cmd in (["destroy", name], ["undefine", name], ["vol-delete", f"{name}.raw", "--pool", POOL]):
                subprocess.run([*virsh, *cmd], capture_output=True)
    print("lifecycle on qemu:///system (TCG)                virsh      vscen       ratio")
    row(f"run --start + destroy, median of {args.lifecycle_runs} (wall)", statistics.median(floor) * 1000,
        statistics.median(ours) * 1000, 1.1, ratio=statistics.median(o / f for f, o in zip(floor, ours, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions with valgrind --tool=callgrind (slow, repeatable)")
    parser.add_argument("--lifecycle", action="store_true", help="also the guest lifecycle on qemu:///system")
    parser.add_argument("--lifecycle-runs", type=int, default=5)
    parser.add_argument("--lifecycle-only", action="store_true", help="the guest lifecycle alone")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="vscen-bench-") as name:
        tmp = Path(name)
        env = base_env(tmp)
        # python -m and -c put the current directory on sys.path: one changed just now would
        # keep vscen from caching its entry points (it caches nothing younger than a few seconds)
        work = tmp / "cwd"
        work.mkdir()
        past = time.time() - 60
        os.utime(work, (past, past))
        os.chdir(work)
        if not args.lifecycle_only:
            startup(env, args, tmp)
            discovery(env, args, tmp)
        if args.lifecycle or args.lifecycle_only:
            lifecycle(env, args, tmp)


if __name__ == "__main__":
    main()
