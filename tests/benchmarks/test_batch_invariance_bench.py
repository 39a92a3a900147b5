"""``python -m benchmarks.batch_invariance_bench`` on a tiny pipeline: both modes run, the invariant one
matches alone bit for bit, and the report's figures are consistent."""

from __future__ import annotations

import json

from benchmarks import batch_invariance_bench


def test_both_modes_run_and_the_invariant_one_matches_alone(tiny_dir, tmp_path, capsys):
    from guidance.reward_model import init_reward_model
    from guidance.families import load_pipeline

    model = tiny_dir("wan")
    reward_dir = tmp_path / "reward"
    init_reward_model(load_pipeline(model), ["vq", "mq", "ta"], num_blocks=1).save(reward_dir)
    out = tmp_path / "inv.json"
    assert batch_invariance_bench.main(["--model", str(model), "--reward", str(reward_dir), "--steps", "3",
                                        "--rounds", "1", "--output-file", str(out)]) == 0
    result = json.loads(out.read_text())
    invariant = result["alone_vs_batch"]["batch_invariant"]
    assert invariant == {"frames_max_levels": 0, "frames_share_differing": 0.0, "latents_max_abs": 0.0}
    assert result["cost_ratio"] > 0 and set(result["median_batch_s"]) == {"default", "batch_invariant"}
    assert "cost of batch-invariant:" in capsys.readouterr().out
