"""Flow-NRG behaviour of the shared sampler, on the tiny Wan pipeline with analytic rewards."""

import math

import pytest
import torch

from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.rewards import CallableReward
from guidance.sampler import SampleSpec, sample

SHAPE = VideoShape(height=32, width=32, frames=9)
STEPS = 6
PROMPT = "a green square moving right"


def _halves(latents, t, prompt_embeds):
    """Two known heads: the mean of the first and of the last 8 latent channels."""
    flat = latents.float()
    return torch.stack([flat[:, :8].mean(dim=(1, 2, 3, 4)), flat[:, 8:].mean(dim=(1, 2, 3, 4))], dim=1)


REWARD = CallableReward(_halves, ["a", "b"])
#: The paper's rule on every step: what the tests of the t / (1 - t) schedule and of mode sum use.
PAPER = dict(window=(0.0, 1.0), mode="sum")


def _run(family, guidance=None, reward=REWARD, seed=3, **kwargs):
    return sample(family, [SampleSpec(PROMPT, seed=seed, cfg_scale=3.0, guidance=guidance)], SHAPE, STEPS, reward,
                  **kwargs)


@pytest.fixture(scope="module")
def wan(tiny_family):
    return tiny_family("wan")


def test_guidance_raises_reward_monotonically_with_strength(wan):
    finals = [
        _run(wan, GuidanceSpec({"a": 1.0}, strength=s, **PAPER)).rewards[0, 0].item() for s in (0.0, 20.0, 60.0, 150.0)
    ]
    assert all(lo < hi for lo, hi in zip(finals, finals[1:])), finals


def test_raising_one_weight_raises_that_objective_more(wan):
    base = _run(wan).rewards[0]
    more_a = _run(wan, GuidanceSpec({"a": 1.0, "b": 0.2}, strength=80.0, **PAPER)).rewards[0] - base
    more_b = _run(wan, GuidanceSpec({"a": 0.2, "b": 1.0}, strength=80.0, **PAPER)).rewards[0] - base
    assert more_a[0] > more_a[1] > 0
    assert more_b[1] > more_b[0] > 0


@pytest.mark.parametrize(
    "guidance", [GuidanceSpec({"a": 0.0, "b": 0.0}, strength=100.0), GuidanceSpec({"a": 1.0}, strength=0.0), None]
)
def test_inactive_guidance_is_unguided_bit_for_bit(wan, guidance):
    unguided = _run(wan, reward=None).frames
    assert torch.equal(_run(wan, guidance).frames, unguided)


def test_guidance_changes_the_output(wan):
    # The bit-for-bit check above must be able to fail: real guidance moves the frames.
    unguided = _run(wan, reward=None).frames
    assert not torch.equal(_run(wan, GuidanceSpec({"a": 1.0}, strength=50.0)).frames, unguided)


def test_window_limits_the_guided_steps(wan):
    full = _run(wan, GuidanceSpec({"a": 1.0}, strength=10.0, **PAPER))
    late = _run(wan, GuidanceSpec({"a": 1.0}, strength=10.0, window=(0.0, 0.5), mode="sum"))
    # Step 0 is at t = 1, where the paper skips guidance.
    assert full.guided_steps == [STEPS - 1]
    assert 0 < late.guided_steps[0] < STEPS - 1


