"""Start-up benchmark: wall time of ``vscen run secure-vm --dry-run`` as a ratio to a bare
``python -c "import typer, lxml.etree, pluggy"`` on the same machine, same interpreter.

Run: ``python tests/bench_startup.py [--runs N] [--instructions]``; ``tox -e bench`` runs
``tests/bench_speed.py``, which measures this and more (discovery, a guest's lifecycle).
Target: ratio <= 1.5. It is a benchmark, not a test: it prints figures and never fails a suite.
Wall time is noisy on a shared machine; ``--instructions`` also counts the instructions each
command executes under valgrind's callgrind, which the machine's load does not change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], env: dict, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions with valgrind --tool=callgrind (slow, repeatable)")
    args = parser.parse_args()
    env = dict(os.environ)
    # the embedded default, whether or not a daemon runs here
    env["LIBVIRT_DEFAULT_URI"] = "test:///default"
    # as installed, with bytecode cached (pip compiles a wheel's modules at install time; an
    # environment that forbids writing bytecode would make every run recompile vscen)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    bare = [sys.executable, "-c", "import typer, lxml.etree, pluggy"]
    run = [sys.executable, "-m", "vscen.cli", "run", "secure-vm", "--dry-run"]
    timed(bare, env, 2)  # warm the page cache for both
    timed(run, env, 2)
    base = timed(bare, env, args.runs)
    ours = timed(run, env, args.runs)
    b, o = statistics.median(base), statistics.median(ours)
    print(f"bare imports (typer, lxml.etree, pluggy): median {b * 1000:.0f} ms over {args.runs} runs")
    print(f"vscen run secure-vm --dry-run:            median {o * 1000:.0f} ms over {args.runs} runs")
    print(f"ratio: {o / b:.2f}x (target <= 1.5x)")
    if args.instructions:
        ib, io = instructions(bare, env), instructions(run, env)
        print(f"instructions: bare {ib / 1e6:.0f} M, vscen {io / 1e6:.0f} M, ratio {io / ib:.2f}x")


def instructions(cmd: list[str], env: dict) -> int:
    """Instructions *cmd* executes (callgrind's total Ir)."""
    import re
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", *cmd],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", proc.stderr).group(1))


if __name__ == "__main__":
    main()
