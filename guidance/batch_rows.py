"""The per-row state of a running batch, kept in step so rows can join, leave or be copied mid-run.

A row is one trajectory. Usually each of the caller's samples is one row; the search modes
(``guidance.search``) run several rows, its particles, for one sample, drop all but the best
(best-of-N) or copy the fittest (Feynman-Kac resampling). ``ids[row]`` names the caller's sample a
row belongs to, so the same id may appear on several rows until the search picks one.

Every per-row value lives here, tensors on the device and host lists side by side, so that
``take`` (leave, copy) and ``extend`` (join) keep them aligned: a row's schedule, its position in
it, its guidance coefficients and its generator travel with its latents.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import torch

from guidance.families.base import TextConditioning
from guidance.nrg import GuidanceSpec
from guidance.schedule import Schedule

#: The per-row tensors that ``take`` indexes and ``extend`` concatenates (dim 0 is the row).
ROW_TENSORS = ("latents", "cfg", "weights", "skipped", "guided", "first_nonfinite", "log_weights", "last_scores")
#: The per-row host lists, likewise.
ROW_LISTS = ("ids", "guidance", "generators", "schedules", "coefs", "steps_done", "adapters", "adapter_scales",
             "cache_thresholds")


@dataclass
class BatchRows:
    ids: list[Hashable]  # the caller's sample ids; repeated for the particles of one sample
    latents: torch.Tensor
    cond: TextConditioning
    uncond: TextConditioning | None  # rows for ``cfg_rows`` only
    cfg_rows: list[int]  # local rows that run an unconditional pass
    cfg: torch.Tensor  # [B]; 1.0 for samples without CFG
    weights: torch.Tensor  # [B, K]
    guidance: list[GuidanceSpec | None]
    generators: list[torch.Generator]  # one per caller's sample, shared by its particles
    schedules: list[Schedule]
    #: Per row, its guidance coefficient at every step of its schedule (``Schedule.coefficients``).
    coefs: list[tuple[float, ...]]
    #: Per row, the steps it has taken: its next step is ``schedules[row].*[steps_done[row]]``.
    steps_done: list[int]
    #: Per row, its LoRA adapter's index in the batch's ``MultiLora`` (-1: none) and its scale.
    adapters: list[int]
    adapter_scales: list[float]
    #: Per row, its first-block cache threshold (``guidance.step_cache``; 0: every block, always).
    cache_thresholds: list[float]
    skipped: torch.Tensor  # [B] steps skipped for a non-finite gradient
    guided: torch.Tensor  # [B] steps actually guided
    first_nonfinite: torch.Tensor  # [B] first step with non-finite latents, 0 while finite
    #: Feynman-Kac state per particle: log importance weight and the reward it was last scored with.
    log_weights: torch.Tensor  # [B] float32
    last_scores: torch.Tensor  # [B] float32

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: list[int]) -> None:
        """Keep the rows listed, in that order; a row listed twice is copied (particle resampling)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.latents.device)
        if self.uncond is not None:
            position = {row: j for j, row in enumerate(self.cfg_rows)}
            picked = [(new, position[row]) for new, row in enumerate(rows) if row in position]
            self.uncond = self.uncond.select([j for _, j in picked]) if picked else None
            self.cfg_rows = [new for new, _ in picked]
        self.cond = self.cond.select(rows)
        for name in ROW_LISTS:
            values = getattr(self, name)
            setattr(self, name, [values[row] for row in rows])
        for name in ROW_TENSORS:
            setattr(self, name, getattr(self, name)[index])

    def keep(self, rows: Sequence[int]) -> None:
        """Drop every row not in ``rows`` (order preserved)."""
        self.take(sorted(set(rows)))

    def split(self, rows: Sequence[int]) -> BatchRows:
        """Move the rows listed (in order) out into a batch of their own; the rest stay here."""
        part = replace(self)
        part.take(list(rows))
        self.keep([row for row in range(len(self)) if row not in set(rows)])
        return part

    def extend(self, other: BatchRows) -> None:
        """Append ``other``'s rows (samples joining a running batch at a step boundary)."""
        offset = len(self)
        if other.uncond is not None:
            self.uncond = other.uncond if self.uncond is None else self.uncond.cat(other.uncond)
        self.cfg_rows = self.cfg_rows + [offset + row for row in other.cfg_rows]
        self.cond = self.cond.cat(other.cond)
        for name in ROW_LISTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ROW_TENSORS:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))

    def groups(self) -> dict[Hashable, list[int]]:
        """The rows of each sample still in the batch, samples in order of their first row."""
        rows: dict[Hashable, list[int]] = {}
        for row, sid in enumerate(self.ids):
            rows.setdefault(sid, []).append(row)
        return rows

    def first_rows(self) -> list[int]:
        """One row per sample still in the batch (its first), for reporting per sample."""
        return [rows[0] for rows in self.groups().values()]

    def noise_levels(self) -> list[float]:
        """Each row's noise level at its next step."""
        return [s.noise_levels[i] for s, i in zip(self.schedules, self.steps_done)]

    def finished_rows(self) -> list[int]:
        return [row for row, (s, i) in enumerate(zip(self.schedules, self.steps_done)) if i >= s.steps]