def test_non_finite_gradient_skips_only_that_sample(wan):
    poison_prompt = "a red circle moving left"
    poison = wan.encode_prompts([poison_prompt], None)[0].embeds[0]

    def poisoned(latents, t, prompt_embeds):
        """NaN for the sample of ``poison_prompt``, wherever its row lands in a batch or chunk."""
        hit = (prompt_embeds - poison).abs().flatten(1).amax(1) < 1e-4
        scale = torch.where(hit, float("nan"), 1.0)
        return (latents.float().mean(dim=(1, 2, 3, 4)) * scale)[:, None]

    reward = CallableReward(poisoned, ["a"])
    spec = GuidanceSpec({"a": 1.0}, strength=50.0, **PAPER)
    specs = [SampleSpec(poison_prompt, seed=1, cfg_scale=3.0, guidance=spec),
             SampleSpec(PROMPT, seed=2, guidance=spec)]
    result = sample(wan, specs, SHAPE, STEPS, reward)
    assert result.skipped_steps == [STEPS - 1, 0]
    assert result.guided_steps == [0, STEPS - 1]
    assert torch.isfinite(result.latents).all()
    unguided = sample(wan, [SampleSpec(s.prompt, seed=s.seed, cfg_scale=s.cfg_scale) for s in specs], SHAPE, STEPS)
    assert torch.equal(result.frames[0], unguided.frames[0])
    assert not torch.equal(result.frames[1], unguided.frames[1])


def test_guided_sample_is_batch_invariant(wan):
    specs = [
        SampleSpec(PROMPT, seed=5, cfg_scale=4.0, guidance=GuidanceSpec({"a": 1.0}, strength=40.0)),
        SampleSpec("a red circle moving up", seed=6, cfg_scale=1.0, guidance=GuidanceSpec({"b": 2.0}, strength=5.0)),
        SampleSpec("a blue triangle", seed=7, cfg_scale=2.0),
    ]
    together = sample(wan, specs, SHAPE, STEPS, REWARD).frames
    for i, spec in enumerate(specs):
        alone = sample(wan, [spec], SHAPE, STEPS, REWARD).frames[0]
        assert (together[i] - alone).abs().max().item() <= 1e-4


def test_every_mode_shares_one_batch_and_matches_each_sample_alone(wan):
    """Modes are per sample, not part of the batch: gradient modes, search modes and unguided mix."""
    specs = [
        SampleSpec(PROMPT, seed=5, cfg_scale=4.0, guidance=GuidanceSpec({"a": 1.0}, strength=2.0)),
        SampleSpec(PROMPT, seed=6, cfg_scale=3.0, guidance=GuidanceSpec({"b": 1.0}, strength=20.0, **PAPER)),
        SampleSpec(PROMPT, seed=7, cfg_scale=3.0, guidance=GuidanceSpec({"a": 1.0, "b": 1.0}, 50.0, mode="unit")),
        SampleSpec(PROMPT, seed=8, cfg_scale=3.0, guidance=GuidanceSpec({"a": 1.0}, mode="best_of_n", particles=3)),
        SampleSpec(PROMPT, seed=9, cfg_scale=3.0, guidance=GuidanceSpec({"b": 1.0}, 10.0, mode="fk", particles=3)),
        SampleSpec("a blue triangle", seed=10, cfg_scale=2.0),
    ]
    together = sample(wan, specs, SHAPE, STEPS, REWARD)
    assert together.ids == list(range(len(specs)))
    for i, spec in enumerate(specs):
        alone = sample(wan, [spec], SHAPE, STEPS, REWARD)
        assert (together.frames[i] - alone.frames[0]).abs().max().item() <= 1e-4, spec.guidance
        assert together.denoiser_passes[i] == alone.denoiser_passes[0]


def _searched(wan, mode, particles, seed=3, **kwargs):
    spec = GuidanceSpec({"a": 1.0}, mode=mode, particles=particles, window=(0.0, 1.0), **kwargs)
    return _run(wan, spec, seed=seed)


