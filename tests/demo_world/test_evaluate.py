"""What a person sees change: pixel differences on the object and over the frame."""

import numpy as np

from demo_world import world
from demo_world.evaluate import visible_change
from demo_world.metrics import object_mask


def test_object_mask_covers_the_object_and_its_edge_only():
    prompt, seed = "a red square moving left", 4
    clip = world.render(prompt, seed)
    mask = object_mask(clip)
    params = world.clip_params(prompt, seed)
    for f in (0, 8, 16):
        cx, cy = params.centre(f)
        assert mask[f, int(cy), int(cx)]  # the centre
        assert not mask[f, int(cy), int(cx + params.size + 3)]  # beyond the grown edge
    assert 0.05 < mask.mean() < 0.25
    assert not object_mask(np.zeros_like(clip)).any()


def test_visible_change_reads_a_moved_object_as_a_large_change_on_it_and_a_small_one_on_the_frame():
    prompt = "a blue circle moving right"
    unguided = np.stack([world.render(prompt, seed) for seed in range(3)])
    moved = np.stack([np.roll(clip, 2, axis=2) for clip in unguided])  # the object two pixels to the right
    change = visible_change(moved, unguided)
    assert change["object"] > 5 * change["frame"] > 0
    assert visible_change(unguided, unguided) == {"object": 0.0, "frame": 0.0}
