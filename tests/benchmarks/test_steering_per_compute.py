"""``python -m benchmarks.steering_per_compute`` at a tiny size on the embedded demo model (1 prompt x 1 seed, a
few steps, 2 particles): the table's structure, statistics recomputed from the cached clips, resuming with more
rows, and the judge-gradient row (the classic judge's gradient through the decoder, run and tuned on tuning
seeds). No timing is asserted beyond being positive."""

from __future__ import annotations

import json

import pytest

from benchmarks import steering_per_compute as spc
from demo_world import world
from demo_world.evaluate import TUNE_SEED_BASE

TINY = ["--prompts", "1", "--seeds", "1", "--particles", "2", "--no-progress"]


def _clip(prompt, seed, vq, mq, ta, sharp, passes=20):
    return {"prompt": prompt, "seed": seed, "truth": {"vq": vq, "mq": mq, "ta": ta, "sum": vq + mq + ta},
            "classic": {"sharpness": sharp}, "passes": passes}


def test_statistics_come_from_the_clips():
    """Pairs by (prompt, seed) across batches, the ground truth's margins, the classic spread margin, the median
    of per-batch time ratios, and a row against itself with no decisive pair."""
    report = {
        "config": {"classic_objectives": ["sharpness"]},
        "methods": {"unguided": {"setting": {}, "reason": None}, "fk": {"setting": {}, "reason": None},
                    "judge-gradient": {"setting": None, "reason": "no gradient"}},
        "batches": {
            "0": {"unguided": {"seconds": 2.0, "unguided_seconds": 2.0,
                               "clips": [_clip("a", 0, 0.5, 0.2, 1.0, 1.0), _clip("b", 0, 0.5, 0.2, 1.0, 3.0)]},
                  "fk": {"seconds": 8.0, "unguided_seconds": 2.0,
                         "clips": [_clip("b", 0, 0.5, 0.3, 1.0, 3.0, 80), _clip("a", 0, 0.6, 0.2, 2 / 3, 1.0, 80)]}},
            "1": {"unguided": {"seconds": 3.0, "unguided_seconds": 3.0, "clips": [_clip("a", 1, 0.5, 0.2, 1.0, 5.0)]},
                  "fk": {"seconds": 9.0, "unguided_seconds": 1.5, "clips": [_clip("a", 1, 0.52, 0.2, 1.0, 6.0, 80)]}},
        },
    }
    rows = {r["method"]: r for r in spc.summarise(report)}
    fk, base = rows["fk"], rows["unguided"]
    assert fk["clips"] == 3 and fk["passes_per_clip"] == 80
    assert fk["time_vs_unguided"] == {"median": 5.0, "min": 4.0, "max": 6.0, "batches": 2}
    assert base["time_vs_unguided"]["median"] == 1.0
    # ("b", 0): MQ +0.1; ("a", 0): VQ +0.1, TA -1/3, sum -0.233; ("a", 1): VQ +0.02 < 0.05, a tie.
    assert (fk["truth"]["vq"]["wins"], fk["truth"]["vq"]["losses"], fk["truth"]["vq"]["ties"]) == (1, 0, 2)
    assert (fk["truth"]["mq"]["wins"], fk["truth"]["mq"]["decisive"]) == (1, 1)
    assert (fk["truth"]["ta"]["losses"], fk["truth"]["ta"]["decisive"]) == (1, 1)
    assert (fk["truth"]["sum"]["wins"], fk["truth"]["sum"]["losses"], fk["truth"]["sum"]["ties"]) == (1, 1, 1)
    assert fk["truth"]["vq"]["ci95"] is not None and fk["truth_means"]["vq"] == pytest.approx((0.5 + 0.6 + 0.52) / 3)
    # classic margin: 0.1 x the stdev of the unguided sharpness (1, 3, 5) = 0.2; changes 0, 0, +1.
    assert report["classic_margins"]["sharpness"] == pytest.approx(0.2)
    assert (fk["classic"]["sharpness"]["wins"], fk["classic"]["sharpness"]["ties"]) == (1, 2)
    assert all(base["truth"][o]["decisive"] == 0 for o in spc.TRUTH_MARGINS)
    assert base["classic"]["sharpness"]["decisive"] == 0
    assert rows["judge-gradient"]["clips"] == 0 and rows["judge-gradient"]["reason"] == "no gradient"
    report["rows"], report["metrics_version"] = list(rows.values()), 2
    table = spc.format_table(report)
    assert "| judge-gradient | unavailable: no gradient |" in table
    assert "**5.00x** [4.00-6.00]" in table and "| unguided | - | 3 | 1.00x |" in table


