"""Gradient-free steering with the request's reward: best-of-N with early pruning, and Feynman-Kac.

A sample in mode ``best_of_n`` or ``fk`` runs as ``particles`` rows of the batch, drawn from its own
generator one after the other (so its first particle is the unguided sample of the same seed). The
time-dependent reward scores them on the request's weighted objectives, no gradient taken:

* ``best_of_n`` scores its particles once, at the first step whose noise level is at or below the
  middle of the window, and continues only the best: the cost is ``particles`` denoiser passes per
  step up to there and one after.
* ``fk`` (Feynman-Kac steering) scores them at every step inside the window, adds
  ``strength * (r_t - r_previous)`` to each particle's log weight (the potentials telescope to
  exp(strength * r)), and when the effective sample size drops below half the particles it resamples
  them multinomially from the sample's own generator. It costs ``particles`` passes per step.

At the end, a sample with several rows left keeps the one with the best final weighted reward.
Rows only leave or are copied between steps, which a plain Euler scheduler allows; the search modes
therefore need a flow-matching family (a multistep scheduler keeps batched history).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from guidance.batch_rows import BatchRows
from guidance.families.base import PipelineFamily, VideoShape
from guidance.nrg import GuidanceSpec
from guidance.rewards import RewardFunction


def particle_rows(guidance: Sequence[GuidanceSpec | None]) -> list[int]:
    """The batch's rows at the start: each sample's position, once per particle."""
    return [i for i, spec in enumerate(guidance)
            for _ in range(spec.particles if spec is not None and spec.search else 1)]


def check_searchable(family: PipelineFamily, guidance: Sequence[GuidanceSpec | None]) -> None:
    for i, spec in enumerate(guidance):
        if spec is not None and spec.search and not family.euler_scheduler:
            raise ValueError(f"sample {i}: mode {spec.mode} needs a flow-matching family (an Euler scheduler); "
                             f"{family.name} uses a multistep scheduler")


def _due(spec: GuidanceSpec, level: float) -> bool:
    lo, hi = spec.window
    if level >= 1.0:
        return False
    if spec.mode == "best_of_n":
        return level <= (lo + hi) / 2
    return lo <= level <= hi


def weighted_scores(reward: RewardFunction, state: BatchRows, rows: list[int], levels: Sequence[float],
                    shape: VideoShape) -> torch.Tensor:
    """sum_k w_k r_k of the listed rows, each at its noise level in ``levels`` (one per batch row),
    float32 [len(rows)]."""
    index = torch.tensor(rows, dtype=torch.long, device=state.latents.device)
    t = torch.tensor([levels[row] for row in rows], dtype=torch.float32, device=state.latents.device)
    scores = reward(state.latents[index].float(), t, state.cond.select(rows), shape).float()
    return (scores * state.weights[index]).sum(dim=1)


def due_particles(state: BatchRows) -> dict[Hashable, list[int]]:
    """The rows of every sample whose particles are scored at its next step's noise level (what
    :func:`select` scores, so what a step's scoring is charged to). A sample's particles share its
    schedule, so they are always at the same step."""
    levels = state.noise_levels()
    return {sid: rows for sid, rows in state.groups().items()
            if len(rows) > 1 and _due(state.guidance[rows[0]], levels[rows[0]])}


def select(state: BatchRows, reward: RewardFunction, shape: VideoShape,
           due: dict[Hashable, list[int]]) -> list[Hashable]:
    """Prune or resample the particles of the samples ``due`` (:func:`due_particles`). Returns the sample
    of each row the reward scored (a sample once per particle), which the batch counts as cost."""
    if not due:
        return []
    levels = state.noise_levels()
    groups = state.groups()
    scored = [row for rows in due.values() for row in rows]
    scored_ids = [state.ids[row] for row in scored]
    scores = weighted_scores(reward, state, scored, levels, shape)
    chosen: dict[Hashable, list[int]] = {}
    reset: set[Hashable] = set()
    start = 0
    for sid, rows in due.items():
        r, start = scores[start:start + len(rows)], start + len(rows)
        spec = state.guidance[rows[0]]
        if spec.mode == "best_of_n":
            chosen[sid] = [rows[int(r.argmax())]]
            continue
        index = torch.tensor(rows, device=state.latents.device)
        state.log_weights[index] += spec.strength * (r - state.last_scores[index])
        state.last_scores[index] = r
        w = torch.softmax(state.log_weights[index], dim=0)
        if float(1.0 / (w * w).sum()) < len(rows) / 2:
            picks = torch.multinomial(w.cpu(), len(rows), replacement=True, generator=state.generators[rows[0]])
            chosen[sid] = sorted(rows[int(p)] for p in picks)
            reset.add(sid)
    if chosen:
        state.take([row for sid, rows in groups.items() for row in chosen.get(sid, rows)])
    for sid in reset:  # resampled particles start again with equal weights
        state.log_weights[[row for row, s in enumerate(state.ids) if s == sid]] = 0.0
    return scored_ids


def finish(state: BatchRows, final_scores: torch.Tensor) -> list[int]:
    """Keep, for each sample with several rows left, the row of best final weighted reward; return
    the rows kept (to index what was computed for the old rows)."""
    rows = [group[int(final_scores[group].argmax())] if len(group) > 1 else group[0]
            for group in state.groups().values()]
    if len(rows) < len(state.ids):
        state.take(rows)
    return rows
