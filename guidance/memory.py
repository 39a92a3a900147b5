"""What a guided batch needs in device memory, before it runs: the admission estimate.

The reward backward dominates. Its rows are differentiated a chunk at a time
(``guidance.rewards.DEFAULT_CHUNK_ROWS``) through a trunk whose blocks are checkpointed
(``guidance.reward_model``), so while one chunk's backward runs the device holds, per row of the chunk:

* the input of every trunk block, kept by the checkpoints: ``blocks x tokens x D x s``;
* the activations of the one block being recomputed: ``tokens x (c_D x D + c_F x F) x s``, where
  F is the block's feed-forward width; ``BLOCK_D_COPIES`` and ``BLOCK_F_COPIES`` count the token-sized
  tensors a transformer block saves for its backward (q, k, v, attention output, norms, residuals,
  modulations: about fourteen of width D; the feed-forward's hidden activation: about one of width F,
  fitted on Wan blocks at two widths);
* the head's: the normalised tokens in float32 and the float32 copy they come from,
  ``HEAD_D_COPIES x tokens x D x 4``;
* the text conditioning through every block (keys and values of the cross-attention):
  ``blocks x text_tokens x D x s x 2``, small beside the video tokens.

``s`` is the compute dtype's size in bytes and ``tokens`` the trunk's video tokens per row
(latent frames x latent height x latent width / patch volume). So

    reward_bytes = chunk x [tokens x (blocks x D x s + (c_D D + c_F F) x s + 2 x 4 x D)
                            + blocks x text_tokens x 2 D x s]

and a batch of ``rows`` needs ``weights + reward_bytes + rows x row_bytes`` (``weights`` counts an offloaded
encoder as the two layers it holds on the device at a time), where ``row_bytes``
is what every row holds between steps and during the denoiser call (latents, predictions, the
per-objective gradients, and the denoiser's transient activations: ``tokens x (F + 4 D) x s``). The
constants were fitted to saved-tensor bytes measured on CPU (``tests/guidance/test_memory.py`` checks
the estimate against the measurement at several shapes, within ``ESTIMATE_FACTOR``), so the
estimate is of what autograd keeps, not of the allocator's slack: leave headroom in ``--memory-budget``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from guidance.rewards import DEFAULT_CHUNK_ROWS

#: Token-sized tensors of width D and of width F that one transformer block saves for its backward.
BLOCK_D_COPIES = 14
BLOCK_F_COPIES = 1
#: Float32 token-sized tensors the reward head keeps (its input in float32 and the normalised tokens).
HEAD_D_COPIES = 2
#: How far the estimate may be from the measured saved bytes, either way (the tests' tolerance).
ESTIMATE_FACTOR = 1.5


@dataclass(frozen=True)
class TrunkShape:
    """What the estimate needs to know of a reward trunk and a video shape."""

    tokens: int
    text_tokens: int
    dim: int
    ffn_dim: int
    blocks: int
    dtype_bytes: int
    latent_numel: int
    objectives: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a batch of this shape needs: fixed (weights and one reward backward's graph) and per row."""

    weights: int
    #: One backward's saved bytes: a latent reward's chunk, or one row of a judge's gradient.
    reward: int
    per_row: int

    def total(self, rows: int) -> int:
        return self.weights + self.reward + rows * self.per_row

    def rows_within(self, budget: int) -> int:
        """The most rows whose total fits ``budget`` (0 when not even one does)."""
        room = budget - self.weights - self.reward
        return max(0, room // self.per_row) if room >= 0 else 0


def reward_chunk_bytes(shape: TrunkShape, chunk: int = 1) -> int:
    """The reward backward's saved bytes for one chunk of ``chunk`` rows (the module docstring's formula)."""
    s = shape.dtype_bytes
    per_token = (shape.blocks * shape.dim * s + (BLOCK_D_COPIES * shape.dim + BLOCK_F_COPIES * shape.ffn_dim) * s
                 + HEAD_D_COPIES * 4 * shape.dim)
    text = shape.blocks * shape.text_tokens * 2 * shape.dim * s
    return chunk * (shape.tokens * per_token + text)


def row_bytes(shape: TrunkShape) -> int:
    """What every row of a batch holds: its float32 latents, predictions, next latents and per-objective
    gradients, and the denoiser's transient activations for it."""
    latents = shape.latent_numel * 4 * (4 + shape.objectives)
    return latents + shape.tokens * (shape.ffn_dim + 4 * shape.dim) * shape.dtype_bytes


def estimate(shape: TrunkShape, weight_bytes: int, chunk: int = 1) -> MemoryEstimate:
    return MemoryEstimate(weight_bytes, reward_chunk_bytes(shape, chunk), row_bytes(shape))


def module_bytes(modules: Iterable[torch.nn.Module]) -> int:
    """Bytes of the parameters and buffers of these modules, each tensor counted once."""
    seen: dict[int, int] = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def trunk_shape(transformer: torch.nn.Module, latent_shape: tuple[int, ...], blocks: int, text_tokens: int,
                objectives: int) -> TrunkShape:
    """A transformer's widths and a row's token count from its latents' shape [C, F, H, W] and the
    transformer's patch size (a diffusers config's ``patch_size`` (t, h, w) or ``patch_size`` and
    ``patch_size_t``)."""
    config = transformer.config
    dim = config.num_attention_heads * config.attention_head_dim
    ffn = getattr(config, "ffn_dim", None) or 4 * dim
    patch = config.patch_size
    if isinstance(patch, int):
        patch = (getattr(config, "patch_size_t", None) or 1, patch, patch)
    frames, height, width = latent_shape[-3:]
    tokens = math.ceil(frames / patch[0]) * math.ceil(height / patch[1]) * math.ceil(width / patch[2])
    return TrunkShape(tokens=tokens, text_tokens=text_tokens, dim=dim, ffn_dim=ffn, blocks=blocks,
                      dtype_bytes=torch.tensor([], dtype=transformer.dtype).element_size(),
                      latent_numel=math.prod(latent_shape), objectives=objectives)


class SavedTensorBytes:
    """Bytes autograd holds for backward while it is active: now and at the peak.

    A ``torch.autograd.graph.saved_tensors_hooks`` pair: every tensor a forward saves is counted (once
    per view) until the graph that saved it is freed; ``exclude`` (the parameters) is never counted.
    Inside a checkpointed block the checkpoint's own hooks take the block's tensors, so with
    checkpointing on this counts what the checkpoints keep, not the block being recomputed.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._skip = {t.untyped_storage().data_ptr() for t in exclude}
        self._live: dict[tuple[int, int], list[int]] = {}
        self.current = 0
        self.peak = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def __enter__(self) -> SavedTensorBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    def _pack(self, tensor: torch.Tensor) -> object:
        if tensor.untyped_storage().data_ptr() in self._skip or tensor.numel() == 0:
            return tensor
        # A view is counted at its own size (a row of a batch keeps the batch's storage alive, but the
        # caller holds that anyway), and once however many ops save it.
        key = (tensor.data_ptr(), tensor.numel() * tensor.element_size())
        entry = self._live.setdefault(key, [0, key[1]])
        if entry[0] == 0:
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        held = _Held(tensor)
        weakref.finalize(held, self._release, key)
        return held

    @staticmethod
    def _unpack(packed: object) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Held) else packed

    def _release(self, key: tuple[int, int]) -> None:
        entry = self._live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._live[key]


class _Held:
    """A saved tensor as the graph holds it; its finalizer tells :class:`SavedTensorBytes` it is gone."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


#: Prompt tokens per row assumed by the estimate: the longest any family pads to (Wan's 512).
TEXT_TOKENS_BOUND = 512


def batch_estimate(family: Any, reward: Any, shape: Any, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> MemoryEstimate:
    """The estimate for batches of ``family``'s pipeline at ``shape`` guided by ``reward`` (a
    ``LatentRewardModel``; another reward, or none, counts no trunk): weights of every module the
    pipeline and the reward hold, one chunk of the reward backward, and each row's bytes."""
    latent_shape = tuple(family.prepare_latents(shape, [torch.Generator("cpu").manual_seed(0)]).shape[1:])
    blocks = getattr(reward, "num_blocks", 0)
    objectives = len(getattr(reward, "objectives", ()))
    trunk = trunk_shape(family.transformer, latent_shape, blocks, TEXT_TOKENS_BOUND, objectives)
    offloaded = [m for name, m in family.pipe.components.items() if name in family.offloaded]
    modules = [m for name, m in family.pipe.components.items()
               if isinstance(m, torch.nn.Module) and name not in family.offloaded]
    if isinstance(reward, torch.nn.Module):
        modules.append(reward)
    return estimate(trunk, module_bytes(modules) + offload_transient_bytes(offloaded), chunk_rows if blocks else 0)


def offload_transient_bytes(offloaded: Iterable[torch.nn.Module]) -> int:
    """What offloaded modules hold on the device while one runs: its two largest layers (the one
    running and the next, prefetched), leaf modules' own tensors counted."""
    sizes = sorted((module_bytes([leaf]) for module in offloaded for leaf in module.modules()
                    if not list(leaf.children())), reverse=True)
    return sum(sizes[:2])
