"""``python -m benchmarks.cli_help_bench``: one row per ``nrg`` command, each help run and timed."""

from __future__ import annotations

from benchmarks import cli_help_bench
from server.cli import command_paths


def test_every_command_gets_a_row_and_the_summary(capsys):
    assert cli_help_bench.main(["--runs", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("nrg ")]
    assert [row.split("--help")[0].split() for row in rows] == [["nrg", *words] for words in command_paths()]
    assert all(float(value) > 0 for row in rows for value in row.split("--help")[1].split())
    assert lines[-1].startswith(f"{len(rows)} commands x 1 runs: median of medians ")
