"""The batched, guided sampling loop shared by every pipeline family.

One loop, any family: the family adapter supplies prompt encoding, noise, denoiser calls, scheduler
steps and decoding; this module supplies what diffusers cannot do, i.e. per-sample CFG scales,
seeds and reward guidance inside one batch, and the reward gradient of every step. Each step:

    denoiser (cond, and uncond for the samples that use CFG)
    -> reward scores and gradients on x_t (only when some sample is guided at this t)
    -> one fused guided step (``kernels.guided_step``): CFG, guidance, Euler update

A sample's result never depends on its batch-mates: noise comes from its own generator, prompts are
padded to a fixed length, and every per-sample number is a tensor indexed by sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape
from guidance.nrg import DEFAULT_MAX_RATIO, GuidanceSpec, guidance_coefficients
from guidance.rewards import RewardFunction, reward_and_gradients
from kernels.guided_step import guided_step


@dataclass(frozen=True)
class SampleSpec:
    """One sample of a batch. ``None`` fields take the family's defaults."""

    prompt: str
    negative_prompt: str | None = None
    seed: int = 0
    cfg_scale: float | None = None
    guidance: GuidanceSpec | None = None


@dataclass(frozen=True)
class StepEvent:
    """Reported after every step; ``rewards`` is [B, K] when the reward was evaluated at this step."""

    step: int
    steps: int
    t: float
    rewards: torch.Tensor | None
    skipped: torch.Tensor | None
    #: Positions in the caller's ``specs`` of the rows of ``rewards`` / ``skipped``.
    ids: list[int]


@dataclass
class SampleResult:
    frames: torch.Tensor | None  # float32 [B, F, H, W, 3] in [0, 1]; None when decode=False or all cancelled
    latents: torch.Tensor
    #: Reward of the final latents (t = 0), [B, K], when a reward was given.
    rewards: torch.Tensor | None
    objectives: tuple[str, ...]
    #: Positions in the caller's ``specs`` of the returned rows (all of them unless some were cancelled).
    ids: list[int]
    #: Steps per sample where guidance was wanted but skipped for a non-finite gradient.
    skipped_steps: list[int]
    guided_steps: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    #: Per sample, the first step (1-based) after which its latents held NaN or inf; 0 if none did.
    #: See ``guidance.output_checks``, which turns this and the frames into per-sample errors.
    nonfinite_steps: list[int] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_specs(specs: Sequence[SampleSpec], reward: RewardFunction | None) -> str:
    """Validate every sample's guidance; return the batch's combination mode."""
    if not specs:
        raise ValueError("a batch needs at least one sample")
    modes = set()
    for i, spec in enumerate(specs):
        if spec.cfg_scale is not None and not (spec.cfg_scale >= 0 and spec.cfg_scale < float("inf")):
            raise ValueError(f"sample {i}: cfg_scale must be a finite number >= 0; got {spec.cfg_scale!r}")
        if spec.guidance is None:
            continue
        if reward is None and spec.guidance.active:
            raise ValueError(f"sample {i}: reward guidance was requested but no reward model is loaded")
        spec.guidance.validate(reward.objectives if reward is not None else ())
        if spec.guidance.active:
            modes.add(spec.guidance.mode)
    if len(modes) > 1:
        raise ValueError("all guided samples of one batch must share the combination mode")
    return modes.pop() if modes else "sum"


