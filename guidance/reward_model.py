"""The latent reward model: scores noisy latents of one pipeline on named objectives.

Trunk: the first N blocks of the pipeline's own transformer together with its patch, time and text
embeddings (copied from the pipeline, so the trunk starts out understanding the latent space and the
noise level). It is built at its truncated size from the transformer's config and called through the
family adapter's ``predict``, i.e. exactly as the denoiser is called; a forward hook on the last kept
block, present only during that call, captures its video tokens (the cheap output projection after it
runs and is discarded). In eval mode (guidance), with gradients on, every trunk block is checkpointed (diffusers' own
``enable_gradient_checkpointing``, i.e. ``torch.utils.checkpoint`` without reentrancy): the backward
keeps each block's input and recomputes one block at a time, so the reward backward's memory is
about one block's activations rather than all of them (``guidance.memory`` has the formula).

Head: a few learned queries cross-attend over the tokens (query-attention pooling, as in DiNa-LRM and
PAVRM; the key and value projections are folded into the queries so no token is projected), are modulated by an embedding of the noise level t, and an MLP maps them to one score per
objective. Time dependence matters: the paper's ablation shows a reward trained on clean latents
steers badly, so the model is trained and queried at the noise level of the latents it sees.

On disk: ``reward_config.json`` (objectives, family, N, base-model fingerprint, head sizes) and
``reward_model.safetensors``. Loading onto a pipeline of another family or another transformer
configuration is an error, because the trunk's weights only make sense for the transformer they were
copied from.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape
from guidance.nrg import BUILTIN_DEFAULTS, GuidanceDefaults

CONFIG_NAME = "reward_config.json"
WEIGHTS_NAME = "reward_model.safetensors"
FORMAT_VERSION = 1


def _public_config(transformer: nn.Module) -> dict[str, Any]:
    return {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}


def transformer_fingerprint(family: str, transformer: nn.Module) -> str:
    """A stable hash of the family and the transformer's architecture (not its weights): a reward
    model fits any checkpoint of the same architecture, e.g. a LoRA-aligned one."""
    text = json.dumps({"family": family, "config": _public_config(transformer)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of noise levels t in [0, 1] (scaled to the usual 0..1000 range)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class QueryPoolingHead(nn.Module):
    """Learned queries attend over trunk tokens; FiLM by t; an MLP gives one score per objective."""

    def __init__(self, dim: int, num_objectives: int, num_queries: int = 4, num_heads: int = 1, hidden: int = 256):
        super().__init__()
        self.time_dim = 64
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.film = nn.Sequential(nn.Linear(self.time_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * dim))
        self.mlp = nn.Sequential(nn.LayerNorm(num_queries * dim), nn.Linear(num_queries * dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, num_objectives))
        # Start as an identity modulation so the first steps of training see the plain pooled tokens.
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)

    def forward(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.norm(tokens.float()))
        scale, shift = self.film(_timestep_embedding(t, self.time_dim)).chunk(2, dim=-1)
        pooled = pooled * (1 + scale[:, None]) + shift[:, None]
        return self.mlp(pooled.flatten(1))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``self.attn(queries, tokens, tokens)`` without projecting the tokens: [B, L, D] -> [B, Q, D].

        Projecting every token to keys and values costs 2 L D^2 multiply-adds per sample in float32
        (a 720p clip has ~75k tokens). Both projections are linear, so they fold into the few queries:
        a head's logits are q_h W_kh x_l / sqrt(d) (the key bias adds the same amount to every token's
        logit and cancels in the softmax), and its output is (sum_l a_l x_l) W_vh^T + b_vh since the
        attention weights sum to one. What touches the tokens is then two products with Q x heads
        rows, and what the backward keeps of them is [B, H, Q, L] instead of two [B, L, D]. The
        parameters are the ``nn.MultiheadAttention``'s, so saved models load unchanged.
        """
        attn = self.attn
        batch, _, dim = tokens.shape
        heads, head_dim = attn.num_heads, dim // attn.num_heads
        num_queries = self.queries.shape[0]
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, _, b_v = attn.in_proj_bias.chunk(3)
        q = (self.queries @ w_q.T + b_q).view(num_queries, heads, head_dim)
        folded = torch.einsum("qhe,hed->qhd", q, w_k.view(heads, head_dim, dim)) / math.sqrt(head_dim)
        weights = (tokens @ folded.reshape(num_queries * heads, dim).T).transpose(1, 2).softmax(dim=-1)  # [B, QH, L]
        mixed = (weights @ tokens).view(batch, num_queries, heads, dim)
        values = torch.einsum("bqhd,hed->bqhe", mixed, w_v.view(heads, head_dim, dim))
        return attn.out_proj((values + b_v.view(heads, head_dim)).reshape(batch, num_queries, dim))


