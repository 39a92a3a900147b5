"""Typed request and response models of the nrg-serve video-jobs API.

Response models accept fields they do not know (``extra="allow"``), so a newer server never breaks an
older client; the request models forbid unknown fields, so a typo fails here, before a round trip.
``tests/clients/python/test_contract.py`` checks both against a live server's ``/openapi.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "Event",
    "GeneratedVideo",
    "ModelInfo",
    "ModelList",
    "ObjectiveChange",
    "RewardGuidance",
    "RewardGuidanceParams",
    "UnguidedTwin",
    "Video",
    "VideoCreateParams",
    "VideoDeleted",
    "VideoError",
    "VideoList",
    "WebhookStatus",
]

#: Job statuses, as the server reports them in ``Video.status``.
ACTIVE_STATUSES = ("queued", "in_progress")
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
#: Event types that end an SSE stream.
TERMINAL_EVENTS = TERMINAL_STATUSES


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


# -- requests ---------------------------------------------------------------------------------------


class RewardGuidanceParams(BaseModel):
    """The ``reward_guidance`` object of a create request; unset fields take the server's defaults."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] | None = None
    strength: float | None = None
    window: tuple[float, float] | None = None
    #: "relative", "sum", "unit", "best_of_n" or "fk"; a plain string so that the server, which knows its
    #: modes, names a bad one.
    mode: str | None = None
    #: Copies run by the search modes best_of_n and fk.
    particles: int | None = None
    #: A judge of the server (``--judge``) that steers instead of the reward: it ranks the search modes'
    #: particles, and in a gradient mode gives the gradient of its differentiable objectives.
    judge: str | None = None


