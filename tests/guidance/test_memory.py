"""The reward backward's memory: flat in the number of guided rows, and as the admission estimate says.

Measured as the bytes autograd saves for backward (``guidance.memory.SavedTensorBytes``), which is what
grows with rows, tokens and blocks; the allocator's own slack is the operator's headroom.
"""

import pytest
import torch
from diffusers import WanTransformer3DModel

from guidance import memory
from guidance.families.base import TextConditioning, VideoShape
from guidance.families.wan import WanFamily
from guidance.reward_model import init_reward_model
from guidance.rewards import reward_and_gradients
from guidance.testing.tiny import build_tiny_pipeline

TEXT_TOKENS = 8


def _family(heads: int = 2, head_dim: int = 12, ffn: int = 32) -> WanFamily:
    pipe = build_tiny_pipeline("wan")
    if (heads, head_dim, ffn) != (2, 12, 32):
        pipe.transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16,
            out_channels=16, text_dim=32, freq_dim=32, ffn_dim=ffn, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval()
    return WanFamily(pipe)


def _saved_peak(reward, rows: int, latent: tuple[int, ...], **kwargs) -> int:
    """Peak bytes autograd holds while the reward gradients of ``rows`` rows are taken."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(rows, *latent, generator=generator)
    cond = TextConditioning(torch.randn(rows, TEXT_TOKENS, 32, generator=generator))
    weights = torch.full((rows, 2), 0.5)
    with memory.SavedTensorBytes([*reward.parameters(), *reward.buffers()]) as saved:
        reward_and_gradients(reward, latents, torch.full((rows,), 0.5), cond, VideoShape(8, 8, 1), weights, "unit",
                             weighted=[[0, 1]] * rows, **kwargs)
    assert saved.current == 0  # every graph was freed
    return saved.peak


@pytest.fixture(scope="module")
def reward():
    return init_reward_model(_family(), ["a", "b"], num_blocks=2)


def test_the_reward_backwards_peak_does_not_grow_with_the_guided_rows(reward):
    latent = (16, 3, 8, 8)
    peaks = [_saved_peak(reward, rows, latent) for rows in (1, 2, 4)]
    assert peaks[0] > 0 and peaks == [peaks[0]] * 3
    # One graph for all rows (what chunking replaced) holds every row's activations at once.
    assert _saved_peak(reward, 4, latent, chunk_rows=4) > 3 * peaks[0]


def test_checkpointed_blocks_keep_their_inputs_not_their_activations(reward):
    latent = (16, 3, 8, 8)
    checkpointed = _saved_peak(reward, 1, latent)
    reward.trunk.disable_gradient_checkpointing()
    try:
        full = _saved_peak(reward, 1, latent)
    finally:
        reward.trunk.enable_gradient_checkpointing()
    assert full > 2 * checkpointed


@pytest.mark.parametrize("widths", [(2, 12, 32), (4, 16, 256)])
def test_the_admission_estimate_matches_the_measured_reward_backward(widths):
    """At several token counts, block counts and widths, the formula of ``guidance.memory`` is within
    ``ESTIMATE_FACTOR`` of the measured peak: what the checkpoints keep plus one recomputed block."""
    family = _family(*widths)
    for blocks in (1, 2):
        reward = init_reward_model(family, ["a", "b"], num_blocks=blocks)
        for latent in ((16, 2, 8, 8), (16, 3, 16, 16), (16, 5, 16, 24)):
            kept = _saved_peak(reward, 1, latent)
            reward.trunk.disable_gradient_checkpointing()
            every_block = _saved_peak(reward, 1, latent)
            reward.trunk.enable_gradient_checkpointing()
            measured = kept + (every_block - kept) / blocks
            shape = memory.trunk_shape(family.transformer, latent, blocks, TEXT_TOKENS, 2)
            estimated = memory.reward_chunk_bytes(shape)
            assert 1 / memory.ESTIMATE_FACTOR <= estimated / measured <= memory.ESTIMATE_FACTOR, (
                widths, blocks, latent, estimated, measured)


def test_rows_within_a_budget():
    estimate = memory.MemoryEstimate(weights=100, reward=50, per_row=10)
    assert estimate.total(3) == 180
    assert estimate.rows_within(180) == 3 and estimate.rows_within(189) == 3 and estimate.rows_within(149) == 0


def test_only_eval_mode_checkpoints_the_trunk(reward):
    try:
        assert reward.trunk.is_gradient_checkpointing
        reward.train()
        assert not reward.trunk.is_gradient_checkpointing  # training differentiates twice
    finally:
        reward.eval()
    assert reward.trunk.is_gradient_checkpointing