def _build_trunk(family: PipelineFamily, config: dict[str, Any], num_blocks: int) -> nn.Module:
    """The family's transformer class at N blocks in its first block list and none in the others.

    Each tensor takes the dtype of its namesake in the pipeline's transformer, so modules that
    diffusers keeps in float32 inside a bf16 model (norms, time embedding) stay float32 here too.
    """
    sizes = {key: (num_blocks if i == 0 else 0) for i, key in enumerate(family.block_config_keys)}
    trunk = type(family.transformer).from_config({**config, **sizes})
    source = family.transformer.state_dict()
    for name, tensor in [*trunk.named_parameters(), *trunk.named_buffers()]:
        if name in source and tensor.dtype != source[name].dtype:
            tensor.data = tensor.data.to(source[name].dtype)
    return trunk


class LatentRewardModel(nn.Module):
    """Time-dependent reward on noisy latents; implements :class:`guidance.rewards.RewardFunction`."""

    def __init__(
        self,
        family: PipelineFamily,
        objectives: Sequence[str],
        num_blocks: int = 2,
        num_queries: int = 4,
        head_hidden: int = 256,
        copy_weights: bool = True,
    ) -> None:
        super().__init__()
        objectives = tuple(objectives)
        if not objectives or len(set(objectives)) != len(objectives) or not all(o.isidentifier() for o in objectives):
            raise ValueError(f"objectives must be unique identifiers like vq,mq,ta; got {list(objectives)}")
        available = len(getattr(family.transformer, family.block_lists[0]))
        if not 1 <= num_blocks <= available:
            raise ValueError(f"blocks must be between 1 and {available} for this transformer; got {num_blocks}")
        self.family = family
        self.objectives = objectives
        self.num_blocks = num_blocks
        self.fingerprint = transformer_fingerprint(family.name, family.transformer)
        self.transformer_config = _public_config(family.transformer)
        self.num_train_timesteps = int(family.pipe.scheduler.config.num_train_timesteps)
        self.trunk = _build_trunk(family, self.transformer_config, num_blocks)
        if copy_weights:
            missing, _ = self.trunk.load_state_dict(family.transformer.state_dict(), strict=False)
            if missing:
                raise RuntimeError(f"trunk parameters not found in the transformer: {missing[:5]}")
        config = family.transformer.config
        dim = config.num_attention_heads * config.attention_head_dim
        self.head = QueryPoolingHead(dim, len(objectives), num_queries, config.num_attention_heads, head_hidden)
        self.head_config = {"num_queries": num_queries, "hidden": head_hidden}
        #: Recommended guidance settings for this reward (``reward_config.json``, written by ``nrg eval --tune``).
        self.guidance_defaults: GuidanceDefaults = BUILTIN_DEFAULTS
        #: Scores' mean and std on the model's unguided samples, when measured (``nrg eval --calibrate``).
        self.calibration: RewardCalibration | None = None

    def train(self, mode: bool = True) -> LatentRewardModel:
        """Eval mode (guidance) checkpoints the trunk's blocks; train mode does not: training batches are
        small, and its gradient-correlation penalty differentiates twice (``create_graph``), which a
        checkpoint's recomputation does not reproduce."""
        super().train(mode)
        if mode:
            self.trunk.disable_gradient_checkpointing()
        else:
            self.trunk.enable_gradient_checkpointing()
        return self

    def trunk_tokens(self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning, shape: VideoShape):
        """Video tokens [B, L, D] after the N-th block.

        The hook lives only for this call: a checkpointed block runs again in the backward, and that
        recomputation must not overwrite (or, as an early-exit exception once did, abort) anything.
        """
        timestep = t.to(latents.device, torch.float32) * self.num_train_timesteps
        captured: list[torch.Tensor] = []

        def capture(module: nn.Module, args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)

        last_block = getattr(self.trunk, self.family.block_lists[0])[self.num_blocks - 1]
        handle = last_block.register_forward_hook(capture)
        try:
            self.family.predict(self.trunk, latents, timestep, cond, shape)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError("the trunk's last block never ran; the family adapter's predict skipped it")
        return captured[-1]

    def forward(
        self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning, shape: VideoShape
    ) -> torch.Tensor:
        t = t.reshape(-1).to(latents.device).expand(latents.shape[0])
        return self.head(self.trunk_tokens(latents, t, cond, shape), t)

    def config_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "objectives": list(self.objectives),
            "family": self.family.name,
            "num_blocks": self.num_blocks,
            "head": self.head_config,
            "fingerprint": self.fingerprint,
            "transformer_class": type(self.family.transformer).__name__,
            "transformer_config": self.transformer_config,
            "guidance_defaults": self.guidance_defaults.to_json(),
            **({"calibration": self.calibration.to_json()} if self.calibration is not None else {}),
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write config and weights (safetensors) to ``out_dir``; the weights file is replaced atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2, default=str))
        tmp = out / (WEIGHTS_NAME + ".tmp")
        save_model(self, str(tmp))
        tmp.replace(out / WEIGHTS_NAME)
        return out


