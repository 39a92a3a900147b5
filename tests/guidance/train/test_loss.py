import math

import pytest
import torch

from guidance.train.reward import bt_ties_log_probs, bt_ties_loss

LN5 = math.log(5.0)


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        # d = 0: sigmoid(-ln 5) = 1/6 each way, tie = (25 - 1) / 36 = 2/3.
        (0.0, (1 / 6, 1 / 6, 2 / 3)),
        # d = ln 5: P(A) = sigmoid(0) = 1/2, P(B) = sigmoid(-2 ln 5) = 1/26, tie = 24 / 52 = 6/13.
        (LN5, (1 / 2, 1 / 26, 6 / 13)),
        (-LN5, (1 / 26, 1 / 2, 6 / 13)),
    ],
)
def test_bt_with_ties_probabilities_match_hand_computed_values(d, expected):
    probs = bt_ties_log_probs(torch.tensor([d], dtype=torch.float64)).exp()[0]
    assert probs.tolist() == pytest.approx(expected, abs=1e-6)


def test_bt_with_ties_probabilities_sum_to_one():
    d = torch.linspace(-30, 30, 101)
    for theta in (1.5, 5.0, 20.0):
        assert torch.allclose(bt_ties_log_probs(d, theta).exp().sum(-1), torch.ones_like(d), atol=1e-5)
    assert torch.isfinite(bt_ties_log_probs(torch.tensor([-1e4, 1e4]))).all()


def test_loss_averages_each_objective_over_its_labels_then_objectives():
    d = torch.tensor([[0.0, LN5], [LN5, 0.0]])
    labels = torch.tensor([[0, 2], [1, -1]])  # objective 1 of pair 1 is missing (masked)
    first = (math.log(6) + math.log(26)) / 2  # A at d = 0, B at d = ln 5
    second = -math.log(6 / 13)  # tie at d = ln 5
    assert float(bt_ties_loss(d, labels)) == pytest.approx((first + second) / 2, rel=1e-6)
    # An objective with no label in the batch does not count.
    assert float(bt_ties_loss(d, torch.tensor([[0, -1], [1, -1]]))) == pytest.approx(first, rel=1e-6)


def test_loss_gradient_pushes_the_winner_up_and_ties_together():
    d = torch.zeros(3, 1, requires_grad=True)
    bt_ties_loss(d, torch.tensor([[0], [1], [2]])).backward()
    assert d.grad[0, 0] < 0 < d.grad[1, 0]  # descending raises d for "A", lowers it for "B"
    assert d.grad[2, 0] == 0  # a tie is most likely at d = 0
    with pytest.raises(ValueError, match="missing"):
        bt_ties_loss(torch.zeros(2, 1), torch.tensor([[-1], [-1]]))