def test_tiny_run_resumes_with_more_rows(tmp_path, capsys):
    out, md = tmp_path / "spc.json", tmp_path / "benchmarks.md"
    common = [*TINY, "--steps", "2", "--output-file", str(out)]
    assert spc.main([*common, "--methods", "nrg-embedded,judge-gradient,nrg-distilled"]) == 0
    first = json.loads(out.read_text())
    assert first["config"]["prompts"] == [world.eval_prompts()[0].text]
    assert first["methods"]["nrg-distilled"]["reason"] == "no --distilled DIR given"
    gradient = first["methods"]["judge-gradient"]
    if gradient["reason"] is not None:  # until JudgeReward accepts gradient modes (check_specs refuses them)
        assert "needs a gradient" in gradient["reason"]
    assert gradient["setting"]["weights"] == {"sharpness": 1.0, "low_noise": 1.0}
    assert gradient["setting"]["not_differentiable"] == ["motion_smoothness"]
    assert set(first["batches"]["0"]) >= {"unguided", "nrg-embedded"}

    # A second run over the same cache adds rows; the cached clips are kept, not sampled again.
    with pytest.raises(SystemExit):
        spc.main([*common, "--methods", "best-of-n"])  # the file exists: --resume or another file
    assert spc.main([*common, "--resume", "--methods", "best-of-n", "--benchmarks", str(md)]) == 0
    second = json.loads(out.read_text())
    batch = second["batches"]["0"]
    for name in ("unguided", "nrg-embedded"):
        assert batch[name] == first["batches"]["0"][name]
    assert len(second["runs"]) == 2 and second["runs"][0]["command"] == first["command"]
    rows = {r["method"]: r for r in second["rows"]}
    # the cached rows of the first run too, in the table's order
    assert list(rows) == ["unguided", "nrg-embedded", "nrg-distilled", "best-of-n", "judge-gradient"]
    base = batch["unguided"]["clips"][0]
    for name in ("nrg-embedded", "best-of-n"):
        row, clip = rows[name], batch[name]["clips"][0]
        assert row["clips"] == 1 and (clip["prompt"], clip["seed"]) == (base["prompt"], world.EVAL_SEED_BASE)
        assert row["time_vs_unguided"]["batches"] == 1 and row["time_vs_unguided"]["median"] > 0
        assert row["cpu_time_vs_unguided"]["batches"] == 1 and row["cpu_time_vs_unguided"]["median"] > 0
        assert clip["truth"]["sum"] == pytest.approx(sum(clip["truth"][o] for o in ("vq", "mq", "ta")))
        for o, margin in spc.TRUTH_MARGINS.items():
            d = clip["truth"][o] - base["truth"][o]
            assert (row["truth"][o]["wins"], row["truth"][o]["losses"]) == (int(d >= margin), int(d <= -margin))
        assert set(row["classic"]) == set(spc.DEFAULT_JUDGE_OBJECTIVES)
    assert batch["best-of-n"]["clips"][0]["passes"] > batch["unguided"]["clips"][0]["passes"]
    assert all(rows["unguided"]["truth"][o]["decisive"] == 0 for o in spc.TRUTH_MARGINS)
    printed = capsys.readouterr().out
    text = md.read_text()
    assert text.startswith("# Benchmarks") and "## Steering per compute on the demo world" in text
    assert second["command"] in text and "torch " in text and "| best-of-n |" in text and "| best-of-n |" in printed
    assert "unavailable: no --distilled DIR given" in text


def test_judge_gradient_row_runs_and_tunes_on_tuning_seeds(tmp_path):
    """The classic judge's gradient through the demo decoder: its differentiable objectives weighted, the
    others (motion_smoothness) listed as dropped, the strength tuned on tuning seeds."""
    out = tmp_path / "spc.json"
    assert spc.main([*TINY, "--steps", "3", "--methods", "judge-gradient", "--tune", "--tune-strengths", "1,4",
                     "--output-file", str(out)]) == 0
    report = json.loads(out.read_text())
    tune = report["tune"]
    assert tune["seeds"] == [TUNE_SEED_BASE] and [r["strength"] for r in tune["rows"]] == [1.0, 4.0]
    row = {r["method"]: r for r in report["rows"]}["judge-gradient"]
    assert row["reason"] is None and row["clips"] == 1
    expected = tune["strength"] if tune["strength"] is not None else spc.DEFAULT_JUDGE_STRENGTH
    assert row["setting"]["strength"] == expected and row["setting"]["mode"] == "relative"
    assert set(row["setting"]["weights"]) == {"sharpness", "low_noise"}
    assert row["setting"]["not_differentiable"] == ["motion_smoothness"]
    assert report["seeds"] == [world.EVAL_SEED_BASE]


@pytest.mark.parametrize(("argv", "message"), [
    (["--methods", "best-of-4"], "--methods: unknown ['best-of-4']"),
    (["--resume"], "--resume needs --output-file"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--tune-strengths", "0,3"], "--tune-strengths: positive numbers"),
])
def test_bad_arguments_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        spc.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
