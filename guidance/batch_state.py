"""The per-sample state of a running batch, kept in step so rows can leave, or be copied, mid-run.

A row is one trajectory. Usually each of the caller's samples is one row; the search modes
(``guidance.search``) run several rows, its particles, for one sample, drop all but the best
(best-of-N) or copy the fittest (Feynman-Kac resampling). ``ids[row]`` names the caller's sample a
row belongs to, so the same id may appear on several rows until the search picks one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from guidance.families.base import TextConditioning
from guidance.nrg import GuidanceSpec

#: The per-row tensors that ``take`` indexes (dim 0 is the row).
ROW_TENSORS = ("latents", "cfg", "weights", "skipped", "guided", "first_nonfinite", "log_weights", "last_scores")


@dataclass
class BatchState:
    ids: list[int]  # positions in the caller's ``specs``; repeated for the particles of one sample
    latents: torch.Tensor
    cond: TextConditioning
    uncond: TextConditioning | None  # rows for ``cfg_rows`` only
    cfg_rows: list[int]  # local rows that run an unconditional pass
    cfg: torch.Tensor  # [B]; 1.0 for samples without CFG
    weights: torch.Tensor  # [B, K]
    guidance: list[GuidanceSpec | None]
    generators: list[torch.Generator]  # one per caller's sample, shared by its particles
    skipped: torch.Tensor  # [B] steps skipped for a non-finite gradient
    guided: torch.Tensor  # [B] steps actually guided
    first_nonfinite: torch.Tensor  # [B] first step with non-finite latents, 0 while finite
    #: Per objective, whether some sample of the batch weights it: the others need no backward pass.
    used: list[bool]
    #: Feynman-Kac state per particle: log importance weight and the reward it was last scored with.
    log_weights: torch.Tensor  # [B] float32
    last_scores: torch.Tensor  # [B] float32

    def take(self, rows: list[int]) -> None:
        """Keep the rows listed, in that order; a row listed twice is copied (particle resampling)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.latents.device)
        if self.uncond is not None:
            position = {row: j for j, row in enumerate(self.cfg_rows)}
            picked = [(new, position[row]) for new, row in enumerate(rows) if row in position]
            self.uncond = self.uncond.select([j for _, j in picked]) if picked else None
            self.cfg_rows = [new for new, _ in picked]
        self.ids = [self.ids[row] for row in rows]
        self.guidance = [self.guidance[row] for row in rows]
        self.generators = [self.generators[row] for row in rows]
        self.cond = self.cond.select(rows)
        for name in ROW_TENSORS:
            setattr(self, name, getattr(self, name)[index])

    def keep(self, rows: list[int]) -> None:
        """Drop every row not in ``rows`` (order preserved)."""
        self.take(sorted(set(rows)))

    def groups(self) -> dict[int, list[int]]:
        """The rows of each sample still in the batch, samples in order of their first row."""
        rows: dict[int, list[int]] = {}
        for row, sid in enumerate(self.ids):
            rows.setdefault(sid, []).append(row)
        return rows

    def first_rows(self) -> list[int]:
        """One row per sample still in the batch (its first), for reporting per sample."""
        return [rows[0] for rows in self.groups().values()]
