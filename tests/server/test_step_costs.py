"""Step times learnt online and the step-cost gate of joins: pure arithmetic on observed steps (no torch)."""

import pytest

from server.step_costs import StepCostGate, StepTimes


def test_a_row_counts_time_is_a_moving_average_of_its_steps():
    times = StepTimes(smoothing=0.5)
    times.observe("a", 2, 1.0)
    times.observe("a", 2, 2.0)
    assert times.predict("a", 2) == pytest.approx(1.5)
    times.observe("a", 2, 0.0)  # not a measurement: ignored, as is an empty batch
    times.observe("a", 0, 5.0)
    assert times.predict("a", 2) == pytest.approx(1.5)
    assert times.predict("b", 2) is None


def test_unseen_row_counts_are_predicted_from_the_seen_ones():
    times = StepTimes()
    times.observe("a", 2, 0.1)
    assert times.predict("a", 4) == pytest.approx(0.2)  # one count seen: proportional
    assert times.predict("a", 1) == pytest.approx(0.05)
    times.observe("a", 4, 0.16)
    assert times.predict("a", 1) == pytest.approx(0.07)  # the line through (2, 0.1) and (4, 0.16)
    assert times.predict("a", 8) == pytest.approx(0.28)


def test_the_line_never_predicts_a_negative_fixed_cost_or_slope():
    times = StepTimes()
    times.observe("a", 1, 0.01)
    times.observe("a", 2, 0.2)  # a steep line would cross zero before one row: refit through the origin
    assert times.predict("a", 3) == pytest.approx(3 * (0.01 + 2 * 0.2) / 5)
    times = StepTimes()
    times.observe("b", 1, 0.2)
    times.observe("b", 3, 0.1)  # a step cannot get cheaper with more rows: flat
    assert times.predict("b", 2) == pytest.approx(0.15)


def test_the_gate_bounds_the_predicted_step_by_one_rows_time():
    times = StepTimes()
    gate = StepCostGate(times, max_slowdown=1.5)
    assert gate.allows("a", 4)  # nothing learnt: rows alone decide
    times.observe("a", 1, 0.1)
    assert not gate.allows("a", 2)  # proportional: 0.2 > 1.5 x 0.1
    times.observe("a", 2, 0.14)
    assert gate.allows("a", 2) and not gate.allows("a", 3)  # 0.14 <= 0.15 < 0.18


@pytest.mark.parametrize("bad", [0.5, 0.0, float("nan")])
def test_a_slowdown_below_one_is_refused(bad):
    with pytest.raises(ValueError, match="max_step_slowdown must be >= 1"):
        StepCostGate(StepTimes(), bad)