class VideoCreateParams(BaseModel):
    """The body of ``POST /v1/videos`` as the client sends it (``None`` fields are left out)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    prompt: str
    model: str | None = None
    negative_prompt: str | None = None
    size: str | None = None
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    num_frames: int | None = None
    fps: int | None = None
    seed: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    checkpoint: str | None = None
    checkpoint_scale: float | None = None
    reward_guidance: RewardGuidanceParams | None = None
    judges: list[str] | None = None
    #: Where the server POSTs the job's outcome (a host its operator allows); see ``verify_webhook``.
    webhook_url: str | None = None
    #: Image-to-video: the first frame as a ``data:`` URL (``create(input_reference=...)`` builds it);
    #: video-to-video: the clip (MP4 or WebM) to start from, likewise.
    input_reference: str | None = None
    #: Video-to-video: the share of the schedule run from the noised clip, in (0, 1] (server default 0.8).
    denoise_strength: float | None = None
    #: Also run the request unguided in the same batch and report the changes (``Video.unguided``).
    compare_unguided: bool | None = None
    #: First-block caching threshold of the job's denoiser calls, in [0, 1] (a server with ``--step-cache``).
    step_cache_threshold: float | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# -- responses --------------------------------------------------------------------------------------


class VideoError(_Response):
    code: str
    message: str


class InputReferenceInfo(_Response):
    """The image an image-to-video job started from, or the video a video-to-video job did, as the server
    recorded it."""

    sha256: str
    media_type: str
    width: int
    height: int
    bytes: int
    #: A video's frame count and frame rate, from its header (videos only).
    frames: int | None = None
    fps: float | None = None


class RewardGuidance(_Response):
    """The settings a job ran with: the request's, with the reward model's defaults filled in."""

    weights: dict[str, float] = Field(default_factory=dict)
    strength: float | None = None
    window: tuple[float, float] | None = None
    mode: str | None = None
    particles: int | None = None
    judge: str | None = None


class ObjectiveChange(_Response):
    """A job against its unguided twin on one objective: by the reward and by a held-out judge's objective of
    the same name. ``hacked``: guidance pushed it up (``weight`` > 0), the reward rose and the judge fell."""

    objective: str
    judge: str
    weight: float
    reward_change: float
    judge_change: float
    hacked: bool


class UnguidedTwin(_Response):
    """The figures of a job's unguided twin (``compare_unguided``) and the job's changes against it; ``error``
    says why there are none (the twin's output was unusable)."""

    rewards: dict[str, float] | None = None
    judge_scores: dict[str, dict[str, float]] | None = None
    changes: list[ObjectiveChange] = Field(default_factory=list)
    error: str | None = None


class WebhookStatus(_Response):
    """Where a job's webhook stands: waiting (the job runs), pending, delivered or failed."""

    status: str
    attempts: int = 0
    last_error: str | None = None


class Video(_Response):
    """A video job (``GET /v1/videos/{id}``)."""

    id: str
    object: str = "video"
    model: str
    #: queued | in_progress | completed | failed | cancelled (a plain string: new statuses never break parsing)
    status: str
    progress: int = 0
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str
    size: str
    seconds: str
    error: VideoError | None = None
    negative_prompt: str | None = None
    width: int
    height: int
    num_frames: int
    fps: int
    seed: int
    num_inference_steps: int
    guidance_scale: float
    checkpoint: str | None = None
    checkpoint_scale: float | None = None
    reward_guidance: RewardGuidance | None = None
    compare_unguided: bool = False
    rewards: dict[str, float] | None = None
    rewards_z: dict[str, float] | None = None
    #: Held-out judges' scores of the finished video: {judge: {objective: score}} (not optimised by guidance).
    judge_scores: dict[str, dict[str, float]] | None = None
    #: With ``compare_unguided``: the unguided twin's figures and the job's changes against it.
    unguided: UnguidedTwin | None = None
    #: With ``compare_unguided``: the changes flagged ``hacked`` ([] none); None when nothing could be judged
    #: (no held-out judge scores an objective guidance pushed up, by name) or the job did not compare.
    reward_hacking: list[ObjectiveChange] | None = None
    guidance_skipped_steps: int | None = None
    #: Measured time of the job's rows / that of one unguided row of the same batch calls.
    cost_vs_unguided: float | None = None
    #: Clean estimates a judge decoded to steer the job (each a denoiser pass and a VAE decode, and in a
    #: gradient mode a backward through both); 0 when a reward model steers.
    guidance_decodes: int | None = None
    #: Denoiser calls whose blocks after the first the server's step cache skipped (``--step-cache``).
    cached_denoiser_calls: int | None = None
    denoiser_passes: int | None = None
    batch_size: int | None = None
    queue_time_s: float | None = None
    inference_time_s: float | None = None
    encode_time_s: float | None = None
    peak_memory_mb: float | None = None
    #: The job's webhook, if it was created with a ``webhook_url``.
    webhook_status: WebhookStatus | None = None
    #: Image-to-video: the image the job started from (its sha256, format and size); video-to-video: the video.
    input_reference: InputReferenceInfo | None = None
    #: Video-to-video: the share of the schedule that ran from the noised video.
    denoise_strength: float | None = None
    #: The job's first-block cache threshold (0: every block); None where the model has no step cache.
    step_cache_threshold: float | None = None

    @property
    def done(self) -> bool:
        """True once the job has reached a terminal status (completed, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    @property
    def guided(self) -> bool:
        return self.reward_guidance is not None


class GeneratedVideo(Video):
    """What :meth:`Client.generate` returns: the completed job and where its file was written."""

    path: Path | None = None


class VideoList(_Response):
    object: str = "list"
    data: list[Video]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VideoDeleted(_Response):
    id: str
    object: str = "video.deleted"
    deleted: bool


class ModelInfo(_Response):
    """A hosted model (``GET /v1/models``): its family, reward objectives, checkpoints, defaults."""

    id: str
    object: str = "model"
    family: str
    reward_objectives: list[str] = Field(default_factory=list)
    checkpoints: list[dict[str, str]] = Field(default_factory=list)
    defaults: dict[str, Any] = Field(default_factory=dict)
    #: What ``reward_guidance`` fields left out become: mode, strength, window and their source.
    reward_guidance_defaults: dict[str, Any] | None = None
    #: Image-to-video: whether ``input_reference`` may ("optional"), must ("required") or may not ("none") be given.
    input_reference: str = "none"
    #: Video-to-video: whether ``input_reference`` may be a video (MP4 or WebM).
    input_reference_video: bool = False


class ModelList(_Response):
    object: str = "list"
    data: list[ModelInfo]


class Event(_Response):
    """One Server-Sent Event of ``GET /v1/videos/{id}/events``.

    ``type`` is queued, started, step, completed, failed or cancelled. ``step`` events carry ``step``,
    ``steps``, ``t`` (noise level, 1 = pure noise) and ``progress``, and ``rewards`` per objective at
    the steps where the reward model was evaluated; ``started`` carries ``batch_size``; ``completed``
    carries the job's result fields; ``failed`` and ``cancelled`` carry ``error``.
    """

    type: str
    id: str
    step: int | None = None
    steps: int | None = None
    t: float | None = None
    progress: int | None = None
    rewards: dict[str, float] | None = None
    rewards_z: dict[str, float] | None = None
    #: Held-out judges' scores of the finished video: {judge: {objective: score}} (not optimised by guidance).
    judge_scores: dict[str, dict[str, float]] | None = None
    unguided: UnguidedTwin | None = None
    reward_hacking: list[ObjectiveChange] | None = None
    batch_size: int | None = None
    error: VideoError | None = None
    guidance_skipped_steps: int | None = None
    cost_vs_unguided: float | None = None
    guidance_decodes: int | None = None
    cached_denoiser_calls: int | None = None
    denoiser_passes: int | None = None
    queue_time_s: float | None = None
    inference_time_s: float | None = None
    encode_time_s: float | None = None
    peak_memory_mb: float | None = None

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS
