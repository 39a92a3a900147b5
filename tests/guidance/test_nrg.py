import pytest

from guidance.nrg import (
    BUILTIN_DEFAULTS,
    DEFAULT_MAX_RATIO,
    PAPER_STRENGTH,
    GuidanceDefaults,
    GuidanceSpec,
    check_gradient_objectives,
    defaults_for,
    guidance_coefficients,
    parse_weights,
)


def test_paper_coefficient_is_strength_times_bounded_ratio():
    spec = GuidanceSpec({"a": 1.0}, strength=100.0, window=(0.0, 1.0), mode="sum")
    assert guidance_coefficients([spec], 0.5, 1.0) == [100.0]
    assert guidance_coefficients([spec], 0.99, 99.0) == [100.0 * DEFAULT_MAX_RATIO]
    assert guidance_coefficients([spec], 0.99, 99.0, max_ratio=50.0) == [5000.0]


def test_relative_coefficient_is_the_strength_at_every_noise_level():
    """Mode relative sizes the push in the kernel (against the CFG term), so no t schedule here."""
    spec = GuidanceSpec({"a": 1.0}, strength=3.0, window=(0.0, 1.0))
    assert spec.mode == "relative"
    assert guidance_coefficients([spec], 0.5, 1.0) == [3.0]
    assert guidance_coefficients([spec], 0.99, 99.0) == [3.0]
    assert guidance_coefficients([spec], 1.0, float("inf")) == [0.0]


def test_default_window_keeps_off_the_noisiest_and_the_last_steps():
    spec = GuidanceSpec({"a": 1.0})
    levels = [1.0, 0.95, 0.85, 0.8, 0.5, 0.2, 0.1, 0.0]
    assert [c != 0 for c in guidance_coefficients([spec] * 1, 0.5, 1.0)] == [True]
    assert [guidance_coefficients([spec], t, 1.0)[0] != 0 for t in levels] == [
        False, False, False, True, True, True, False, False]


def test_defaults_complete_what_a_request_leaves_out():
    tuned = GuidanceDefaults("relative", 2.0, (0.3, 0.7), "nrg eval --tune")
    assert tuned.complete({"ta": 1.0}) == GuidanceSpec({"ta": 1.0}, 2.0, (0.3, 0.7), "relative")
    assert tuned.complete({"ta": 1.0}, strength=5.0, window=(0.0, 1.0)) == GuidanceSpec({"ta": 1.0}, 5.0, (0.0, 1.0))
    # Another mode than the tuned one: that mode's own built-in strength, never the tuned number.
    assert tuned.complete({"ta": 1.0}, mode="sum").strength == PAPER_STRENGTH
    assert BUILTIN_DEFAULTS.complete({"ta": 1.0}) == GuidanceSpec({"ta": 1.0})


def test_defaults_round_trip_and_bad_ones_name_the_field():
    tuned = GuidanceDefaults("unit", 40.0, (0.1, 0.9), "run 7")
    assert GuidanceDefaults.from_json(tuned.to_json(), "cfg.json") == tuned
    with pytest.raises(ValueError, match="cfg.json: guidance_defaults needs mode, strength and window"):
        GuidanceDefaults.from_json({"mode": "relative"}, "cfg.json")
    with pytest.raises(ValueError, match="cfg.json: guidance_defaults.window must satisfy"):
        GuidanceDefaults.from_json({"mode": "relative", "strength": 1, "window": [0.9, 0.1]}, "cfg.json")
    with pytest.raises(ValueError, match="guidance_defaults.mode must be one of relative, sum, unit"):
        GuidanceDefaults.from_json({"mode": "fast", "strength": 1, "window": [0, 1]}, "cfg.json")


def test_defaults_for_reads_a_reward_models_own():
    class Reward:
        guidance_defaults = GuidanceDefaults("relative", 1.5, (0.2, 0.6))

    assert defaults_for(Reward()).strength == 1.5
    assert defaults_for(object()) is BUILTIN_DEFAULTS and defaults_for(None) is BUILTIN_DEFAULTS


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


def test_gradient_modes_may_weight_only_objectives_with_a_gradient():
    differentiable = {"sharpness", "exposure"}
    for mode in ("relative", "sum", "unit"):
        with pytest.raises(ValueError, match=rf"^weights: motion_smoothness, vq have no gradient, so mode {mode} "
                                             r"cannot push along them; weight only differentiable objectives "
                                             r"\(exposure, sharpness\) or rank with best_of_n / fk$"):
            check_gradient_objectives(GuidanceSpec({"sharpness": 1, "motion_smoothness": 1, "vq": -1}, mode=mode),
                                      differentiable)
    with pytest.raises(ValueError, match=r"objectives \(none\)"):
        check_gradient_objectives(GuidanceSpec({"vq": 1}), frozenset())
    # Ranking needs no gradient; a zero weight pushes nothing; an inactive spec does nothing at all.
    check_gradient_objectives(GuidanceSpec({"motion_smoothness": 1}, mode="best_of_n"), differentiable)
    check_gradient_objectives(GuidanceSpec({"exposure": 1, "motion_smoothness": 0}), differentiable)
    check_gradient_objectives(GuidanceSpec({"motion_smoothness": 1}, strength=0.0), differentiable)
