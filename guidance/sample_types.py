"""What a caller gives and gets per sample: the request (``SampleSpec``), the per-step report
(``SampleProgress`` from the steppable batch, ``StepEvent`` from ``sample()``) and the result.

Kept apart from the loop so the batch (``guidance.batch_state``), the loop (``guidance.sampler``) and
the checks on results (``guidance.output_checks``) share them without importing one another.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from guidance.nrg import GuidanceSpec

if TYPE_CHECKING:  # tensors only in annotations: the server's request types import this without torch
    import torch

    from guidance.row_time import RowSeconds


@dataclass(frozen=True)
class SampleSpec:
    """One sample of a batch. ``None`` fields take the family's defaults."""

    prompt: str
    negative_prompt: str | None = None
    seed: int = 0
    cfg_scale: float | None = None
    guidance: GuidanceSpec | None = None
    #: A LoRA adapter of the batch's ``MultiLora`` (by checkpoint name) and its scale: 0 is the base
    #: model exactly, 1 the adapter as trained; between and above interpolate or extrapolate.
    lora: str | None = None
    lora_scale: float = 1.0
    #: Image-to-video: the first frame to start from, a PIL image (RGB), which the family encodes as its
    #: image-to-video pipeline does (``PipelineFamily.encode_images``); None for text-to-video. Left
    #: out of comparisons and hashing (an image is neither).
    image: Any = field(default=None, compare=False, repr=False)
    #: Video-to-video (SDEdit, ``guidance.video_to_video``): the clip to start from, its frames as PIL
    #: images (RGB) at the video's size, one per output frame; the family encodes it with its VAE and
    #: noises it to ``denoise_strength``. None for text- and image-to-video. Left out of comparisons.
    video: Any = field(default=None, compare=False, repr=False)
    #: How much of the schedule a video's sample runs, in (0, 1]: None takes
    #: ``guidance.video_to_video.DEFAULT_DENOISE_STRENGTH``; only with a video.
    denoise_strength: float | None = None
    #: First-block caching (``guidance.step_cache``): a denoiser call of this sample runs only its first
    #: block when that block's residual moved by less than this fraction since its last full call, and
    #: reuses the rest; 0 runs every block. Needs the batch's ``StepCache``; search samples are never cached.
    cache_threshold: float = 0.0


@dataclass(frozen=True)
class StepEvent:
    """Reported by ``sample()`` after every step; ``rewards`` is [B, K] when the reward was evaluated
    at this step for some sample (guided there), with rows of nan for the samples it was not."""

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
    #: The samples' ids, one per returned row: positions in ``specs`` for ``sample()`` (all of them
    #: unless some were cancelled), the caller's ids for ``BatchState.pop_finished``.
    ids: list[Hashable]
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
    #: Per sample, the decodes its reward added to score it (search rankings and gradient steps, each
    #: a clean estimate's denoiser pass and VAE decode, and in a gradient mode a backward through both;
    #: at the end, one per particle that loses: the final score is of the returned video's own decode):
    #: 0 unless the reward ``decodes`` (a judge's).
    guidance_decodes: list[int] = field(default_factory=list)
    #: Per returned sample, its measured seconds and those of one unguided row of it in the same calls
    #: (``guidance.row_time``): their ratio is what guidance cost in time, not in passes.
    row_seconds: list[RowSeconds] = field(default_factory=list)
    #: Per sample, the denoiser calls (CFG halves each) whose blocks after the first the step cache skipped.
    cached_calls: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SampleProgress:
    """One sample after one step of a running batch (``BatchState.step``), as plain numbers."""

    id: Hashable
    #: Steps taken so far and in all, and the noise level of the step just taken.
    step: int
    steps: int
    t: float
    #: The reward of each objective at this step when the sample was guided here, else None.
    rewards: list[float] | None
    skipped: bool
