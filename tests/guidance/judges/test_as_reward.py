"""``guidance.judges.as_reward``: a judge of the decoded clean estimate ranks search candidates, and
guides by its gradient through the decoder and the denoiser on its differentiable objectives."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from guidance.batch_state import BatchState
from guidance.families.base import VideoShape
from guidance.judges.as_reward import PROBE_PIXEL_FRAMES, JudgeReward, probe_shape
from guidance.judges.classic import ClassicJudge
from guidance.memory import ESTIMATE_FACTOR, SavedTensorBytes
from guidance.nrg import GuidanceSpec
from guidance.rewards import reward_and_gradients
from guidance.sample_types import SampleSpec
from guidance.sampler import sample

SHAPE = VideoShape(height=32, width=32, frames=5)


class _Brightness:
    objectives = ("bright",)
    differentiable = frozenset({"bright"})

    def __init__(self) -> None:
        self.prompts: list[list[str]] = []

    def score(self, frames, prompts, fps=16.0):
        self.prompts.append(list(prompts))
        return frames.mean((1, 2, 3, 4))[:, None]


def _rows(family, prompts=("a red ball",)):
    batch = BatchState(family, SHAPE)
    batch.add([SampleSpec(p, seed=i + 1) for i, p in enumerate(prompts)], 3, list(range(len(prompts))))
    return batch.rows


def test_scores_are_the_judges_of_the_decoded_clean_estimate(tiny_family):
    family = tiny_family("wan")
    judge = _Brightness()
    reward = JudgeReward(family, judge)
    rows = _rows(family, ("a red ball", "a blue cube"))
    t = torch.tensor([0.7, 0.0])
    scores = reward(rows.latents, t, rows.cond, SHAPE)
    x0 = family.clean_estimate(rows.latents, t, rows.cond, SHAPE)
    assert torch.equal(x0[1], rows.latents[1].float())  # t = 0: the latents are their own estimate
    frames = family.decode(x0, SHAPE, [torch.Generator().manual_seed(0)] * 2)
    assert torch.allclose(scores[:, 0], frames.mean((1, 2, 3, 4)), atol=1e-6)
    assert judge.prompts[0] == ["a red ball", "a blue cube"]  # the words, carried by the conditioning


def test_best_of_n_ranked_by_a_judge_runs_without_a_reward_model(tiny_family):
    family = tiny_family("wan")
    judge = _Brightness()
    spec = GuidanceSpec({"bright": 1.0}, 1.0, (0.2, 0.8), "best_of_n", 3)
    result = sample(family, [SampleSpec("a red ball", seed=4, guidance=spec), SampleSpec("a cat", seed=4)], SHAPE,
                    4, JudgeReward(family, judge))
    assert result.objectives == ("bright",) and result.rewards.shape == (2, 1)
    assert result.denoiser_passes[0] > result.denoiser_passes[1] == 4  # the particles cost passes
    # Three particles ranked once; the final scores are of the videos returned, decoded once for both.
    assert result.guidance_decodes == [3, 0]
    assert torch.allclose(result.rewards[:, 0], result.frames.mean((1, 2, 3, 4)), atol=1e-5)


def test_ranking_builds_no_graph_and_gradients_decode_one_row_at_a_time(tiny_family, monkeypatch):
    family = tiny_family("wan")
    calls: list[int] = []
    decode_with_grad = family.decode_with_grad

    def spy(latents, shape, generators):
        calls.append(latents.shape[0])
        return decode_with_grad(latents, shape, generators)

    monkeypatch.setattr(family, "decode_with_grad", spy)
    reward = JudgeReward(family, _Brightness())
    rows = _rows(family, ("a red ball", "a blue cube"))
    t = torch.tensor([0.6, 0.6])
    with torch.enable_grad():  # latents that need no gradient: ranking, whatever the grad mode
        assert not reward(rows.latents, t, rows.cond, SHAPE).requires_grad
    assert calls == []
    requires = [p.requires_grad for p in family.pipe.vae.parameters()]
    scores, grads = reward_and_gradients(reward, rows.latents, t, rows.cond, SHAPE, torch.ones(2, 1), "sum",
                                         chunk_rows=2)
    assert calls == [1, 1] and grads.shape == (2, 1, *rows.latents.shape[1:])
    assert [p.requires_grad for p in family.pipe.vae.parameters()] == requires  # weights given back as they were


def test_the_gradient_is_that_of_the_judges_score_of_the_decoded_clean_estimate(tiny_family):
    """Central differences of the judge's score along each objective's own gradient and along a fixed
    random direction (float32: steps of 1e-2 in latent units stay clear of rounding and curvature)."""
    family = tiny_family("wan")
    judge = ClassicJudge(("sharpness", "exposure", "colourfulness"))
    reward = JudgeReward(family, judge)
    rows = _rows(family)
    x, t = rows.latents.float(), torch.tensor([0.6])
    _, grads = reward_and_gradients(reward, x, t, rows.cond, SHAPE, torch.ones(1, 3), "unit", weighted=[[0, 1, 2]])

    def score(latents: torch.Tensor, k: int) -> float:
        with torch.no_grad():
            return float(reward(latents, t, rows.cond, SHAPE)[0, k])

    eps = 1e-2
    random = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    for k, u in ((0, grads[0, 0]), (1, grads[0, 1]), (2, grads[0, 2]), (0, random)):
        u = u / u.norm()
        analytic = float((grads[0, k] * u).sum())
        numeric = (score(x + eps * u, k) - score(x - eps * u, k)) / (2 * eps)
        assert numeric == pytest.approx(analytic, rel=0.05), judge.objectives[k]
    # Mode sum's single backward of the weighted sum is the weighted sum of the per-objective gradients.
    weights = torch.tensor([[1.0, -0.5, 2.0]])
    _, summed = reward_and_gradients(reward, x, t, rows.cond, SHAPE, weights, "sum")
    torch.testing.assert_close(summed[0, 0], (weights[0].view(3, *[1] * x[0].ndim) * grads[0]).sum(0),
                               atol=1e-6, rtol=1e-4)


def test_guiding_by_the_judges_sharpness_raises_it_and_its_negative_lowers_it(tiny_family):
    family = tiny_family("wan")
    judge = ClassicJudge(("sharpness", "exposure"))

    def guided(weight: float) -> SampleSpec:
        return SampleSpec("a red ball", seed=2, guidance=GuidanceSpec({"sharpness": weight}, 3.0, (0.0, 1.0),
                                                                       "relative"))

    out = sample(family, [SampleSpec("a red ball", seed=2), guided(1.0), guided(-1.0)], SHAPE, 4,
                 JudgeReward(family, judge))
    unguided, up, down = judge.score(out.frames, ["a red ball"] * 3)[:, 0].tolist()
    assert up > unguided + 1e-3 and down < unguided - 1e-3
    assert out.guided_steps == [0, 3, 3]  # every step but the first (t = 1)
    assert out.guidance_decodes == [0, 3, 3]  # a decode per guided step; the final score is the video's


def test_gradient_modes_take_differentiable_objectives_only_and_flow_models_only(tiny_family):
    family = tiny_family("wan")
    reward = JudgeReward(family, ClassicJudge(("exposure", "motion_smoothness")))
    assert reward.differentiable == {"exposure"}
    batch = BatchState(family, SHAPE, reward)
    relative = GuidanceSpec({"exposure": 1.0, "motion_smoothness": 0.5}, 1.0, (0.2, 0.8), "relative")
    with pytest.raises(ValueError, match=r"sample 0: weights: motion_smoothness has no gradient, so mode relative "
                                         r"cannot push along it; weight only differentiable objectives \(exposure\)"):
        batch.add([SampleSpec("a", guidance=relative)], 3, [0])
    ranked = GuidanceSpec({"exposure": 1.0, "motion_smoothness": 0.5}, 1.0, (0.2, 0.8), "best_of_n", 2)
    batch.add([SampleSpec("a", guidance=GuidanceSpec({"exposure": 1.0, "motion_smoothness": 0.0}, 1.0,
                                                        (0.2, 0.8), "sum")),
               SampleSpec("b", guidance=ranked)], 3, [1, 2])
    with pytest.raises(ValueError, match="flow-matching models"):
        JudgeReward(tiny_family("cogvideox"), _Brightness())


def test_a_lora_rows_clean_estimate_is_its_adapted_models(tiny_dir, tmp_path):
    """A judge ranking or guiding a LoRA row scores that row's model: the batch's conditioning carries the
    rows' adapters into the clean estimate, whatever subset of rows it is computed for."""
    from guidance.checkpoints import CheckpointRegistry
    from guidance.families import load_pipeline
    from tests.guidance.random_lora import save_random_lora

    family = load_pipeline(tiny_dir("wan"))  # its own copy: the registry loads the adapter into it
    adapted = save_random_lora(family.transformer, tmp_path / "lora")
    registry = CheckpointRegistry(family, {"lora": tmp_path / "lora"})
    batch = BatchState(family, SHAPE, loras=registry.multi_lora)
    specs = [SampleSpec("a red ball", seed=1, lora="lora"), SampleSpec("a red ball", seed=1)]
    batch.add(specs, 3, [0, 1])
    rows = batch.rows
    assert rows.cond.adapters.index == (0, -1)
    t = torch.tensor([0.6, 0.6])
    estimate = family.clean_estimate(rows.latents, t, rows.cond, SHAPE)
    timestep = t * family.pipe.scheduler.config.num_train_timesteps
    with torch.no_grad():
        velocity = family.predict(adapted, rows.latents[:1], timestep[:1], rows.cond.select([0]), SHAPE).float()
    torch.testing.assert_close(estimate[0], rows.latents[0].float() - 0.6 * velocity[0], atol=1e-5, rtol=1e-5)
    base = family.clean_estimate(rows.latents, t, replace(rows.cond, adapters=None), SHAPE)
    assert torch.equal(estimate[1], base[1]) and not torch.allclose(estimate[0], base[0], atol=1e-3)
    # One row at a time (a reward chunk, batch-invariant scoring): the same row keeps its adapter.
    alone = family.clean_estimate(rows.latents[:1], t[:1], rows.cond.select([0]), SHAPE)
    torch.testing.assert_close(alone[0], estimate[0], atol=1e-5, rtol=1e-5)