def read_reward_config(path: str | Path) -> dict[str, Any]:
    config_file = Path(path) / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a reward model directory: {config_file} does not exist")
    config = json.loads(config_file.read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{config_file}: unsupported format_version {config.get('format_version')!r}")
    return config


@dataclass(frozen=True)
class RewardCalibration:
    """What a reward model's raw scores mean: their mean and spread on the model's own unguided samples.

    Raw scores have no unit (a Bradley-Terry head is defined up to a shift and scale), so a user
    cannot tell whether 0.3 is good. ``z = (r - mean) / std`` says how many standard deviations a
    clip sits above a typical unguided sample of the same model: 0 is typical, +1 better than ~84%.
    """

    mean: dict[str, float]
    std: dict[str, float]
    samples: int
    source: str

    def z_scores(self, rewards: dict[str, float]) -> dict[str, float]:
        return {k: (v - self.mean[k]) / self.std[k] for k, v in rewards.items() if k in self.mean and self.std[k] > 0}

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "samples": self.samples, "source": self.source}

    @classmethod
    def from_scores(cls, objectives: Sequence[str], scores: torch.Tensor, source: str) -> RewardCalibration:
        """From final-latent scores [N, K] of unguided samples (N >= 2)."""
        if scores.ndim != 2 or scores.shape[0] < 2 or scores.shape[1] != len(objectives):
            raise ValueError(f"calibration needs scores [N >= 2, {len(objectives)}]; got {list(scores.shape)}")
        mean, std = scores.float().mean(0).tolist(), scores.float().std(0).tolist()
        return cls(dict(zip(objectives, mean)), dict(zip(objectives, std)), int(scores.shape[0]), source)

    @classmethod
    def from_json(cls, data: dict[str, Any], objectives: Sequence[str], where: str) -> RewardCalibration:
        try:
            calibration = cls({k: float(data["mean"][k]) for k in objectives},
                              {k: float(data["std"][k]) for k in objectives}, int(data["samples"]),
                              str(data.get("source", where)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: calibration needs mean and std for {list(objectives)} and samples; "
                             f"missing or bad {exc}") from None
        return calibration


def _update_config(path: str | Path, key: str, value: dict[str, Any]) -> Path:
    """Set one entry of a saved reward model's config (atomically)."""
    config_file = Path(path) / CONFIG_NAME
    config = read_reward_config(path)
    config[key] = value
    tmp = config_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2, default=str))
    tmp.replace(config_file)
    return config_file


def write_guidance_defaults(path: str | Path, defaults: GuidanceDefaults) -> Path:
    """Store recommended guidance settings in a saved reward model's config."""
    return _update_config(path, "guidance_defaults", defaults.to_json())


def write_calibration(path: str | Path, calibration: RewardCalibration) -> Path:
    """Store a reward model's calibration in its saved config."""
    return _update_config(path, "calibration", calibration.to_json())


def load_reward_model(path: str | Path, family: PipelineFamily) -> LatentRewardModel:
    """Load a saved reward model onto ``family``'s pipeline, checking it was built for it.

    Like :func:`init_reward_model`, it returns the model ready for inference (eval mode, no
    parameter gradients); training code switches to train mode and enables gradients itself.
    """
    config = read_reward_config(path)
    if config["family"] != family.name:
        raise ValueError(
            f"reward model at {path} was built for the {config['family']} family; this pipeline is {family.name}"
        )
    fingerprint = transformer_fingerprint(family.name, family.transformer)
    if config["fingerprint"] != fingerprint:
        raise ValueError(
            f"reward model at {path} was built for another {family.name} transformer configuration "
            f"(fingerprint {config['fingerprint']}, this pipeline's is {fingerprint}); "
            "train or init a reward model for this model"
        )
    model = LatentRewardModel(
        family, config["objectives"], config["num_blocks"], config["head"]["num_queries"], config["head"]["hidden"],
        copy_weights=False,
    )
    load_model(model, str(Path(path) / WEIGHTS_NAME), device=str(family.device))
    if "guidance_defaults" in config:
        model.guidance_defaults = GuidanceDefaults.from_json(config["guidance_defaults"], str(Path(path) / CONFIG_NAME))
    if "calibration" in config:
        model.calibration = RewardCalibration.from_json(config["calibration"], model.objectives,
                                                        str(Path(path) / CONFIG_NAME))
    return model.to(family.device).eval().requires_grad_(False)


def init_reward_model(
    family: PipelineFamily, objectives: Sequence[str], num_blocks: int = 2, seed: int = 0
) -> LatentRewardModel:
    """An untrained reward model for ``family``: copied trunk, randomly initialised head.

    Returned in the same state as :func:`load_reward_model` (eval mode, no parameter gradients): a
    reward model this module hands out is ready for inference, whichever way it was made. PyTorch
    takes other kernels in train mode or with gradients on (attention's fast path among them), so two
    modes would give outputs that differ in the last bits for the same weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LatentRewardModel(family, objectives, num_blocks)
    return model.to(family.device).eval().requires_grad_(False)
