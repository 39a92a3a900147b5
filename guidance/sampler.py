"""The batched, guided sampling loop shared by every pipeline family, for library users.

``sample()`` runs one batch from start to finish: a thin loop over the steppable batch
(``guidance.batch_state.BatchState``), which holds what diffusers cannot do, i.e. per-sample CFG
scales, seeds, schedules and reward guidance inside one batch. The server steps a ``BatchState``
itself so requests can join and leave between steps; this loop gives the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

import torch
from tqdm.auto import tqdm

from guidance.batch_state import BatchState
from guidance.families.base import PipelineFamily, VideoShape
from guidance.multi_lora import MultiLora
from guidance.step_cache import StepCache
from guidance.nrg import DEFAULT_MAX_RATIO
from guidance.rewards import RewardFunction
from guidance.sample_types import SampleProgress, SampleResult, SampleSpec, StepEvent
from guidance.video_to_video import sample_start

__all__ = ["SampleProgress", "SampleResult", "SampleSpec", "StepEvent", "sample", "sample_with_states"]


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
    loras: MultiLora | None = None,
    step_cache: StepCache | None = None,
) -> SampleResult:
    """Generate one batch. With no active guidance this reproduces the family's pipeline call.

    ``cancelled`` is polled before every step and returns positions in ``specs`` to stop. A stopped
    sample leaves the batch at once when the scheduler is a plain Euler step (no per-sample state);
    with a multistep scheduler it rides along to the end (its history is batched) and is dropped
    then. The others are undisturbed either way; ``SampleResult.ids`` lists the samples returned.
    ``loras`` serves the samples' ``SampleSpec.lora`` adapters (``guidance.multi_lora``), ``step_cache``
    their ``SampleSpec.cache_threshold`` (``guidance.step_cache``).

    A video-to-video sample (``SampleSpec.video``) runs the last steps of the schedule only
    (``guidance.video_to_video``): it joins the batch at its first step, as a server's batch takes a
    newcomer, so every sample finishes at the last step.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    starts = [sample_start(spec, steps) for spec in specs]
    if len(set(starts)) > 1 and not family.euler_scheduler:
        raise ValueError(f"{family.name}'s scheduler keeps batched history, so the samples of one batch must start "
                         f"at the same step; their denoise_strength gives steps {sorted(set(starts))}")
    waiting: dict[int, list[int]] = {}
    for i, start in enumerate(starts):
        waiting.setdefault(start, []).append(i)
    first = min(waiting)
    batch = BatchState(family, shape, reward, max_ratio=max_ratio, loras=loras, step_cache=step_cache)
    stopped: set[int] = set()
    objectives = batch.objectives
    for step in tqdm(range(first, steps), disable=not progress, desc="denoise", unit="step"):
        if cancelled is not None:
            stopped |= set(cancelled())
            batch.remove(stopped)
        joining = [i for i in waiting.pop(step, []) if i not in stopped]
        if joining:
            batch.add([specs[i] for i in joining], steps, joining)
        if not batch or set(batch.ids) <= stopped:
            if any(i not in stopped for group in waiting.values() for i in group):
                continue  # every running sample was stopped; samples that start later remain
            return SampleResult(None, torch.empty(0), None, objectives, [], [], [], batch.timer.totals())
        report = batch.step()
        if on_step is not None:
            on_step(_event(report, step + 1, steps, len(objectives)))
    return _in_spec_order(batch.pop_finished(decode=decode))


def _in_spec_order(result: SampleResult) -> SampleResult:
    """The result's samples in the order of ``specs`` (samples that joined later come last otherwise)."""
    order = sorted(range(len(result.ids)), key=lambda row: result.ids[row])
    if order == list(range(len(order))):
        return result

    def rows(values: torch.Tensor | None) -> torch.Tensor | None:
        return None if values is None else values[torch.tensor(order, device=values.device)]

    def items(values: list) -> list:
        return [values[row] for row in order] if values else values

    return replace(result, frames=rows(result.frames), latents=rows(result.latents), rewards=rows(result.rewards),
                   ids=items(result.ids), skipped_steps=items(result.skipped_steps),
                   guided_steps=items(result.guided_steps), denoiser_passes=items(result.denoiser_passes),
                   nonfinite_steps=items(result.nonfinite_steps), guidance_decodes=items(result.guidance_decodes),
                   row_seconds=items(result.row_seconds), cached_calls=items(result.cached_calls))


def _event(report: list[SampleProgress], step: int, steps: int, objectives: int) -> StepEvent:
    """The per-sample report of one step as ``sample()``'s tensors (every sample is at this step)."""
    nan = [float("nan")] * objectives
    scored = any(p.rewards is not None for p in report)
    rewards = torch.tensor([p.rewards or nan for p in report]).reshape(len(report), objectives) if scored else None
    return StepEvent(step, steps, report[0].t, rewards, torch.tensor([p.skipped for p in report]),
                     [int(p.id) for p in report])


def sample_with_states(
    family: PipelineFamily, specs: Sequence[SampleSpec], shape: VideoShape, steps: int, window: tuple[float, float],
) -> tuple[SampleResult, torch.Tensor, list[float]]:
    """Unguided :func:`sample`, plus each sample's latents at the start of every step whose noise level
    lies in ``window``: (result, states [B, S, *latents] on the host, their noise levels [S]).

    These are the very states a reward model is queried on when it guides in that window, which
    forward-noising the final latents only approximates; preference data recording them
    (``guidance.train.preference_data``) trains a reward on what it will see.
    """
    batch = BatchState(family, shape)
    batch.add(specs, steps, range(len(specs)))
    states, levels, seen = [], [], []
    for _ in range(steps):
        rows = batch.rows
        level = rows.schedules[0].noise_levels[rows.steps_done[0]]
        seen.append(round(float(level), 3))
        if window[0] <= level <= window[1]:
            states.append(rows.latents.detach().float().cpu().clone())
            levels.append(float(level))
        batch.step()
    result = batch.pop_finished()
    if not states:
        raise ValueError(f"no step of the {steps}-step schedule has a noise level in the window {list(window)} (its "
                         f"levels: {seen}): use more steps or a wider window")
    return result, torch.stack(states, 1), levels

