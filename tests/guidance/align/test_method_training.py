"""The methods beyond Flow-DPO and Flow-RWR, trained for a few steps on the tiny Wan pipeline: each
loss falls (or the property that stands in for it holds), the composable options reduce to Flow-DPO
where the math says so, and combinations the math does not allow are refused naming the flags."""

import json
import math

import pytest
import torch

from guidance.align import trainer
from guidance.align.config import AlignConfig
from guidance.align.methods.frame_judge import FrameJudge
from guidance.families import load_pipeline
from guidance.reward_model import init_reward_model
from guidance.train.preference_data import write_pairs
from tests.guidance.align.test_trainer import FAST, PROMPT, SHAPE, _latent_shape, _pairs

ONLINE = dict(online_steps=2, eval_every=1000)


@pytest.fixture
def fresh(tiny_dir):
    return lambda: load_pipeline(tiny_dir("wan"))


@pytest.fixture(scope="module")
def reward_dir(tiny_dir, tmp_path_factory):
    family = load_pipeline(tiny_dir("wan"))
    return str(init_reward_model(family, ["x"], num_blocks=1, seed=0).save(tmp_path_factory.mktemp("reward")))


def _run(family, data, out, **settings):
    return trainer.align(family, data, AlignConfig(**{**FAST, **settings}), out, progress=False, log=None)


def _refit(family, data, result, **settings):
    """Step 0's minibatch loss (the same t, noise and draws) with the trained adapter; the run's
    first loss was this with the initial one. Deterministic, unlike consecutive steps' losses."""
    from guidance.align.data import parse_objective_weights
    from guidance.train.reward import PromptCache

    config = AlignConfig(**{**FAST, **settings})
    task, _, _ = trainer.make_task(family, data, config, parse_objective_weights(None, data.objectives),
                                   PromptCache(family))
    task.total = config.steps
    rows = trainer.epoch_batches(task.keys, config.batch, config.seed, 0)[0]
    after = float(task.loss(0, rows)[0].detach())
    assert after < result.step_losses[0], (result.step_losses[0], after)
    return after


def _falls(losses, k=3, factor=1.0):
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert last < factor * first, (first, last, losses)


def test_tvkd_alpha0_is_flow_dpo_bit_for_bit_and_alpha_changes_it(fresh, tmp_path, reward_dir):
    data = _pairs(tmp_path / "d", fresh())
    plain = _run(fresh(), data, tmp_path / "a", steps=4)
    zero = _run(fresh(), data, tmp_path / "b", steps=4, teacher=reward_dir, tvkd_alpha=0.0)
    assert zero.step_losses == plain.step_losses
    shaped = _run(fresh(), data, tmp_path / "c", steps=12, teacher=reward_dir, tvkd_alpha=50.0, tvkd_gamma=0.5)
    assert shaped.step_losses[0] != plain.step_losses[0]  # the teacher's potential shifts the margin at step 0
    _falls(shaped.step_losses)


def test_is_daa_weighted_dpo_loss_falls_and_starts_at_log2(fresh, tmp_path):
    data = _pairs(tmp_path / "d", fresh())
    result = _run(fresh(), data, tmp_path / "o", steps=16, is_clip=0.25)
    assert result.step_losses[0] == pytest.approx(math.log(2), abs=1e-6)  # w = 1 at theta = ref
    _falls(result.step_losses, factor=0.8)
    assert result.report["args"]["is_clip"] == 0.25


