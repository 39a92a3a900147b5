"""``python -m benchmarks.cli_help_bench``: how long ``nrg --help`` and every subcommand's ``--help`` take.

Each help runs ``--runs`` times in a fresh interpreter, as a person typing it would start one:
``python -m server.cli WORDS --help`` from the repository root (the same ``main`` the ``nrg`` console
script calls, on this checkout's code). Printed: the median, fastest and slowest wall time of each
command, then the median over all of them. The commands are every path of the parser
(:func:`server.cli.command_paths`), so a new subcommand is timed without editing this file.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from server.cli import command_paths

ROOT = Path(__file__).resolve().parents[1]


def time_help(words: Sequence[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` runs of ``nrg WORDS --help``, each in a new interpreter."""
    argv = [sys.executable, "-m", "server.cli", *words, "--help"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_help_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each help (default 5)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1; got {args.runs}")
    print(f"{'command':<32}{'median s':>10}{'min s':>10}{'max s':>10}")
    medians = []
    for words in command_paths():
        times = time_help(words, args.runs)
        medians.append(statistics.median(times))
        name = " ".join(("nrg", *words, "--help"))
        print(f"{name:<32}{medians[-1]:>10.3f}{min(times):>10.3f}{max(times):>10.3f}")
    print(f"{len(medians)} commands x {args.runs} runs: median of medians {statistics.median(medians):.3f} s, "
          f"slowest median {max(medians):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
