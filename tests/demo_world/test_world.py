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