def test_uapa_votes_of_groups_and_loss_falls(fresh, tmp_path):
    family = fresh()
    generator = torch.Generator().manual_seed(5)
    shape = _latent_shape(family)
    records = []
    for i in range(8):
        a = torch.randn(shape, generator=generator) * 0.3 + 0.5
        b = torch.randn(shape, generator=generator) * 0.3 - 0.5
        records.append({"prompt": "a red circle moving left", "a": a, "b": b, "labels": {"x": "A"},
                        "split": "train", "shape": SHAPE})
    root = tmp_path / "votes"
    write_pairs(root, ["x"], records)
    lines = (root / "pairs.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    # Group g2 disagrees on the first pair (same clips, B wins); per-label groups on the others.
    extra = dict(rows[0], labels={"x": "B"}, group="g2")
    rows[0]["group"] = "g1"
    for row in rows[1:]:
        row["groups"] = {"x": "g1"}
    rows.append(extra)
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from guidance.train.preference_data import load_preference_data

    data = load_preference_data(root, family)
    result = _run(family, data, tmp_path / "o", steps=16, uapa_map_ratio=0.25)
    uapa = result.report["data"]["uapa"]
    assert uapa["groups"] == ["g1", "g2"] and uapa["votes_per_group"] == {"g1": 8.0, "g2": 1.0}
    _refit(family, data, result, steps=16, uapa_map_ratio=0.25)
    from guidance.align.data import clip_vote_counts, orient_pairs

    pairs = orient_pairs(data, {"x": 1.0}, data.indices("train"))
    counts = clip_vote_counts(root, data, pairs, {"x": 1.0})
    assert counts.per_row[0] == (2.0, 2.0, 2.0, 2.0)  # one win and one loss each: Beta(2, 2)
    assert counts.per_row[1] == (2.0, 1.0, 1.0, 2.0)


def test_abc_loss_falls_from_2log2(fresh, tmp_path):
    data = _pairs(tmp_path / "d", fresh())
    result = _run(fresh(), data, tmp_path / "o", method="abc", steps=16)
    assert result.step_losses[0] == pytest.approx(2 * math.log(2), abs=1e-6)
    _falls(result.step_losses, factor=0.8)


def test_sudo_loss_falls_with_each_transformation(fresh, tmp_path):
    data = _pairs(tmp_path / "d", fresh())
    family = fresh()
    settings = dict(method="sudo", steps=12, sudo_transforms="permute,reverse,shuffle,blur,noise")
    result = _run(family, data, tmp_path / "o", **settings)
    _refit(family, data, result, **settings)


def test_dro_hinge_loss_falls(fresh, tmp_path):
    data = _pairs(tmp_path / "d", fresh())
    result = _run(fresh(), data, tmp_path / "o", method="diffusion-dro", steps=10, dro_lag=5, dro_margin=0.01, **ONLINE)
    assert result.step_losses[0] == pytest.approx(0.01, abs=1e-6)  # theta = ref: D = 0 for both, loss = m
    _falls(result.step_losses)


@pytest.mark.parametrize("method", ["spo", "gradspo"])
def test_step_wise_losses_fall(fresh, tmp_path, reward_dir, method):
    data = _pairs(tmp_path / "d", fresh())
    settings = dict(method=method, steps=10, reward_model=reward_dir, spo_children=3, **ONLINE)
    if method == "spo":
        settings.update(spo_beta=2000.0, spo_clip=0.5, lr=1e-2)
    else:
        settings.update(gradspo_g=2.0, lr=3e-3)
    family = fresh()
    result = _run(family, data, tmp_path / "o", **settings)
    assert result.step_losses[0] == pytest.approx(math.log(2), abs=1e-6)
    if method == "spo":
        _falls(result.step_losses)
    else:
        _refit(family, data, result, **settings)


def test_spro_rounds_and_loss_falls(fresh, tmp_path, reward_dir):
    data = _pairs(tmp_path / "d", fresh())
    result = _run(fresh(), data, tmp_path / "o", method="spro", steps=8, rounds=2, spro_samples=3,
                  reward_model=reward_dir, **ONLINE)
    rounds = result.report["data"]["round_log"]
    assert [r["round"] for r in rounds] == [0, 1] and all(r["pairs"] == 1 for r in rounds)
    assert result.step_losses[0] == pytest.approx(math.log(2), abs=1e-6)
    _falls(result.step_losses[:4], k=2)


def test_spro_judge_demo_ranks_decoded_frames_with_the_given_frame_judge(fresh, tmp_path):
    data = _pairs(tmp_path / "d", fresh())
    seen = []

    def brightness(frames, prompt):
        seen.append((frames.shape, prompt))
        return {"x": float(frames.mean())}

    config = AlignConfig(**{**FAST, **ONLINE}, method="spro", judge="demo", steps=2, rounds=1, spro_samples=2)
    result = trainer.align(fresh(), data, config, tmp_path / "o", progress=False, log=None,
                           frame_judge=FrameJudge(("x",), brightness))
    assert [prompt for _, prompt in seen] == [PROMPT, PROMPT]  # one training prompt, two samples, one round
    assert all(len(shape) == 4 and shape[-1] == 3 for shape, _ in seen)  # one clip's frames [F, H, W, 3]
    assert result.report["data"]["judge"] == "demo" and result.report["data"]["round_log"][0]["round"] == 0


def test_spro_judge_demo_needs_a_frame_judge_of_the_run_objectives(fresh, tmp_path):
    data = _pairs(tmp_path / "d", fresh())
    with pytest.raises(ValueError, match="--judge demo scores decoded frames with a frame judge, and none was given"):
        _run(fresh(), data, tmp_path / "a", method="spro", judge="demo", steps=1, **ONLINE)
    truth = FrameJudge(("vq", "mq", "ta"), lambda frames, prompt: {})
    with pytest.raises(ValueError, match="--judge demo scores vq, mq, ta; --objectives has x"):
        trainer.align(fresh(), data, AlignConfig(**{**FAST, **ONLINE}, method="spro", judge="demo", steps=1),
                      tmp_path / "b", progress=False, log=None, frame_judge=truth)


def test_hybrid_m0_is_flow_dpo_and_online_steps_run(fresh, tmp_path):
    data = _pairs(tmp_path / "d", fresh())
    plain = _run(fresh(), data, tmp_path / "a", steps=5)
    m0 = _run(fresh(), data, tmp_path / "b", method="hybrid", steps=5, hybrid_offline=2, hybrid_online=0, **ONLINE)
    assert m0.step_losses == plain.step_losses
    mixed = _run(fresh(), data, tmp_path / "c", method="hybrid", steps=12, hybrid_offline=3, hybrid_online=1, **ONLINE)
    offline = [x for s, x in enumerate(mixed.step_losses) if s % 4 < 3]
    assert offline[0] == pytest.approx(math.log(2), abs=1e-6)
    _falls(offline)


def test_refused_combinations_name_the_flags():
    with pytest.raises(ValueError, match="--is-clip composes with --method flow-dpo / spro / hybrid only"):
        AlignConfig(method="flow-rwr", is_clip=0.1).validate()
    with pytest.raises(ValueError, match="--teacher composes with"):
        AlignConfig(method="diffusion-dro", teacher="x").validate()
    with pytest.raises(ValueError, match="--uapa-map-ratio composes with --method flow-dpo / hybrid only"):
        AlignConfig(method="spro", uapa_map_ratio=0.25, reward_model="r").validate()
    with pytest.raises(ValueError, match="--tvkd-alpha / --tvkd-gamma need --teacher"):
        AlignConfig(tvkd_alpha=0.5).validate()
    with pytest.raises(ValueError, match="--method spo needs --reward-model"):
        AlignConfig(method="spo").validate()
    with pytest.raises(ValueError, match="--is-kappa needs --is-clip"):
        AlignConfig(is_kappa=3.0).validate()


def test_cli_runs_a_method_with_its_flags(tiny_dir, tmp_path):
    from server.cli import main

    family = load_pipeline(tiny_dir("wan"))
    _pairs(tmp_path / "d", family, count=8)
    out = tmp_path / "sudo"
    status = main(["align", "--method", "sudo", "--model", str(tiny_dir("wan")), "--data", str(tmp_path / "d"),
                   "--out", str(out), "--lora-rank", "4", "--lora-alpha", "8", "--steps", "2", "--batch", "2",
                   "--sudo-transforms", "reverse,blur", "--quiet"])
    assert status == 0
    report = json.loads((out / "align_report.json").read_text())
    assert report["method"] == "sudo" and report["args"]["sudo_transforms"] == "reverse,blur"
    with pytest.raises(SystemExit) as exit_info:
        main(["align", "--method", "flow-rwr", "--model", str(tiny_dir("wan")), "--data", str(tmp_path / "d"),
              "--out", str(tmp_path / "x"), "--is-clip", "0.2", "--quiet"])
    assert exit_info.value.code == 2
