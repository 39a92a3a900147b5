"""A loaded pipeline with what serves it: its reward model, aligned checkpoints and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guidance.families.base import PipelineFamily, VideoShape
from guidance.rewards import RewardFunction


@dataclass
class HostedModel:
    name: str
    family: PipelineFamily
    reward: RewardFunction | None
    checkpoints: Any | None  # guidance.checkpoints.CheckpointRegistry
    default_shape: VideoShape
    default_steps: int
    #: First-block caching of its jobs' rows at the server's threshold (``guidance.step_cache.StepCache``).
    step_cache: Any | None = None

    def activate(self, checkpoint: str | None) -> None:
        if self.checkpoints is not None:
            self.checkpoints.activate(checkpoint)
