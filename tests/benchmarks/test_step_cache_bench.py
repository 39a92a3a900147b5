"""``python -m benchmarks.step_cache_bench`` at a tiny size: every setting runs, the uncached rows are the
baseline (no calls skipped, nothing moved), and the table names every setting."""

import json

from benchmarks import step_cache_bench


def test_every_setting_runs_against_its_uncached_baseline(tmp_path, capsys):
    out = tmp_path / "cache.json"
    argv = ["--thresholds", "0.5", "--seeds", "1", "--prompts", "2", "--steps", "3", "--output-file", str(out)]
    assert step_cache_bench.main(argv) == 0
    rows = {row["setting"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"unguided@0.5", "guided@0", "guided@0.5"}
    assert rows["guided@0"]["cached_calls"] == 0 and rows["guided@0"]["time_multiple"] == 1.0
    assert all(mean == 0.0 for mean, _ in rows["guided@0"]["truth_vs_uncached"].values())
    assert "win_vs_unguided" in rows["guided@0.5"] and "win_vs_unguided" not in rows["unguided@0.5"]
    assert "| guided@0.5 |" in capsys.readouterr().out
