"""The alignment losses against hand computations."""

import math

import pytest
import torch

from guidance.align import losses


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_sample_errors_are_per_sample_means():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    target = torch.zeros_like(pred)
    assert losses.sample_errors(pred, target).tolist() == [7.5, 0.0]  # (1+4+9+16)/4
    with pytest.raises(ValueError, match="differ in shape"):
        losses.sample_errors(pred, target[:, :1])


def test_dpo_hand_computation_and_sign():
    # D(w) = 1 - 2 = -1 (policy fits the winner better than the reference), D(l) = 3 - 2 = +1.
    # z = -(beta/2)(D(w) - D(l)) = -(2/2)(-2) = 2; loss = -log sigmoid(2) = log(1 + e^-2).
    loss, z = losses.flow_dpo_loss(t(1.0), t(2.0), t(3.0), t(2.0), t(2.0))
    assert z.tolist() == [2.0]
    assert float(loss) == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-6)
    # The opposite move (towards the loser) has the opposite margin and a loss above log 2.
    loss_bad, z_bad = losses.flow_dpo_loss(t(3.0), t(2.0), t(1.0), t(2.0), t(2.0))
    assert z_bad.tolist() == [-2.0]
    assert float(loss_bad) == pytest.approx(math.log1p(math.exp(2.0)), abs=1e-6)
    assert float(loss) < math.log(2) < float(loss_bad)


def test_dpo_at_reference_is_log2_whatever_the_errors():
    err_w, err_l = t(0.3, 5.0), t(1.7, 0.01)
    loss, z = losses.flow_dpo_loss(err_w, err_w, err_l, err_l, t(500.0, 500.0))
    assert z.tolist() == [0.0, 0.0]
    assert float(loss) == pytest.approx(math.log(2), abs=1e-7)


def test_dpo_gradient_descends_winner_error_and_ascends_loser_error():
    err_w, err_l = t(1.0).requires_grad_(), t(1.0).requires_grad_()
    loss, _ = losses.flow_dpo_loss(err_w, t(1.0), err_l, t(1.0), t(4.0))
    loss.backward()
    # At z = 0: dL/dz = -1/2 and dz/de_w = -beta/2, so dL/de_w = beta/4 = 1, dL/de_l = -1.
    assert float(err_w.grad) == pytest.approx(1.0)
    assert float(err_l.grad) == pytest.approx(-1.0)


def test_beta_to_zero_limit():
    # -log sigmoid(z) = log 2 - z/2 + O(z^2), z = -(beta/2) delta: (L - log 2) / beta -> delta / 4.
    delta = (0.4 - 0.1) - (0.2 - 0.6)  # D(w) - D(l) = 0.7
    for beta in (1e-2, 1e-3):
        loss, _ = losses.flow_dpo_loss(t(0.4), t(0.1), t(0.2), t(0.6), t(beta))
        assert (float(loss) - math.log(2)) / beta == pytest.approx(delta / 4, rel=1e-2)
    loss, _ = losses.flow_dpo_loss(t(0.4), t(0.1), t(0.2), t(0.6), t(0.0))
    assert float(loss) == pytest.approx(math.log(2), abs=1e-7)


def test_pair_weights():
    # Pair 1: z = 2 (loss log(1+e^-2)); pair 2: z = 0 (log 2); weights 3 and 1.
    loss, _ = losses.flow_dpo_loss(t(1.0, 1.0), t(2.0, 1.0), t(3.0, 1.0), t(2.0, 1.0), t(2.0, 2.0), t(3.0, 1.0))
    expected = (3 * math.log1p(math.exp(-2.0)) + math.log(2)) / 4
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="pair weights"):
        losses.flow_dpo_loss(t(1.0), t(1.0), t(1.0), t(1.0), t(1.0), t(0.0))


def test_beta_schedules():
    levels = t(0.0, 0.5, 1.0)
    assert losses.beta_at(500.0, levels, "constant").tolist() == [500.0, 500.0, 500.0]
    assert losses.beta_at(500.0, levels, "paper-t").tolist() == [500.0, 125.0, 0.0]
    with pytest.raises(ValueError, match="beta schedule must be one of constant, paper-t"):
        losses.beta_at(1.0, levels, "linear")


def test_rwr_weights_and_loss():
    rewards = t(0.0, 1.0, 2.0)
    w = losses.rwr_weights(rewards, tau=0.5)
    assert float(w.mean()) == pytest.approx(1.0)
    assert float(w[2] / w[1]) == pytest.approx(math.exp(2.0), rel=1e-5)  # exp(1 / 0.5)
    # Large rewards do not overflow (computed relative to the maximum).
    assert torch.isfinite(losses.rwr_weights(t(1000.0, 1001.0), tau=0.01)).all()
    # tau -> infinity: uniform weights, the plain flow-matching loss.
    assert losses.rwr_weights(rewards, tau=1e9).tolist() == pytest.approx([1.0, 1.0, 1.0])
    err = t(1.0, 2.0, 4.0)
    assert float(losses.flow_rwr_loss(err, t(0.5, 1.0, 1.5))) == pytest.approx((0.5 + 2.0 + 6.0) / 3)
    with pytest.raises(ValueError, match="tau must be a positive number"):
        losses.rwr_weights(rewards, tau=0.0)
    with pytest.raises(ValueError, match="one per sample"):
        losses.flow_rwr_loss(err, t(1.0, 1.0))
