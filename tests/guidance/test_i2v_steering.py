"""Steering image-to-video rows (tiny Wan 2.1 I2V; a judge's gradient also on Wan 2.2 and LTX): reward
gradients from a latent reward model whose trunk is the I2V transformer's, best-of-N particles, per-row
LoRA, and the clean estimate, each with the row's image conditioning."""


import pytest
import torch

from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.reward_model import load_reward_model
from guidance.sampler import SampleSpec, sample
from tests.guidance.families.equivalence import test_image
from tests.guidance.random_lora import save_random_lora
from tests.guidance.untrained import family_and_reward_fixtures

SHAPE = VideoShape(height=32, width=32, frames=9)
STEPS = 4
PROMPT = "a green square moving right"


i2v, reward = family_and_reward_fixtures("wan-i2v", "i2v")


def _spec(guidance=None, seed=3, image_seed=0, **kwargs):
    return SampleSpec(PROMPT, seed=seed, cfg_scale=3.0, guidance=guidance, image=test_image(image_seed, 32, 32),
                      **kwargs)


def test_the_reward_models_trunk_is_the_i2v_transformers_and_sees_the_image(i2v, reward, tmp_path):
    assert reward.trunk.config.in_channels == 36 and reward.trunk.config.image_dim is not None
    cond, _ = i2v.encode_prompts([PROMPT, PROMPT], None)
    image = {k: torch.cat([a, b]) for (k, a), b in zip(i2v.encode_images([test_image(0, 32, 32)], SHAPE).items(),
                                                      i2v.encode_images([test_image(1, 32, 32)], SHAPE).values())}
    cond = cond.with_image(image, (True, True))
    latents = i2v.prepare_latents(SHAPE, [torch.Generator().manual_seed(0)]).expand(2, -1, -1, -1, -1)
    scores = reward(latents, torch.tensor([0.5, 0.5]), cond, SHAPE)
    assert scores.shape == (2, 2) and (scores[0] - scores[1]).abs().max() > 0  # same latents, other image
    loaded = load_reward_model(reward.save(tmp_path / "r"), i2v)
    assert torch.equal(loaded(latents, torch.tensor([0.5, 0.5]), cond, SHAPE), scores)


def test_reward_gradient_guidance_raises_the_objective_of_an_i2v_row(i2v, reward):
    unguided = sample(i2v, [_spec()], SHAPE, STEPS, reward)
    finals = [sample(i2v, [_spec(GuidanceSpec({"a": 1.0}, strength=s, window=(0.0, 1.0), mode="sum"))], SHAPE,
                     STEPS, reward).rewards[0, 0].item() for s in (20.0, 80.0)]
    assert unguided.rewards[0, 0].item() < finals[0] < finals[1], (unguided.rewards[0, 0].item(), finals)
    # Guided beside an unguided image-to-video row of another image, each row is as alone.
    guided = _spec(GuidanceSpec({"a": 1.0}, strength=80.0, window=(0.0, 1.0), mode="sum"))
    other = _spec(seed=9, image_seed=1)
    together = sample(i2v, [other, guided], SHAPE, STEPS, reward)
    alone = sample(i2v, [guided], SHAPE, STEPS, reward)
    assert (together.frames[1] - alone.frames[0]).abs().max() <= 1e-4
    assert (together.frames[0] - sample(i2v, [other], SHAPE, STEPS, reward).frames[0]).abs().max() <= 1e-4


def test_best_of_n_on_an_i2v_row_keeps_the_particle_the_reward_ranks_first(i2v, reward):
    unguided = sample(i2v, [_spec()], SHAPE, STEPS, reward)
    search = GuidanceSpec({"a": 1.0}, mode="best_of_n", particles=4, window=(0.0, 1.0))
    best = sample(i2v, [_spec(search)], SHAPE, STEPS, reward)
    assert best.rewards[0, 0] >= unguided.rewards[0, 0] - 1e-4
    assert best.denoiser_passes[0] > STEPS and best.guided_steps == [0]
    worst = sample(i2v, [_spec(GuidanceSpec({"a": -1.0}, mode="best_of_n", particles=4, window=(0.0, 1.0)))],
                   SHAPE, STEPS, reward)
    assert worst.rewards[0, 0] <= best.rewards[0, 0] and (worst.latents - best.latents).abs().max() > 1e-3
    # The particles carry their sample's image: beside another image's sample, the result is as alone.
    together = sample(i2v, [_spec(seed=9, image_seed=1), _spec(search)], SHAPE, STEPS, reward)
    assert (together.frames[1] - best.frames[0]).abs().max() <= 1e-4