def test_best_of_n_keeps_the_particle_the_reward_ranks_first(wan):
    """Particle 0 is the unguided sample of the same seed; the kept one scores at least as well."""
    unguided = _run(wan, seed=3)
    best = _searched(wan, "best_of_n", 4)
    assert best.rewards[0, 0] >= unguided.rewards[0, 0] - 1e-4
    assert best.guided_steps == [0] and best.frames.shape == unguided.frames.shape
    # Four particles up to the first step at or below t = 0.5 (the window's middle), one after.
    levels = [e.t for e in _events(wan, GuidanceSpec({"a": 1.0}, mode="best_of_n", window=(0.0, 1.0)))]
    before = next(i for i, t in enumerate(levels) if t <= 0.5)
    assert best.denoiser_passes == [4 * before + (STEPS - before)]
    # A reward that prefers the opposite picks another particle, from the same noise draws.
    worst = _run(wan, GuidanceSpec({"a": -1.0}, mode="best_of_n", particles=4, window=(0.0, 1.0)), seed=3)
    assert worst.rewards[0, 0] <= best.rewards[0, 0]
    assert (worst.latents - best.latents).abs().max() > 1e-3


def test_fk_particles_raise_the_reward_deterministically(wan):
    unguided = _run(wan, seed=3)
    first = _searched(wan, "fk", 4, strength=50.0)
    again = _searched(wan, "fk", 4, strength=50.0)
    assert torch.equal(first.latents, again.latents)  # resampling draws from the sample's own generator
    assert first.rewards[0, 0] >= unguided.rewards[0, 0] - 1e-4
    assert first.denoiser_passes == [4 * STEPS] and first.guided_steps == [0]


def test_search_modes_need_an_euler_scheduler(tiny_family):
    family = tiny_family("cogvideox")
    spec = SampleSpec(PROMPT, guidance=GuidanceSpec({"a": 1.0}, mode="fk"))
    with pytest.raises(ValueError, match="sample 0: mode fk needs a flow-matching family"):
        sample(family, [spec], VideoShape(height=16, width=16, frames=9), 2, REWARD)


def _events(wan, guidance):
    events = []
    _run(wan, guidance, on_step=events.append)
    assert all(len(e.ids) == 1 for e in events)  # particles are reported once per sample
    return events


def test_unit_mode_ignores_gradient_scale_but_sum_mode_does_not(wan):
    def scaled(factor):
        return CallableReward(lambda x, t, e: _halves(x, t, e) * torch.tensor([factor, 1.0]), ["a", "b"])

    spec_unit = GuidanceSpec({"a": 1.0, "b": 1.0}, strength=1.0, mode="unit")
    unit_small = _run(wan, spec_unit, reward=scaled(1.0)).latents
    unit_large = _run(wan, spec_unit, reward=scaled(1000.0)).latents
    assert (unit_small - unit_large).abs().max().item() < 1e-5
    spec_sum = GuidanceSpec({"a": 1.0, "b": 1.0}, strength=1.0, mode="sum")
    assert (_run(wan, spec_sum, reward=scaled(1.0)).latents - _run(wan, spec_sum, reward=scaled(1000.0)).latents
            ).abs().max().item() > 1e-2


def test_relative_mode_ignores_the_rewards_scale_and_guides_inside_its_window(wan):
    def scaled(factor):
        return CallableReward(lambda x, t, e: _halves(x, t, e) * torch.tensor([factor, 1.0]), ["a", "b"])

    spec = GuidanceSpec({"a": 1.0, "b": 1.0}, strength=10.0)
    events = []
    small = _run(wan, spec, reward=scaled(1.0), on_step=events.append)
    large = _run(wan, spec, reward=scaled(1000.0))
    assert (small.latents - large.latents).abs().max().item() < 1e-4
    assert (small.latents - _run(wan).latents).abs().max().item() > 1e-3
    # Exactly the steps whose noise level lies in the default window [0.2, 0.8].
    inside = [e.step for e in events if 0.2 <= e.t <= 0.8]
    assert 0 < len(inside) < STEPS - 1 and small.guided_steps == [len(inside)]
    assert [e.step for e in events if e.rewards is not None] == inside


