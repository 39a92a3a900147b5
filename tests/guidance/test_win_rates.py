"""Win-rate statistics of ``nrg eval`` against numbers worked out by hand."""

import pytest

from guidance.win_rates import sign_test, wilson_interval, win_rate


def test_win_rate_counts_decisive_pairs_and_ties():
    stats = win_rate([0.2, -0.05, 0.049, -0.3, 0.05, 0.0], margin=0.05)
    assert (stats.wins, stats.losses, stats.ties, stats.decisive) == (2, 2, 2, 4)
    assert stats.rate == 0.5
    assert win_rate([0.0, 0.01], margin=0.05).rate is None
    assert win_rate([0.0], margin=0.05).to_json()["ci95"] is None


def test_an_exact_tie_is_a_tie_at_margin_zero():
    stats = win_rate([0.0, 0.5, -0.5, 0.0], margin=0.0)
    assert (stats.wins, stats.losses, stats.ties) == (1, 1, 2)


def test_sign_test_by_hand():
    # 9 wins, 3 losses: 2 * (C(12,0) + C(12,1) + C(12,2) + C(12,3)) / 2^12 = 2 * 299 / 4096.
    assert sign_test(9, 3) == pytest.approx(2 * 299 / 4096)
    assert sign_test(3, 9) == sign_test(9, 3)
    assert sign_test(12, 2) == pytest.approx(2 * (1 + 14 + 91) / 2**14)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0


def test_wilson_interval_by_hand():
    lo, hi = wilson_interval(9, 12)
    assert (lo, hi) == (pytest.approx(0.4677, abs=1e-4), pytest.approx(0.9111, abs=1e-4))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) is None
    # It narrows as the evidence grows, around the same rate.
    assert wilson_interval(90, 120)[1] - wilson_interval(90, 120)[0] < hi - lo