@dataclass
class _Batch:
    """Per-sample state of a running batch, kept in step so samples can leave it mid-run."""

    ids: list[int]  # positions in the caller's ``specs``
    latents: torch.Tensor
    cond: TextConditioning
    uncond: TextConditioning | None  # rows for ``cfg_rows`` only
    cfg_rows: list[int]  # local rows that run an unconditional pass
    cfg: torch.Tensor  # [B]; 1.0 for samples without CFG
    weights: torch.Tensor  # [B, K]
    guidance: list[GuidanceSpec | None]
    generators: list[torch.Generator]
    skipped: torch.Tensor  # [B] steps skipped for a non-finite gradient
    guided: torch.Tensor  # [B] steps actually guided
    first_nonfinite: torch.Tensor  # [B] first step with non-finite latents, 0 while finite

    def keep(self, rows: list[int]) -> None:
        """Drop every sample whose local row is not in ``rows`` (order preserved)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.latents.device)
        kept = set(rows)
        if self.uncond is not None:
            self.uncond = self.uncond.select([j for j, row in enumerate(self.cfg_rows) if row in kept])
            self.cfg_rows = [rows.index(row) for row in self.cfg_rows if row in kept]
            if not self.cfg_rows:
                self.uncond = None
        self.ids = [self.ids[row] for row in rows]
        self.guidance = [self.guidance[row] for row in rows]
        self.generators = [self.generators[row] for row in rows]
        self.cond = self.cond.select(rows)
        for name in ("latents", "cfg", "weights", "skipped", "guided", "first_nonfinite"):
            setattr(self, name, getattr(self, name)[index])


def _start_batch(
    family: PipelineFamily, specs: Sequence[SampleSpec], shape: VideoShape, objectives: Sequence[str]
) -> _Batch:
    device = family.device
    cfg_scales = [family.default_cfg if s.cfg_scale is None else float(s.cfg_scale) for s in specs]
    cfg_rows = [i for i, c in enumerate(cfg_scales) if family.uses_cfg(c)]
    negatives = [s.negative_prompt or "" for s in specs] if cfg_rows else None
    cond, uncond = family.encode_prompts([s.prompt for s in specs], negatives)
    if uncond is not None and len(cfg_rows) < len(specs):
        uncond = uncond.select(cfg_rows)
    generators = [torch.Generator("cpu").manual_seed(int(s.seed)) for s in specs]
    guidance = [s.guidance for s in specs]
    zeros = [0.0] * len(objectives)
    return _Batch(
        ids=list(range(len(specs))),
        latents=family.prepare_latents(shape, generators),
        cond=cond,
        uncond=uncond,
        cfg_rows=cfg_rows,
        # A sample outside the CFG set gets uncond := cond and scale 1: exactly its cond prediction.
        cfg=torch.tensor([c if i in cfg_rows else 1.0 for i, c in enumerate(cfg_scales)], device=device),
        weights=torch.tensor([g.weight_vector(objectives) if g else zeros for g in guidance],
                             dtype=torch.float32, device=device).reshape(len(specs), len(objectives)),
        guidance=guidance,
        generators=generators,
        skipped=torch.zeros(len(specs), dtype=torch.long, device=device),
        guided=torch.zeros(len(specs), dtype=torch.long, device=device),
        first_nonfinite=torch.zeros(len(specs), dtype=torch.long, device=device),
    )


@torch.no_grad()
def sample(
    family: PipelineFamily,
    specs: Sequence[SampleSpec],
    shape: VideoShape,
    steps: int,
    reward: RewardFunction | None = None,
    *,
    max_ratio: float = DEFAULT_MAX_RATIO,
    on_step: Callable[[StepEvent], None] | None = None,
    cancelled: Callable[[], Collection[int]] | None = None,
    progress: bool = False,
    decode: bool = True,
) -> SampleResult:
    """Generate one batch. With no active guidance this reproduces the family's pipeline call.

    ``cancelled`` is polled before every step and returns positions in ``specs`` to stop. A stopped
    sample leaves the batch at once when the scheduler is a plain Euler step (no per-sample state);
    with a multistep scheduler it rides along to the end (its history is batched) and is dropped
    then. The others are undisturbed either way; ``SampleResult.ids`` lists the samples returned.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    family.check_shape(shape)
    mode = _check_specs(specs, reward)
    device = family.device
    objectives = reward.objectives if reward is not None else ()
    timings = {"encode_s": 0.0, "denoise_s": 0.0, "guidance_s": 0.0, "decode_s": 0.0}

    start = time.perf_counter()
    state = _start_batch(family, specs, shape, objectives)
    _sync(device)
    timings["encode_s"] = time.perf_counter() - start
    timesteps = family.set_timesteps(steps, shape)
    stopped: set[int] = set()
    no_grads: torch.Tensor | None = None

    for i, timestep in enumerate(tqdm(timesteps, disable=not progress, desc="denoise", unit="step")):
        if cancelled is not None:
            stopped |= set(cancelled())
            if stopped & set(state.ids) and family.euler_dt(i) is not None:
                state.keep([row for row, sid in enumerate(state.ids) if sid not in stopped])
                no_grads = None
            if not state.ids or stopped >= set(state.ids):
                break
        batch = len(state.ids)
        start = time.perf_counter()
        model = family.denoiser(timestep)
        pred_cond = family.predict(model, state.latents, timestep, state.cond, shape, i)
        pred_uncond = None
        if state.uncond is not None:
            rows = state.cfg_rows
            u = family.predict(model, state.latents[rows], timestep, state.uncond, shape, i)
            pred_uncond = u if len(rows) == batch else pred_cond.clone().index_copy_(
                0, torch.tensor(rows, device=device), u
            )
        _sync(device)
        timings["denoise_s"] += time.perf_counter() - start

        start = time.perf_counter()
        level = family.noise_level(i, timestep)
        coef_list = guidance_coefficients(state.guidance, level, family.guidance_ratio(i, timestep), max_ratio)
        unit_weights = torch.ones(batch, 1, device=device)
        scores = None
        if reward is not None and any(c != 0 for c in coef_list):
            t_vec = torch.full((batch,), level, dtype=torch.float32, device=device)
            scores, grads = reward_and_gradients(reward, state.latents, t_vec, state.cond, shape, state.weights, mode)
            step_weights = state.weights if mode == "unit" else unit_weights
        else:
            if no_grads is None:
                no_grads = torch.zeros_like(pred_cond).unsqueeze(1)
            grads, step_weights = no_grads, unit_weights
        coef = torch.tensor(coef_list, dtype=torch.float32, device=device)
        dt = family.euler_dt(i)
        out, stats = guided_step(
            pred_cond, grads, step_weights, coef,
            pred_uncond=pred_uncond, cfg_scale=state.cfg if pred_uncond is not None else None,
            x=state.latents if dt is not None else None,
            dt=torch.full((batch,), dt, device=device) if dt is not None else None,
            mode=mode,
        )
        state.latents = out if dt is not None else family.scheduler_step(
            out, timestep, state.latents, i, state.generators
        )
        state.skipped += stats.skipped.long()
        state.guided += ((coef != 0) & ~stats.skipped).long()
        # On the device, no host sync: read once at the end.
        bad = ~torch.isfinite(state.latents).flatten(1).all(1)
        state.first_nonfinite = torch.where(bad & (state.first_nonfinite == 0), i + 1, state.first_nonfinite)
        _sync(device)
        timings["guidance_s"] += time.perf_counter() - start
        if on_step is not None:
            on_step(StepEvent(i + 1, len(timesteps), level, scores, stats.skipped, list(state.ids)))

    if stopped & set(state.ids):
        state.keep([row for row, sid in enumerate(state.ids) if sid not in stopped])
    if not state.ids:
        return SampleResult(None, state.latents, None, tuple(objectives), [], [], [], timings)

    final_rewards = None
    if reward is not None:
        t_zero = torch.zeros(len(state.ids), device=device)
        final_rewards = reward(state.latents.float(), t_zero, state.cond, shape).float()
    frames = None
    if decode:
        start = time.perf_counter()
        frames = family.decode(state.latents, shape, state.generators)
        _sync(device)
        timings["decode_s"] = time.perf_counter() - start
    return SampleResult(
        frames=frames,
        latents=state.latents,
        rewards=final_rewards,
        objectives=tuple(objectives),
        ids=list(state.ids),
        skipped_steps=state.skipped.tolist(),
        guided_steps=state.guided.tolist(),
        timings=timings,
        nonfinite_steps=state.first_nonfinite.tolist(),
    )