def test_relative_mode_raises_only_the_weighted_objective(wan):
    base = _run(wan).rewards[0]
    more_a = _run(wan, GuidanceSpec({"a": 1.0}, strength=2.0)).rewards[0] - base
    more_b = _run(wan, GuidanceSpec({"b": 1.0}, strength=2.0)).rewards[0] - base
    assert more_a[0] > 0 and more_b[1] > 0
    assert more_a[0] > more_b[0] and more_b[1] > more_a[1]


def test_step_events_report_progress_and_rewards(wan):
    events = []
    _run(wan, GuidanceSpec({"a": 1.0}, strength=10.0, **PAPER), on_step=events.append)
    assert [e.step for e in events] == list(range(1, STEPS + 1))
    assert events[0].t == pytest.approx(1.0) and events[0].rewards is None
    assert all(e.rewards is not None and e.rewards.shape == (1, 2) for e in events[1:])
    assert all(a.t > b.t for a, b in zip(events, events[1:]))


@pytest.mark.parametrize(
    ("guidance", "message"),
    [
        (GuidanceSpec({"zz": 1.0}), "unknown objective 'zz'"),
        (GuidanceSpec({"a": math.nan}), "weights.a must be a finite number"),
        (GuidanceSpec({"a": math.inf}), "weights.a must be a finite number"),
        (GuidanceSpec({"a": 1.0}, strength=-1.0), "strength must be a finite number >= 0"),
        (GuidanceSpec({"a": 1.0}, strength=math.nan), "strength must be a finite number >= 0"),
        (GuidanceSpec({"a": 1.0}, window=(0.6, 0.2)), "window must satisfy"),
        (GuidanceSpec({"a": 1.0}, window=(0.0, 1.5)), "window must satisfy"),
        (GuidanceSpec({"a": 1.0}, mode="max"), "mode must be one of"),
    ],
)
def test_bad_guidance_is_a_clear_error(wan, guidance, message):
    with pytest.raises(ValueError, match=message):
        _run(wan, guidance)


def test_other_bad_inputs_are_clear_errors(wan):
    with pytest.raises(ValueError, match="no reward model"):
        _run(wan, GuidanceSpec({"a": 1.0}), reward=None)
    with pytest.raises(ValueError, match="cfg_scale"):
        sample(wan, [SampleSpec(PROMPT, cfg_scale=-1.0)], SHAPE, STEPS)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample(wan, [SampleSpec(PROMPT)], SHAPE, 0)
    with pytest.raises(ValueError, match="sample 1: particles must be an integer from 2 to 16"):
        sample(wan, [SampleSpec(PROMPT), SampleSpec(PROMPT, guidance=GuidanceSpec({"a": 1.0}, mode="fk", particles=1))],
               SHAPE, STEPS, REWARD)
    with pytest.raises(ValueError, match="returned shape"):
        _run(wan, GuidanceSpec({"a": 1.0}), reward=CallableReward(lambda x, t, e: x.mean()[None], ["a", "b"]))


def test_cancelled_sample_leaves_the_batch_without_disturbing_the_others(wan):
    specs = [SampleSpec(PROMPT, seed=s, cfg_scale=c) for s, c in ((11, 3.0), (12, 4.0), (13, 1.0))]
    seen = []

    def cancelled():
        seen.append(len(seen))
        return {1} if len(seen) >= 3 else set()

    events = []
    result = sample(wan, specs, SHAPE, STEPS, cancelled=cancelled, on_step=events.append)
    assert result.ids == [0, 2] and result.frames.shape[0] == 2
    assert events[1].ids == [0, 1, 2] and events[2].ids == [0, 2]
    for row, spec in zip(range(2), (specs[0], specs[2])):
        alone = sample(wan, [spec], SHAPE, STEPS).frames[0]
        assert (result.frames[row] - alone).abs().max().item() <= 1e-4


def test_cancelling_every_sample_stops_early(wan):
    events = []
    result = sample(wan, [SampleSpec(PROMPT)], SHAPE, STEPS, cancelled=lambda: {0}, on_step=events.append)
    assert result.ids == [] and result.frames is None and events == []
