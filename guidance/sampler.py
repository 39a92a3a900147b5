"""The batched, guided sampling loop shared by every pipeline family.

One loop, any family: the family adapter supplies prompt encoding, noise, denoiser calls, scheduler
steps and decoding; this module supplies what diffusers cannot do, i.e. per-sample CFG scales,
seeds and reward guidance inside one batch, and the reward gradient of every step. Each step:

    particle selection of the search modes (``guidance.search``; only when some sample uses one)
    -> denoiser (cond, and uncond for the samples that use CFG)
    -> reward scores and gradients on x_t (only when some sample is guided at this t)
    -> one fused guided step (``kernels.guided_step``) per gradient mode present: CFG, guidance, Euler

A sample's result never depends on its batch-mates: noise comes from its own generator, prompts are
padded to a fixed length, and every per-sample number is a tensor indexed by sample.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from guidance import search
from guidance.batch_state import BatchState
from guidance.families.base import PipelineFamily, VideoShape
from guidance.nrg import DEFAULT_MAX_RATIO, GuidanceSpec, guidance_coefficients
from guidance.rewards import RewardFunction, reward_and_gradients
from kernels.guided_step import GuidedStepStats, guided_step


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
    #: Denoiser passes spent per returned sample: ``steps`` unguided or gradient-guided, more for the
    #: particles of the search modes (their cost, e.g. 4 particles pruned at mid-window ~ 2.5x).
    denoiser_passes: list[int] = field(default_factory=list)
    #: Per sample, the first step (1-based) after which its latents held NaN or inf; 0 if none did.
    #: See ``guidance.output_checks``, which turns this and the frames into per-sample errors.
    nonfinite_steps: list[int] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_specs(specs: Sequence[SampleSpec], reward: RewardFunction | None) -> None:
    """Validate every sample's guidance (``ValueError`` naming the sample)."""
    if not specs:
        raise ValueError("a batch needs at least one sample")
    for i, spec in enumerate(specs):
        if spec.cfg_scale is not None and not (spec.cfg_scale >= 0 and spec.cfg_scale < float("inf")):
            raise ValueError(f"sample {i}: cfg_scale must be a finite number >= 0; got {spec.cfg_scale!r}")
        if spec.guidance is None:
            continue
        if reward is None and spec.guidance.active:
            raise ValueError(f"sample {i}: reward guidance was requested but no reward model is loaded")
        try:
            spec.guidance.validate(reward.objectives if reward is not None else ())
        except ValueError as exc:
            raise ValueError(f"sample {i}: {exc}") from None


def _start_batch(
    family: PipelineFamily, specs: Sequence[SampleSpec], shape: VideoShape, objectives: Sequence[str]
) -> BatchState:
    """Encode the prompts, then draw the noise of every row (a search sample's particles one after the
    other from its own generator)."""
    device = family.device
    cfg_scales = [family.default_cfg if s.cfg_scale is None else float(s.cfg_scale) for s in specs]
    cfg_rows = [i for i, c in enumerate(cfg_scales) if family.uses_cfg(c)]
    negatives = [s.negative_prompt or "" for s in specs] if cfg_rows else None
    cond, uncond = family.encode_prompts([s.prompt for s in specs], negatives)
    if uncond is not None and len(cfg_rows) < len(specs):
        uncond = uncond.select(cfg_rows)
    guidance = [s.guidance for s in specs]
    zeros = [0.0] * len(objectives)
    vectors = [g.weight_vector(objectives) if g else zeros for g in guidance]
    batch = len(specs)
    state = BatchState(
        ids=list(range(batch)),
        latents=torch.empty(batch, 0, device=device),
        cond=cond,
        uncond=uncond,
        cfg_rows=cfg_rows,
        # A sample outside the CFG set gets uncond := cond and scale 1: exactly its cond prediction.
        cfg=torch.tensor([c if i in cfg_rows else 1.0 for i, c in enumerate(cfg_scales)], device=device),
        weights=torch.tensor(vectors, dtype=torch.float32, device=device).reshape(batch, len(objectives)),
        guidance=guidance,
        generators=[torch.Generator("cpu").manual_seed(int(s.seed)) for s in specs],
        skipped=torch.zeros(batch, dtype=torch.long, device=device),
        guided=torch.zeros(batch, dtype=torch.long, device=device),
        used=[any(v[k] != 0 for v in vectors) for k in range(len(objectives))],
        log_weights=torch.zeros(batch, device=device),
        last_scores=torch.zeros(batch, device=device),
        first_nonfinite=torch.zeros(batch, dtype=torch.long, device=device),
    )
    rows = search.particle_rows(guidance)
    if len(rows) > batch:
        state.take(rows)
    state.latents = family.prepare_latents(shape, state.generators)
    return state


