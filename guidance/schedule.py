"""A sample's whole denoising schedule, handed over by its family once, before its first step.

The steppable batch (``guidance.batch_state``) runs rows that started at different times and with
different step counts, so nothing per step can be asked of the family's one, stateful scheduler.
Instead the family answers once per (steps, shape): every step's model timestep, noise level,
guidance ratio, Euler step size and denoiser. A step then only indexes these tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from guidance.nrg import DEFAULT_MAX_RATIO, GuidanceSpec, guidance_coefficients


@dataclass(frozen=True)
class Schedule:
    """Per step ``i`` of one sample: what its denoiser, reward and update need.

    ``timesteps`` are the model timesteps as the pipeline passes them (its scheduler's dtype), kept as
    Python numbers so a batch builds its ``[B]`` timestep tensor with one host-to-device copy. ``dt`` is
    ``None`` when the scheduler is not a plain flow Euler step: then the family's own ``scheduler_step``
    runs, its state is batched, and the batch can only start together (``joinable`` is False).
    """

    timesteps: tuple[float, ...]
    timestep_dtype: torch.dtype
    #: Noise level in [0, 1] (1 = pure noise): sigma for flow matching, t / T otherwise.
    noise_levels: tuple[float, ...]
    #: The factor that turns a reward gradient into a prediction offset (``PipelineFamily.guidance_ratio``).
    ratios: tuple[float, ...]
    dt: tuple[float, ...] | None
    #: Which of the family's denoisers runs each step (Wan 2.2 A14B switches experts mid-schedule).
    experts: tuple[int, ...]
    #: The index of this schedule's first step in the family's full schedule: 0, or where a
    #: video-to-video sample starts (:meth:`truncated`). A scheduler's own step is told the full index.
    start: int = 0

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    @property
    def joinable(self) -> bool:
        """Whether a sample on this schedule can join or leave a running batch between steps."""
        return self.dt is not None

    def truncated(self, start: int) -> Schedule:
        """The steps from ``start`` on (video-to-video: diffusers' ``get_timesteps`` keeps
        ``timesteps[start:]``); every table is the full schedule's, so the noise levels, step sizes and
        guidance window a truncated sample sees are those of the full one below its start."""
        if start == 0:
            return self
        if not 0 < start < self.steps:
            raise ValueError(f"a schedule of {self.steps} steps cannot start at step {start}")
        return Schedule(
            timesteps=self.timesteps[start:], timestep_dtype=self.timestep_dtype,
            noise_levels=self.noise_levels[start:], ratios=self.ratios[start:],
            dt=None if self.dt is None else self.dt[start:], experts=self.experts[start:],
            start=self.start + start,
        )

    def coefficients(self, spec: GuidanceSpec | None, max_ratio: float = DEFAULT_MAX_RATIO) -> tuple[float, ...]:
        """The sample's guidance coefficient at every step, computed once when it joins a batch."""
        return tuple(
            guidance_coefficients([spec], level, ratio, max_ratio)[0]
            for level, ratio in zip(self.noise_levels, self.ratios)
        )
