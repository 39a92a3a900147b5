"""Video-to-video (SDEdit): a sample given a video starts part-way down its schedule.

The video's clean latents are noised to the noise level of the step the strength gives and the
remaining steps are sampled, as diffusers' ``WanVideoToVideoPipeline`` does: of ``steps`` steps,
``int(steps * strength)`` run, from step ``steps - int(steps * strength)`` of the same schedule
(its ``get_timesteps``). Strength 1 starts from pure noise (the video is ignored); lower strengths keep
more of the video.

Torch-free: the server's typed request (``server.job_spec``) computes the same start to report the
steps a job runs and to key batches whose rows must step together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guidance.families.base import PipelineFamily
    from guidance.sample_types import SampleSpec

#: The strength a video is noised to when a request names none: diffusers' ``WanVideoToVideoPipeline``
#: and ``CogVideoXVideoToVideoPipeline`` default (``strength=0.8``).
DEFAULT_DENOISE_STRENGTH = 0.8


def denoise_start(steps: int, strength: float) -> int:
    """The index of the first step a sample of this strength takes in its ``steps``-step schedule
    (diffusers' ``get_timesteps``: ``int(steps * strength)`` steps run). ``ValueError`` when the
    strength is outside (0, 1] or leaves no step to run."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"denoise_strength must be in (0, 1]; got {strength}")
    run = min(int(steps * strength), steps)
    if run < 1:
        raise ValueError(f"denoise_strength {strength:g} leaves no step of {steps}: num_inference_steps * "
                         f"denoise_strength must be at least 1 (int({steps} * {strength:g}) = 0)")
    return steps - run


def sample_start(spec: SampleSpec, steps: int) -> int:
    """Where a sample starts in its ``steps``-step schedule: 0 without a video, else its strength's
    start (``DEFAULT_DENOISE_STRENGTH`` when it names none)."""
    if spec.video is None:
        return 0
    strength = DEFAULT_DENOISE_STRENGTH if spec.denoise_strength is None else spec.denoise_strength
    return denoise_start(steps, strength)


def check_video_specs(family: PipelineFamily, specs: Sequence[SampleSpec]) -> None:
    """``ValueError`` naming the sample: a video for a model that cannot start from one, a video and an
    image together, or a strength without a video."""
    for i, spec in enumerate(specs):
        if spec.video is None:
            if spec.denoise_strength is not None:
                raise ValueError(f"sample {i}: denoise_strength applies to video-to-video; give a video")
            continue
        if not family.video_input:
            raise ValueError(f"sample {i}: this {family.label} model cannot start from a video (video-to-video "
                             "needs a flow-matching model that does not require an image)")
        if spec.image is not None:
            raise ValueError(f"sample {i}: give an image (image-to-video) or a video (video-to-video), not both")
        if len(spec.video) < 1:
            raise ValueError(f"sample {i}: the video has no frames")
