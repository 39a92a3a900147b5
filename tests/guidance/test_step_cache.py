"""First-block caching per row (``guidance.step_cache``) on the tiny Wan pipeline: threshold 0 is the uncached
model bit for bit, a row's decisions and frames do not depend on its batch-mates (their thresholds, CFG,
LoRA, joining and leaving), guidance still moves its objective, and what was skipped is counted."""

import pytest
import torch

from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.sample_types import SampleSpec
from guidance.sampler import sample
from guidance.step_cache import StepCache
from tests.guidance.untrained import family_and_reward_fixtures

SHAPE = VideoShape(height=32, width=32, frames=5)
STEPS = 8
#: High enough that the tiny random model's later steps are skipped (its first block barely changes there).
THRESHOLD = 0.3

wan, reward = family_and_reward_fixtures("wan", "wan")


@pytest.fixture(scope="module")
def cache(wan):
    step_cache = StepCache(wan)
    yield step_cache
    step_cache.remove()


def _spec(seed=3, threshold=THRESHOLD, **kwargs):
    return SampleSpec("a green square moving right", seed=seed, cfg_scale=3.0, cache_threshold=threshold, **kwargs)


def test_threshold_zero_is_the_uncached_model_bit_for_bit(wan, cache):
    plain = sample(wan, [_spec(threshold=0.0), _spec(seed=4, threshold=0.0)], SHAPE, STEPS)
    hooked = sample(wan, [_spec(threshold=0.0), _spec(seed=4, threshold=0.0)], SHAPE, STEPS, step_cache=cache)
    assert torch.equal(plain.frames, hooked.frames) and hooked.cached_calls == [0, 0]


def test_a_cached_row_skips_calls_and_stays_close_to_the_uncached_one(wan, cache):
    uncached = sample(wan, [_spec(threshold=0.0)], SHAPE, STEPS, step_cache=cache)
    cached = sample(wan, [_spec()], SHAPE, STEPS, step_cache=cache)
    skipped = cached.cached_calls[0]
    # Two calls a step (CFG): the first step of each half always computes (nothing cached yet).
    assert 0 < skipped <= 2 * (STEPS - 1)
    difference = (cached.frames - uncached.frames).abs()
    assert 0 < difference.max() and difference.mean() < 0.05


def test_a_rows_decisions_and_frames_do_not_depend_on_its_batch_mates(wan, cache):
    alone = sample(wan, [_spec()], SHAPE, STEPS, step_cache=cache)
    mates = [_spec(), _spec(seed=7, threshold=0.0), SampleSpec("a red circle", seed=8, cfg_scale=1.0,
                                                                  cache_threshold=0.9)]
    together = sample(wan, mates, SHAPE, STEPS, step_cache=cache)
    assert together.cached_calls[0] == alone.cached_calls[0] and together.cached_calls[1] == 0
    torch.testing.assert_close(together.frames[0], alone.frames[0], atol=1e-5, rtol=1e-5)


def test_a_row_joining_mid_batch_starts_with_nothing_cached(wan, cache):
    """A video-to-video row joins at its first step, beside a row that has cached states since step 1."""
    from tests.guidance.families.equivalence import test_video

    v2v = _spec(seed=5, video=test_video(0, SHAPE), denoise_strength=0.5)
    alone = sample(wan, [v2v], SHAPE, STEPS, step_cache=cache)
    together = sample(wan, [_spec(), v2v], SHAPE, STEPS, step_cache=cache)
    assert together.cached_calls[1] == alone.cached_calls[0]
    torch.testing.assert_close(together.frames[1], alone.frames[0], atol=1e-5, rtol=1e-5)
    assert not cache.experts[0]._states  # the rows that left took their states with them


def test_a_lora_row_caches_its_own_adapted_residuals(tiny_dir, tmp_path):
    from guidance.checkpoints import CheckpointRegistry
    from tests.guidance.random_lora import save_random_lora

    family = load_pipeline(tiny_dir("wan"))  # its own copy: the registry loads the adapter into it
    save_random_lora(family.transformer, tmp_path / "lora")
    registry = CheckpointRegistry(family, {"lora": tmp_path / "lora"})
    step_cache = StepCache(family)
    run = lambda specs: sample(family, specs, SHAPE, STEPS, loras=registry.multi_lora, step_cache=step_cache)
    alone = run([_spec(lora="lora")])
    together = run([_spec(seed=9), _spec(lora="lora")])
    uncached = run([_spec(lora="lora", threshold=0.0)])
    assert alone.cached_calls[0] > 0 and together.cached_calls[1] == alone.cached_calls[0]
    torch.testing.assert_close(together.frames[1], alone.frames[0], atol=1e-5, rtol=1e-5)
    assert (alone.frames[0] - uncached.frames[0]).abs().mean() < 0.05
    # A row without an adapter that computes while its LoRA batch-mate is cached runs without the adapter.
    plain = run([_spec(seed=9, threshold=0.0)])
    mixed = run([_spec(seed=9, threshold=0.0), _spec(lora="lora", threshold=0.9)])
    assert mixed.cached_calls == [0, mixed.cached_calls[1]] and mixed.cached_calls[1] > 0
    torch.testing.assert_close(mixed.frames[0], plain.frames[0], atol=1e-5, rtol=1e-5)


def test_guidance_with_caching_still_moves_the_objective(wan, reward, cache):
    guided = GuidanceSpec({"a": 1.0}, strength=40.0, window=(0.0, 1.0), mode="sum")
    unguided = sample(wan, [_spec()], SHAPE, STEPS, reward, step_cache=cache)
    pushed = sample(wan, [_spec(guidance=guided)], SHAPE, STEPS, reward, step_cache=cache)
    assert pushed.rewards[0, 0] > unguided.rewards[0, 0] and pushed.cached_calls[0] > 0


def test_search_samples_are_never_cached_and_bad_thresholds_are_refused(wan, reward, cache):
    best = GuidanceSpec({"a": 1.0}, 1.0, (0.2, 0.8), "best_of_n", 2)
    assert sample(wan, [_spec(guidance=best)], SHAPE, 4, reward, step_cache=cache).cached_calls == [0]
    with pytest.raises(ValueError, match="cache_threshold must be a finite number >= 0"):
        sample(wan, [_spec(threshold=-0.1)], SHAPE, 2, step_cache=cache)
    with pytest.raises(ValueError, match="needs a step cache"):
        sample(wan, [_spec()], SHAPE, 2)


def test_families_whose_blocks_are_not_wans_are_refused(tiny_family):
    with pytest.raises(ValueError, match="step caching supports Wan models"):
        StepCache(tiny_family("ltx"))
