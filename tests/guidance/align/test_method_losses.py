"""The losses of the methods beyond Flow-DPO and Flow-RWR against hand computations of their properties."""

import math

import pytest
import torch

from guidance.align import losses
from guidance.align.methods import losses as m
from guidance.align.methods import transforms as tr


def test_is_weight_bounded_one_at_reference_and_detached():
    d_w = torch.tensor([-0.02, 0.0, 0.03, -1.0], requires_grad=True)
    d_l = torch.tensor([0.01, 0.0, -0.05, 1.5], requires_grad=True)
    for eps in (0.0, 0.1, 0.25, 1.0):
        w = m.is_weight(d_w, d_l, 100.0, eps)
        assert bool((w <= math.exp(2 * eps) + 1e-7).all()) and not w.requires_grad
        by_hand = [math.exp(min(-50.0 * (a + b), 2 * eps)) for a, b in zip(d_w.tolist(), d_l.tolist())]
        assert w.tolist() == pytest.approx(by_hand, rel=1e-6)
    assert m.is_weight(torch.zeros(3), torch.zeros(3), 100.0, 0.25).tolist() == [1.0, 1.0, 1.0]  # theta = ref
    # eps -> 0: the weight is min(1, exp(l(w) + l(l))): favoured pairs keep 1, the others shrink.
    w0 = m.is_weight(d_w, d_l, 100.0, 0.0)
    assert w0.tolist() == pytest.approx([1.0, 1.0, 1.0, math.exp(-25.0)])  # l = 0.5, 0, 1, -25
    z = losses.dpo_margin(d_w, torch.zeros(4), d_l, torch.zeros(4), torch.full((4,), 100.0))
    loss = m.composed_dpo_loss(z, torch.ones(4), w0)
    loss.backward()
    # The gradient is w * d(-log s(z)) only: no term from differentiating the weight.
    expected = w0 * (-torch.sigmoid(-z.detach())) * (-50.0) / 4
    assert d_w.grad.tolist() == pytest.approx(expected.tolist(), rel=1e-5)


def test_composed_without_options_is_flow_dpo_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    e = [torch.rand(6, generator=g) for _ in range(4)]
    beta = torch.full((6,), 700.0)
    weights = torch.rand(6, generator=g) + 0.1
    ref_loss, z = losses.flow_dpo_loss(*e, beta, weights)
    assert torch.equal(m.composed_dpo_loss(losses.dpo_margin(*e, beta), weights), ref_loss)
    shaped = losses.dpo_margin(*e, beta) - m.tvkd_shaping(torch.rand(6), torch.rand(6), 0.0, 0.9)
    assert torch.equal(m.composed_dpo_loss(shaped, weights), ref_loss)  # TVKD alpha = 0


def test_tvkd_shaping_by_hand():
    phi_w, phi_l = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])
    assert m.tvkd_shaping(phi_w, phi_l, 2.0, 0.75).tolist() == pytest.approx([2 * 0.25 * 0.5, 2 * 0.25 * -3.0])


def test_uapa_beta_map_term_by_hand_and_zero_gradient_at_the_mode():
    a_w, b_w, a_l, b_l = (torch.tensor([v]) for v in (4.0, 2.0, 2.0, 3.0))
    z = torch.tensor([0.7])
    p = 1 / (1 + math.exp(-0.35))
    lbeta = lambda a, b: math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)  # noqa: E731
    by_hand = -(3 * math.log(p) + 1 * math.log(1 - p) - lbeta(4, 2)) - (1 * math.log(1 - p) + 2 * math.log(p) - lbeta(2, 3))
    assert float(m.uapa_map_term(z, a_w, b_w, a_l, b_l)) == pytest.approx(by_hand, rel=1e-5)
    # One clip's term: zero gradient in z where s(z / 2) is at the mode (a - 1) / (a + b - 2) = 3/4.
    a, b = torch.tensor([4.0]), torch.tensor([2.0])
    mode = 3 / 4
    z0 = torch.tensor([2 * math.log(mode / (1 - mode))], requires_grad=True)
    term = -m.beta_log_pdf(torch.sigmoid(0.5 * z0), a, b)
    term.backward()
    assert abs(float(z0.grad)) < 1e-6
    z1 = torch.tensor([0.0], requires_grad=True)
    (-m.beta_log_pdf(torch.sigmoid(0.5 * z1), a, b)).backward()
    assert float(z1.grad) < -0.1  # below the mode the term pushes the margin up


def test_dro_hinge_zero_below_margin():
    d_e = torch.tensor([0.0, -0.01, 0.02, -0.0005], requires_grad=True)
    d_p = torch.zeros(4)
    loss, diff = m.dro_loss(d_e, d_p, 0.001)
    assert float(loss.detach()) == pytest.approx((0.001 + 0.021 + 0.0005) / 4)
    loss.backward()
    assert d_e.grad.tolist() == [0.25, 0.0, 0.25, 0.25]
    below, _ = m.dro_loss(torch.tensor([-0.5, -0.002]), torch.zeros(2), 0.001)
    assert float(below) == 0.0


