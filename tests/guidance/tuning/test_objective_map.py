"""``--objective-map``: each reward objective verified by the judge objective the user names, or its namesake."""

import pytest

from guidance.tuning.objective_map import parse_objective_map, resolve_objective_map

JUDGE = ("sharpness", "exposure", "temporal_flickering")


def test_the_flag_parses_comma_separated_and_repeated():
    assert parse_objective_map(["bright=exposure, smooth=temporal_flickering", "crisp=sharpness"]) == {
        "bright": "exposure", "smooth": "temporal_flickering", "crisp": "sharpness"}
    assert parse_objective_map([]) == {}


@pytest.mark.parametrize("text, message", [
    ("bright", "REWARD_OBJECTIVE=JUDGE_OBJECTIVE"), ("=exposure", "got '=exposure'"),
    ("bright=exposure,bright=sharpness", "maps bright twice"),
])
def test_a_malformed_flag_is_refused_quoting_it(text, message):
    with pytest.raises(ValueError, match=message):
        parse_objective_map([text])


def test_an_objective_the_judge_shares_needs_no_mapping():
    assert resolve_objective_map(("sharpness", "bright"), "q", JUDGE, {"bright": "exposure"}) == {
        "sharpness": "sharpness", "bright": "exposure"}


def test_an_unmapped_objective_is_an_error_that_shows_the_mapping_to_give():
    with pytest.raises(ValueError) as error:
        resolve_objective_map(("bright", "smooth"), "q", JUDGE, {"bright": "exposure"})
    assert "['smooth']" in str(error.value) and "--objective-map smooth=sharpness" in str(error.value)


def test_a_mapping_to_or_from_an_unknown_objective_is_an_error():
    with pytest.raises(ValueError, match=r"names \['dim'\], which the reward does not have"):
        resolve_objective_map(("bright",), "q", JUDGE, {"dim": "exposure"})
    with pytest.raises(ValueError, match=r"maps to \['glow'\], which judge q does not have"):
        resolve_objective_map(("bright",), "q", JUDGE, {"bright": "glow"})