def test_a_judges_final_score_shares_the_returned_videos_decode(tiny_family, monkeypatch):
    family = tiny_family("wan")
    calls = []
    decode = family.decode
    monkeypatch.setattr(family, "decode", lambda latents, *args: calls.append(len(latents)) or decode(latents, *args))
    judge = _Brightness()
    result = sample(family, [SampleSpec("a red ball", seed=4), SampleSpec("a cat", seed=5)], SHAPE, 3,
                    JudgeReward(family, judge))
    assert sum(calls) == 2 and result.guidance_decodes == [0, 0]  # one decode per sample, no more
    assert torch.allclose(result.rewards[:, 0], result.frames.mean((1, 2, 3, 4)), atol=1e-6)


@pytest.mark.parametrize("family_name", ["wan", "ltx"])
def test_a_judge_gradients_memory_is_measured_small_and_scales_to_the_video(tiny_family, family_name):
    """The probe is a shape the model takes, no larger than asked; its figure scaled to a 4x larger video is
    within the estimate's factor of the bytes that video's gradient graph really saves."""
    family = tiny_family(family_name)
    reward = JudgeReward(family, ClassicJudge(("sharpness", "exposure")))
    frames = 17 if family_name == "wan" else 25
    shape = VideoShape(height=64, width=64, frames=frames)
    probe = probe_shape(family, shape)
    family.check_shape(probe)
    assert probe.frames < shape.frames and probe.height * probe.width * probe.frames <= PROBE_PIXEL_FRAMES
    estimate = reward.gradient_graph_bytes(shape)
    cond = family.stand_in_conditionings(shape, 1)[-1]
    latents = family.prepare_latents(shape, [torch.Generator("cpu").manual_seed(1)]).float().requires_grad_()
    weights = [p for m in (*family.denoisers, family.pipe.vae) for p in m.parameters()]
    with torch.enable_grad(), SavedTensorBytes(exclude=weights) as saved:
        reward(latents, torch.full((1,), 0.5), cond, shape)
    assert saved.peak / ESTIMATE_FACTOR <= estimate <= saved.peak * ESTIMATE_FACTOR
