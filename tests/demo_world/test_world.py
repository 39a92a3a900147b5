"""The synthetic demo world: determinism, prompt grammar, the held-out split."""

import numpy as np
import pytest

from demo_world import world
from guidance.demo import DEFAULT_SHAPE


def test_render_is_deterministic_in_the_seed_and_has_the_default_shape():
    a = world.render("a red circle moving left", 7)
    assert a.shape == (DEFAULT_SHAPE.frames, DEFAULT_SHAPE.height, DEFAULT_SHAPE.width, 3)
    assert a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, world.render("a red circle moving left", 7))
    assert not np.array_equal(a, world.render("a red circle moving left", 8))


def test_prompt_grammar_round_trips_and_rejects_other_text():
    prompts = world.all_prompts()
    assert len(prompts) == 4 * 3 * 4 * 3 and len({p.text for p in prompts}) == len(prompts)
    for p in prompts:
        assert world.parse_prompt(p.text) == p
    assert world.parse_prompt("a blue square moving up quickly").speed == "quickly"
    for bad in ("a purple circle moving left", "a red circle moving sideways", "red circle moving left",
                "a red circle moving left fast"):
        with pytest.raises(ValueError, match="not a demo-world prompt"):
            world.parse_prompt(bad)


def test_held_out_split_covers_every_word_but_no_training_prompt():
    held = world.HELD_OUT_COMBOS
    assert {c for c, _, _ in held} == set(world.COLORS)
    assert {s for _, s, _ in held} == set(world.SHAPES)
    assert {d for _, _, d in held} == set(world.DIRECTIONS)
    assert not any(p.held_out for p in world.train_prompts())
    assert all(p.held_out for p in world.eval_prompts()) and len(world.eval_prompts()) == len(held)
    rng = np.random.default_rng(0)
    assert not any(world.sample_training_prompt(rng).held_out for _ in range(200))


@pytest.mark.parametrize("prompt", ["a yellow triangle moving right quickly", "a green square moving down slowly",
                                    "a blue circle moving up"])
def test_object_moves_the_right_way_and_stays_in_frame(prompt):
    for seed in range(5):
        params = world.clip_params(prompt, seed)
        clip = world.render_params(params)
        fg = (clip.max(-1) > 0.5)
        assert fg.sum(axis=(1, 2)).min() > 20  # visible in every frame
        assert not fg[:, 0, :].any() and not fg[:, -1, :].any() and not fg[:, :, 0].any() and not fg[:, :, -1].any()
        dx, dy = world.DIRECTIONS[params.prompt.direction]
        (x0, y0), (x1, y1) = params.centre(0), params.centre(world.FRAMES - 1)
        assert np.sign(x1 - x0) == dx and np.sign(y1 - y0) == dy


def test_training_footage_varies_in_quality_on_every_axis_but_always_shows_the_prompt():
    from demo_world.metrics import evaluate_clip

    qualities = [world.draw_quality(seed) for seed in range(200)]
    for axis in world.QUALITY_RANGES:
        perfect = np.mean([getattr(q, axis) == getattr(world.PERFECT, axis) for q in qualities])
        assert 0.4 < perfect < 0.6  # each axis perfect in about half the clips, independently
    assert world.draw_quality(3) == world.draw_quality(3)
    prompt = world.train_prompts()[5]
    reports = [evaluate_clip(world.render_training(prompt, seed), prompt) for seed in range(24)]
    assert all(r.ta == 1.0 for r in reports)
    vq, mq = np.array([r.vq for r in reports]), np.array([r.mq for r in reports])
    assert vq.max() - vq.min() > 0.5 and mq.max() - mq.min() > 0.5  # room on both quality metrics


def test_each_quality_axis_costs_the_metric_that_reads_it():
    from demo_world.metrics import evaluate_clip

    prompt, seed = "a blue square moving right", 11
    params = world.clip_params(prompt, seed)
    base = evaluate_clip(world.render_params(params), prompt)
    assert np.array_equal(world.render_params(params, quality=world.PERFECT, seed=99), world.render(prompt, seed))
    for quality, part, metric in ((world.Quality(edge_width=3.0), "sharpness", "vq"),
                                  (world.Quality(texture=0.04), "background_sigma", "vq"),
                                  (world.Quality(shake=1.0), "jerk", "mq"),
                                  (world.Quality(wobble=0.08), "area_cv", "mq")):
        report = evaluate_clip(world.render_params(params, quality=quality, seed=seed), prompt)
        if part == "sharpness":  # read ~1 / edge width
            assert report.sharpness < 0.6 * base.sharpness
        else:  # a clean render measures ~0 on these
            assert getattr(report, part) > 3 * getattr(base, part) + 0.01, quality
        assert getattr(report, metric) < getattr(base, metric), quality
        assert report.ta == 1.0
