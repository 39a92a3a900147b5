"""``nrg eval --align``: the shared budget of the methods table, drift, and resuming finished runs."""

import json

import pytest
import torch

from demo_world import align_table
from guidance.align.config import METHODS
from guidance.families.base import VideoShape

SHAPE = VideoShape(height=16, width=16, frames=5)


def test_every_method_runs_on_the_one_budget():
    plan = align_table.runs("REWARD") + align_table.curve_runs(25)
    data = {"pairs": "P", "groups": "G", "experts": "E"}
    assert len({r.name for r in plan}) == len(plan)
    assert set(METHODS) <= {r.method for r in plan}
    options = {o for r in plan for o in r.options}
    assert {"--is-clip", "--teacher", "--uapa-map-ratio", "--snapshot-every"} <= options
    for run in align_table.runs("REWARD"):
        argv = align_table.command(run, data, align_table.Path("OUT"), 100, 480.0)
        shared = argv.index("--objectives")
        assert tuple(argv[shared:shared + len(align_table.COMMON)]) == align_table.COMMON
        assert argv[argv.index("--steps") + 1] == str(run.steps or 100) and argv[argv.index("--out") + 1] == f"OUT/{run.name}"
        assert argv[argv.index("--cpu-budget") + 1] == "480"
        assert not {"--lr", "--batch", "--lora-rank", "--steps", "--cpu-budget"} & set(run.options)


def _pairs_dir(tmp_path, family):
    from guidance.train.preference_data import write_pairs

    generator = torch.Generator().manual_seed(0)
    shape = tuple(family.prepare_latents(SHAPE, [generator]).shape[1:])
    records = [{"prompt": "a red circle moving left", "a": torch.randn(shape, generator=generator),
                "b": torch.randn(shape, generator=generator), "labels": {"mq": "A"}, "split": "test", "shape": SHAPE}
               for _ in range(3)]
    return write_pairs(tmp_path / "pairs", ["mq"], records)


def test_drift_is_zero_for_an_untrained_lora_and_grows_with_the_weights(tiny_dir, tmp_path):
    from guidance.align.lora import attach_lora, lora_parameters, save_lora
    from guidance.families import load_pipeline

    family = load_pipeline(tiny_dir("wan"))
    attach_lora(family, 2, 4, ["to_q", "to_v"], seed=0)
    zero = save_lora(family, tmp_path / "zero")
    with torch.no_grad():
        for _, p in lora_parameters(family):
            p.add_(0.5 * torch.randn_like(p))
    moved = save_lora(family, tmp_path / "moved")
    result = align_table.drift({"zero": zero, "moved": moved}, _pairs_dir(tmp_path, family), tiny_dir("wan"))
    assert result["zero"] == {"abs": 0.0, "rel": 0.0}
    assert result["moved"]["abs"] > 0 and result["moved"]["rel"] > 0


def test_finished_runs_are_skipped_and_a_failed_run_is_named(tmp_path):
    done = align_table.AlignRun("done", "flow-dpo", "pairs")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / align_table.REPORT_NAME).write_text(json.dumps({"cpu_seconds": 12.5}))
    data = {"pairs": tmp_path / "missing"}
    assert align_table.train_all([done], data, tmp_path, 10, 60.0, jobs=1, log=lambda _: None) == {
        "done": {"cpu_seconds": 12.5}}
    broken = align_table.AlignRun("broken", "flow-dpo", "pairs")
    with pytest.raises(RuntimeError, match=r"broken \(exit [1-9].*broken\.log"):
        align_table.train_all([done, broken], data, tmp_path, 10, 60.0, jobs=1, log=lambda _: None)


def test_the_table_shows_every_row_the_embedded_checkpoint_and_the_curve():
    stats = {"wins": 6, "losses": 2, "ties": 4, "decisive": 8, "rate": 0.75, "ci95": [0.41, 0.93], "p_value": 0.29}
    means = {"vq": 0.4, "mq": 0.1, "ta": 0.8}
    per_objective = {o: stats for o in ("vq", "mq", "ta")}
    row = {"name": "is-daa", "what": "IS", "stats": per_objective, "means": means, "drift": {"abs": 0.01, "rel": 0.02},
           "heldout_accuracy": 0.7, "cpu_seconds": 300.0, "steps": 123, "against_embedded": {"embedded-dpo-mq": per_objective}}
    report = {"rows": [row], "embedded": {"embedded-dpo-mq": {"stats": per_objective, "means": means}},
              "base_means": means, "curve": {"beta": "100", "clips": 48, "runs": {
                  "dpo-low-beta": [{"step": 50, "stats": per_objective, "means": means}]}}}
    table = align_table.format_table(report)
    assert "| is-daa | IS | **75.0** [41-93] 6/8 p=0.29 |" in table
    assert "win MQ vs embedded-dpo-mq |" in table and "| embedded-dpo-mq | the committed checkpoint" in table
    assert "| dpo-low-beta | 50 |" in table and "2.0%" in table and "70.0%" in table and "| 123 |" in table