def _guided_update(
    state: BatchState, modes: list[str], coef_list: list[float], coef: torch.Tensor, grads: torch.Tensor,
    weights: torch.Tensor, **step: torch.Tensor | None,
) -> tuple[torch.Tensor, GuidedStepStats]:
    """The fused guided step, once per gradient mode in ``modes`` (those of the guided rows; usually one).

    Unguided rows (coef 0) go with the first group: their output is the unguided step in any mode.
    """
    if len(modes) == 1:
        return guided_step(step.pop("pred_cond"), grads, weights, coef, mode=modes[0], **step)
    groups = {mode: [] for mode in modes}
    for row, (spec, c) in enumerate(zip(state.guidance, coef_list)):
        groups[spec.mode if c != 0 else modes[0]].append(row)
    out, norms, skipped = None, None, None
    for mode, rows in groups.items():
        index = torch.tensor(rows, device=state.latents.device)
        part = {name: None if value is None else value[index] for name, value in step.items()}
        out_m, stats = guided_step(part.pop("pred_cond"), grads[index], weights[index], coef[index], mode=mode,
                                   **part)
        if out is None:
            out = out_m.new_empty((len(coef_list), *out_m.shape[1:]))
            norms = stats.grad_norms.new_empty((len(coef_list), *stats.grad_norms.shape[1:]))
            skipped = stats.skipped.new_empty(len(coef_list))
        out[index], norms[index], skipped[index] = out_m, stats.grad_norms, stats.skipped
    return out, GuidedStepStats(grad_norms=norms, skipped=skipped)


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
    _check_specs(specs, reward)
    search.check_searchable(family, [s.guidance for s in specs])
    device = family.device
    objectives = reward.objectives if reward is not None else ()
    timings = {"encode_s": 0.0, "denoise_s": 0.0, "guidance_s": 0.0, "decode_s": 0.0}

    start = time.perf_counter()
    state = _start_batch(family, specs, shape, objectives)
    _sync(device)
    timings["encode_s"] = time.perf_counter() - start
    timesteps = family.set_timesteps(steps, shape)
    stopped: set[int] = set()
    passes: Counter[int] = Counter()
    no_grads: torch.Tensor | None = None  # the zero gradient of unguided steps, reused while the batch keeps its rows

    for i, timestep in enumerate(tqdm(timesteps, disable=not progress, desc="denoise", unit="step")):
        if cancelled is not None:
            stopped |= set(cancelled())
            if stopped & set(state.ids) and family.euler_dt(i) is not None:
                state.keep([row for row, sid in enumerate(state.ids) if sid not in stopped])
            if not state.ids or stopped >= set(state.ids):
                break
        level = family.noise_level(i, timestep)
        if reward is not None and len(state.ids) > len(set(state.ids)):
            start = time.perf_counter()
            search.select(state, reward, level, shape)
            timings["guidance_s"] += time.perf_counter() - start
        batch = len(state.ids)
        passes.update(state.ids)
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
        coef_list = guidance_coefficients(state.guidance, level, family.guidance_ratio(i, timestep), max_ratio)
        scores = None
        coef = torch.tensor(coef_list, dtype=torch.float32, device=device)
        guided_modes = list(dict.fromkeys(g.mode for g, c in zip(state.guidance, coef_list) if c != 0))
        if reward is not None and guided_modes:
            t_vec = torch.full((batch,), level, dtype=torch.float32, device=device)
            # One backward pass of the weighted sum when every guided row is in mode sum, else one per
            # weighted objective (the kernel normalises and weights them).
            grad_mode = "sum" if guided_modes == ["sum"] else "unit"
            scores, grads = reward_and_gradients(reward, state.latents, t_vec, state.cond, shape, state.weights,
                                                 grad_mode, used=state.used)
            step_weights = torch.ones(batch, 1, device=device) if grad_mode == "sum" else state.weights
        else:
            if no_grads is None or no_grads.shape[0] != batch:
                no_grads = torch.zeros_like(pred_cond).unsqueeze(1)
            grads, step_weights = no_grads, torch.ones(batch, 1, device=device)
        dt = family.euler_dt(i)
        out, stats = _guided_update(
            state, guided_modes or ["sum"], coef_list, coef, grads, step_weights,
            pred_cond=pred_cond, pred_uncond=pred_uncond, cfg_scale=state.cfg if pred_uncond is not None else None,
            x=state.latents if dt is not None else None,
            dt=torch.full((batch,), dt, device=device) if dt is not None else None,
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
            # One row per sample: a search sample's particles are reported by their first row.
            first = state.first_rows()
            on_step(StepEvent(i + 1, len(timesteps), level, None if scores is None else scores[first],
                              stats.skipped[first], [state.ids[row] for row in first]))

    if stopped & set(state.ids):
        state.keep([row for row, sid in enumerate(state.ids) if sid not in stopped])
    if not state.ids:
        return SampleResult(None, state.latents, None, tuple(objectives), [], [], [], timings)

    final_rewards = None
    if reward is not None:
        t_zero = torch.zeros(len(state.ids), device=device)
        final_rewards = reward(state.latents.float(), t_zero, state.cond, shape).float()
        final_rewards = final_rewards[search.finish(state, (final_rewards * state.weights).sum(dim=1))]
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
        denoiser_passes=[passes[sid] for sid in state.ids],
        nonfinite_steps=state.first_nonfinite.tolist(),
    )
