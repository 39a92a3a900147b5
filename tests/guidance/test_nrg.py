import pytest

from guidance.nrg import DEFAULT_MAX_RATIO, GuidanceSpec, guidance_coefficients, parse_weights


def test_coefficient_is_strength_times_bounded_ratio():
    spec = GuidanceSpec({"a": 1.0}, strength=100.0)
    assert guidance_coefficients([spec], 0.5, 1.0) == [100.0]
    assert guidance_coefficients([spec], 0.99, 99.0) == [100.0 * DEFAULT_MAX_RATIO]
    assert guidance_coefficients([spec], 0.99, 99.0, max_ratio=50.0) == [5000.0]


def test_coefficient_is_zero_at_t1_outside_window_and_when_inactive():
    spec = GuidanceSpec({"a": 1.0}, strength=10.0, window=(0.2, 0.8))
    assert guidance_coefficients([spec], 1.0, float("inf")) == [0.0]
    assert guidance_coefficients([spec, spec], 0.9, 9.0) == [0.0, 0.0]
    assert guidance_coefficients([spec, None, GuidanceSpec({"a": 0.0})], 0.5, 1.0) == [10.0, 0.0, 0.0]


def test_parse_weights():
    assert parse_weights("vq=1, mq=0.5,ta=-2") == {"vq": 1.0, "mq": 0.5, "ta": -2.0}
    with pytest.raises(ValueError, match="expected name=value"):
        parse_weights("vq")
    with pytest.raises(ValueError, match="non-numeric"):
        parse_weights("vq=high")
