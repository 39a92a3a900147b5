"""Reward gradients: per-objective gradients from as few backward passes as the rows' weights allow."""

import torch

from guidance import rewards
from guidance.families.base import TextConditioning, VideoShape
from guidance.rewards import CallableReward, reward_and_gradients

SHAPE = VideoShape(height=8, width=8, frames=1)


def _three(latents, t, prompt_embeds):
    """Three objectives, each a different nonlinear function of a sample's own latents."""
    flat = latents.flatten(1)
    return torch.stack([flat.sin().sum(1), (flat ** 2).mean(1), flat[:, :5].exp().sum(1)], dim=1)


def test_rows_weighting_one_objective_each_cost_one_backward_pass(monkeypatch):
    reward = CallableReward(_three, ["a", "b", "c"])
    latents = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    t, cond = torch.full((4,), 0.5), TextConditioning(torch.zeros(4, 1, 1))
    weights = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0], [0.5, 0, 0.5]])
    weighted = [[0], [1], [2], [0, 2]]
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(rewards.torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    scores, grads = reward_and_gradients(reward, latents, t, cond, SHAPE, weights, "unit", weighted=weighted,
                                         chunk_rows=4)
    assert len(calls) == 2  # the most objectives one row weights, not the three the batch uses
    calls.clear()
    _, every = reward_and_gradients(reward, latents, t, cond, SHAPE, weights, "unit", chunk_rows=4)
    assert len(calls) == 3
    for row, ks in enumerate(weighted):
        for k in ks:
            torch.testing.assert_close(grads[row, k], every[row, k], rtol=1e-6, atol=1e-7)
        for k in set(range(3)) - set(ks):
            assert torch.equal(grads[row, k], torch.zeros_like(grads[row, k]))  # never read behind weight 0
    assert scores.shape == (4, 3)


def test_chunks_of_rows_give_the_whole_batchs_scores_and_gradients():
    """Rows are scored independently, so differentiating them a chunk at a time changes nothing."""
    reward = CallableReward(_three, ["a", "b", "c"])
    latents = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    t, cond = torch.full((5,), 0.5), TextConditioning(torch.zeros(5, 1, 1))
    weights = torch.rand(5, 3, generator=torch.Generator().manual_seed(2))
    weighted = [[0], [1, 2], [2], [0, 1, 2], [1]]
    for mode, kw in (("sum", {}), ("unit", {"weighted": weighted})):
        whole = reward_and_gradients(reward, latents, t, cond, SHAPE, weights, mode, chunk_rows=5, **kw)
        for chunk in (1, 2):
            parts = reward_and_gradients(reward, latents, t, cond, SHAPE, weights, mode, chunk_rows=chunk, **kw)
            torch.testing.assert_close(parts[0], whole[0], rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(parts[1], whole[1], rtol=1e-6, atol=1e-7)


def test_the_default_chunk_is_one_row_where_memory_limits_and_the_whole_batch_on_a_cpu():
    from guidance.rewards import DEFAULT_CHUNK_ROWS, WHOLE_BATCH, default_chunk_rows

    class Capped:
        max_chunk_rows = 1

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert default_chunk_rows(None, cpu) == WHOLE_BATCH
    assert default_chunk_rows(None, cpu, memory_bounded=True) == DEFAULT_CHUNK_ROWS
    assert default_chunk_rows(None, cuda) == DEFAULT_CHUNK_ROWS
    assert default_chunk_rows(Capped(), cpu) == 1
