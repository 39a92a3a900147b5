"""``python -m benchmarks.compile_bench`` on the tiny pipeline with the ``eager`` backend (dynamo's tracing
alone, the cheapest compilation): it warms up, steps both variants, reports no recompile, and appends
its dated section to the ``--benchmarks`` file. Its figures mean nothing at this size."""

from __future__ import annotations

import json

from benchmarks import compile_bench


def test_one_round_reports_every_row_and_appends_its_section(tiny_dir, tmp_path, capsys):
    record = tmp_path / "benchmarks.md"
    record.write_text("# Benchmarks\n")
    out = tmp_path / "compile.json"
    argv = ["--model", str(tiny_dir("wan")), "--size", "32x32", "--frames", "9", "--backend", "eager",
            "--batches", "1,2", "--modes", "unguided", "--rounds", "1", "--repeats", "2", "--output-file", str(out),
            "--benchmarks", str(record)]
    assert compile_bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert [(r["mode"], r["batch"]) for r in result["results"]] == [("unguided", 1), ("unguided", 2)]
    assert all(r["ratio"] > 0 and len(r["eager_steps_ms"]) == 2 for r in result["results"])
    assert result["recompiles"] == 0 and result["warmup_compiles"] >= 0 and result["blocks"] == 3
    text = record.read_text()
    assert text.startswith("# Benchmarks\n\n## `--compile`: one denoising step eager vs compiled")
    assert "Command: `python -m benchmarks.compile_bench --model " in text and "torch " in text
    assert text.count("| unguided |") == 2 and "Target (>= 1.25x" in text
    assert "## `--compile`" in capsys.readouterr().out
