import pytest

from guidance.families.base import VideoShape
from tests.guidance.families.equivalence import assert_batch_invariant, assert_matches_pipeline

SHAPE = VideoShape(height=32, width=32, frames=9)


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_unguided_sampler_matches_wan_pipeline(tiny_family, cfg_scale):
    assert_matches_pipeline(tiny_family("wan"), SHAPE, steps=4, cfg_scale=cfg_scale)


def test_wan_batch_invariance(tiny_family):
    assert_batch_invariant(tiny_family("wan"), SHAPE, steps=3, cfg_scales=(5.0, 1.0, 2.5))


@pytest.mark.parametrize(
    ("shape", "field"),
    [(VideoShape(32, 32, 8), "frames"), (VideoShape(30, 32, 9), "height"), (VideoShape(32, 20, 9), "width")],
)
def test_wan_rejects_shapes_the_pipeline_would_round(tiny_family, shape, field):
    with pytest.raises(ValueError, match=field):
        tiny_family("wan").check_shape(shape)
