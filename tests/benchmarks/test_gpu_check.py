"""``benchmarks/gpu_check.sh``: the script parses, its CPU dry run runs every part and writes the
markdown section with figures in every table, and a part that fails is reported as failed."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
SECTIONS = ("### Fused guided step", "### One denoising step", "### A guided server batch step",
            "### `--step-cache`", "### nrg-serve vs plain diffusers", "### `--compile`")


def _tables(markdown: str) -> dict[str, list[str]]:
    """Data rows of each table (header and separator left out), by the heading above the table."""
    tables: dict[str, list[str]] = {}
    heading, previous = "", ""
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line
        if line.startswith("|") and previous.startswith("|") and not set(line) <= set("|-"):
            tables.setdefault(heading, []).append(line)
        previous = line
    return tables


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_dry_run_writes_every_section_with_figures(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-check.json", "gpu-check.log", "gpu-check.md"]
    markdown = (tmp_path / "gpu-check.md").read_text()
    assert markdown.startswith("## GPU check (CPU dry run")
    assert "`bash benchmarks/gpu_check.sh --dry-run`" in markdown and "Failed" not in markdown
    tables = _tables(markdown)
    for section in SECTIONS:
        heading = next((h for h in tables if h.startswith(section)), None)
        assert heading is not None, f"no table under {section!r}:\n{markdown}"
    # parts, kernel B = 1 and 2, step 3 variants and 1 attention kernel x B = 1 and 2, batch 2 steps, serve
    # one round of two sides, compile B = 1 and 2 of both modes; cache: full and skipped calls
    assert [len(rows) for rows in tables.values()] == [6, 2, 8, 2, 2, 2, 4]
    assert "| 1 | unguided, attention _native_math: " in markdown
    for heading, rows in tables.items():
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split("|")[1:]]  # the first cell names the row
            numbers = [float(c) for c in cells if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", c)]
            assert not any(c.lower() in ("nan", "inf", "-inf") for c in cells), (heading, row)
            assert numbers and all(math.isfinite(n) and n >= 0 for n in numbers), (heading, row)
            assert any(n > 0 for n in numbers), (heading, row)
    assert "| kernel | 0 |" in markdown and "| step | 0 |" in markdown and "| serve | 0 |" in markdown
    assert "| compile | 0 |" in markdown and "recompiles during the rounds: 0." in markdown
    assert "| batch | 0 |" in markdown and "| 1 | 4 |" in markdown  # the search row's 2 particles count, the LoRA row
    # Every timed step of the skipping row was skipped (both CFG halves), none of the full row's.
    assert "| cache | 0 |" in markdown and "| full | " in markdown and "| skipped | " in markdown
    cache = json.loads((tmp_path / "gpu-check.json").read_text())["cache"]
    assert [r["cached_calls"] for r in cache["rows"]] == [0, 2 * cache["iters"]]
    combined = json.loads((tmp_path / "gpu-check.json").read_text())
    assert {part: set(combined[part]["versions"]) >= {"torch", "triton", "diffusers"}
            for part in ("kernel", "step", "batch", "compile")} == dict.fromkeys(("kernel", "step", "batch", "compile"),
                                                                             True)
    assert "Same first video as diffusers: yes" in markdown


def test_a_failed_part_is_reported_with_the_end_of_its_log(tmp_path):
    (tmp_path / "parts.tsv").write_text("kernel\t124\t110.0\t110\nstep\t1\t3.2\t125\n")
    (tmp_path / "kernel.log").write_text("compiling\n")
    (tmp_path / "step.log").write_text("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    text = gpu_check.report(tmp_path, tmp_path / "out" / "gpu-check.md", False, "bash benchmarks/gpu_check.sh", "",
                            "abc1234")
    assert "**Failed** (timed out after its 110 s allowance)" in text and "compiling" in text
    assert "**Failed** (exit status 1)" in text and "RuntimeError: CUDA out of memory" in text
    assert "**Not run** (no status for part `serve`)" in text
    assert "**Not run** (no status for part `compile`)" in text
    assert "**Not run** (no status for part `cache`)" in text
    assert (tmp_path / "out" / "gpu-check.json").exists()