def test_abc_loss_labels_each_clip():
    d_w, d_l = torch.tensor([-0.002, 0.0]), torch.tensor([0.001, 0.0])
    beta = torch.full((2,), 1000.0)
    loss, r = m.abc_loss(d_w, d_l, beta)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    by_hand = (-math.log(s(1.0)) - math.log(s(0.5)) + 2 * math.log(2)) / 2
    assert float(loss) == pytest.approx(by_hand, rel=1e-6) and r.tolist() == [[1.0, 0.0], [-0.5, 0.0]]


def test_sudo_loss_and_identity_loser_gives_no_dpo_gradient():
    err_w = torch.tensor([0.3, 0.4], requires_grad=True)
    z = losses.dpo_margin(err_w, torch.tensor([0.3, 0.4]), err_w, torch.tensor([0.3, 0.4]), torch.full((2,), 100.0))
    assert float(z.abs().max()) == 0.0  # loser == winner (perm(i) = i): D(w) - D(l) = 0
    loss = m.sudo_loss(z, err_w, 0.0)
    loss.backward()
    assert float(loss) == pytest.approx(math.log(2)) and err_w.grad.abs().max() == 0.0


def test_spo_ratio_clamped_and_gradspo_g0_zero_gradient():
    lw, lo = torch.tensor([0.5, 0.01], requires_grad=True), torch.tensor([-0.5, 0.0])
    loss = m.spo_loss(lw, lo, 10.0, 0.1)
    loss.backward()
    by_hand = (-math.log(1 / (1 + math.exp(-10 * (math.log(1.1) - math.log(0.9))))) +
               -math.log(1 / (1 + math.exp(-10 * 0.01)))) / 2
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)
    assert float(lw.grad[0]) == 0.0 and float(lw.grad[1]) < 0  # clamped: no gradient outside 1 +/- eps
    v_ema, d = torch.randn(2, 3), torch.randn(2, 3)
    tw, tl = m.gradspo_targets(v_ema, d, torch.tensor([0.5, 2.0]), 0.0)
    assert torch.equal(tw, tl)
    v = torch.randn(2, 3, requires_grad=True)
    e = lambda target: (v - target).pow(2).mean(dim=1)  # noqa: E731
    z = losses.dpo_margin(e(tw), e(tw).detach(), e(tl), e(tl).detach(), torch.full((2,), 100.0))
    (-torch.nn.functional.logsigmoid(z)).mean().backward()
    assert v.grad.abs().max() == 0.0
    tw, tl = m.gradspo_targets(v_ema, d, torch.tensor([0.5, 2.0]), 0.5)
    assert torch.allclose(tl - tw, 2 * 0.5 * torch.tensor([[0.5], [2.0]]) * d)


def test_sde_step_mean_is_the_euler_step_without_noise():
    x, v = torch.randn(2, 4), torch.randn(2, 4)
    t, dt = torch.tensor([0.6, 0.3]), torch.tensor([-0.1, -0.1])
    assert torch.allclose(m.sde_mean(x, v, t, dt, 1e-6), x + v * dt.view(-1, 1), atol=1e-6)
    child = torch.randn(2, 4)
    lr = m.step_log_ratio(child, x, x, torch.ones(2))
    assert lr.tolist() == [0.0, 0.0]


def test_hybrid_phase_schedule():
    assert [m.hybrid_phase(s, 2, 1) for s in range(6)] == ["offline", "offline", "online"] * 2
    assert all(m.hybrid_phase(s, 3, 0) == "offline" for s in range(10))


def test_video_transform_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 6, 6, generator=g)
    assert torch.equal(tr.reverse_frames(tr.reverse_frames(x)), x)
    assert torch.equal(tr.reverse_frames(x)[:, :, 0], x[:, :, -1])
    s = tr.shuffle_frames(x, g)
    assert not torch.equal(s, x)
    for i in range(3):  # the same multiset of frames, in another order
        frames = {tuple(x[i, :, f].flatten().tolist()) for f in range(5)}
        assert {tuple(s[i, :, f].flatten().tolist()) for f in range(5)} == frames
    b = tr.blur(x, 1)
    assert torch.allclose(b.mean(dim=(3, 4)), x.mean(dim=(3, 4)), atol=1e-6)  # means kept
    assert float(b.var()) < float(x.var())  # high frequencies removed
    n = tr.add_noise(x, 0.5, g)
    assert abs(float((n - x).std()) - 0.5) < 0.05
    perm = tr.derangement(7, g)
    assert sorted(perm.tolist()) == list(range(7)) and not bool((perm == torch.arange(7)).any())
    losers = tr.make_losers(x, ("permute",), g)
    assert all(not torch.equal(losers[i], x[i]) for i in range(3))
    assert tr.parse_transforms("reverse, blur") == ("reverse", "blur")
    with pytest.raises(ValueError, match="--sudo-transforms must name"):
        tr.parse_transforms("flip")
    with pytest.raises(ValueError, match="packed layouts"):
        tr.reverse_frames(torch.zeros(2, 10, 4))