def test_the_clean_estimate_of_an_i2v_row_uses_its_image(i2v):
    cond, _ = i2v.encode_prompts([PROMPT], None)
    latents = i2v.prepare_latents(SHAPE, [torch.Generator().manual_seed(0)])
    t = torch.tensor([0.6])
    estimates = [i2v.clean_estimate(latents, t, cond.with_image(i2v.encode_images([test_image(s, 32, 32)], SHAPE),
                                                                (True,)), SHAPE) for s in (0, 1)]
    assert estimates[0].shape == latents.shape and (estimates[0] - estimates[1]).abs().max() > 1e-4


def test_per_row_lora_on_i2v_rows(tiny_dir, tmp_path):
    """Base and LoRA image-to-video rows share one batch, each as alone; the LoRA changes its row."""
    from guidance.checkpoints import CheckpointRegistry

    family = load_pipeline(tiny_dir("wan-i2v"))  # its own copy: the registry loads adapters into it
    save_random_lora(family.transformer, tmp_path / "lora")
    registry = CheckpointRegistry(family, {"lora": tmp_path / "lora"})
    specs = [_spec(seed=5), _spec(seed=5, image_seed=1, lora="lora")]
    together = sample(family, specs, SHAPE, 2, loras=registry.multi_lora).frames
    for i, spec in enumerate(specs):
        alone = sample(family, [spec], SHAPE, 2, loras=registry.multi_lora).frames[0]
        assert (together[i] - alone).abs().max() <= 1e-4
    base = sample(family, [_spec(seed=5, image_seed=1)], SHAPE, 2, loras=registry.multi_lora).frames[0]
    assert (together[1] - base).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["wan-i2v", "wan-i2v-a14b", "wan-ti2v-5b", "ltx"])
def test_a_judges_gradient_through_the_clean_estimate_steers_an_i2v_row(tiny_family, name):
    """The judge scores the decoded clean estimate of the row's own denoiser call (Wan 2.2 A14B: its
    timestep's expert), image included; on LTX and Wan 2.2 TI2V the image's first latent frame takes no
    push and the row ends with the image's."""
    from guidance.judges.as_reward import JudgeReward
    from guidance.judges.classic import ClassicJudge

    family = tiny_family(name)
    shape = SHAPE if name == "wan-i2v" else VideoShape(height=32, width=64, frames=9)
    judge = ClassicJudge(("exposure",))
    image = test_image(4, shape.width, shape.height)

    def spec(weight):
        guidance = None if weight == 0 else GuidanceSpec({"exposure": weight}, 10.0, (0.0, 1.0), "relative")
        return SampleSpec(PROMPT, seed=2, guidance=guidance, image=image)

    out = sample(family, [spec(0), spec(1.0), spec(-1.0)], shape, 3, JudgeReward(family, judge))
    unguided, up, down = judge.score(out.frames, [PROMPT] * 3)[:, 0].tolist()
    assert up > unguided + 1e-5 and down < unguided - 1e-5, (unguided, up, down)
    assert out.guided_steps == [0, 2, 2]
    if name == "ltx":
        first = slice(0, 2 * 4)  # the first latent frame's tokens
        assert torch.equal(out.latents[1, first], out.latents[0, first])
        assert torch.equal(out.latents[2, first], out.latents[0, first])
    if name == "wan-ti2v-5b":
        assert torch.equal(out.latents[1, :, 0], out.latents[0, :, 0])
        assert torch.equal(out.latents[2, :, 0], out.latents[0, :, 0])
