"""Request and response models of the video-jobs API (OpenAI Videos shape plus diffusion fields).

The request model is built per server from its :class:`Limits`, so the limits an operator sets at
start are both enforced and published in ``/openapi.json``. Every violation becomes a 400 that names
the field and the limit (see ``server.errors``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from guidance.nrg import DEFAULT_PARTICLES, MAX_PARTICLES
from guidance.video_to_video import DEFAULT_DENOISE_STRENGTH

SIZE_PATTERN = r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
MAX_WEBHOOK_URL_CHARS = 2048


def _not_a_boolean(value: Any) -> Any:
    # pydantic's lax mode reads true/false as 1/0; a boolean in a number field is a client bug.
    if isinstance(value, bool):
        raise ValueError(f"Input should be a number, not a boolean ({str(value).lower()})")
    return value


#: Marks a number field that refuses JSON booleans (form strings and numbers still convert).
NoBool = BeforeValidator(_not_a_boolean)


@dataclass(frozen=True)
class Limits:
    """Per-request size and work limits, configurable at start (``nrg serve --max-frames`` ...)."""

    max_frames: int = 129
    max_pixels: int = 1280 * 720
    max_steps: int = 100
    max_prompt_chars: int = 2000
    max_cfg: float = 50.0
    max_strength: float = 10000.0
    max_weight: float = 1000.0
    max_fps: int = 60
    max_body_bytes: int = 1 << 20
    #: Particles a search-mode request may ask for; at most guidance's own cap, ``MAX_PARTICLES``.
    max_particles: int = 8
    #: Largest per-request LoRA scale (``checkpoint_scale``): above 1 extrapolates the alignment.
    max_checkpoint_scale: float = 4.0
    #: Image-to-video (``input_reference``, ``server.input_reference``): the image file's bytes (a body
    #: that carries one may exceed ``max_body_bytes`` by this much, base64 included), its pixels (read from
    #: its header, before decoding), and how far (relative) its aspect ratio may be from the video's for
    #: it to be resized to the video's size.
    max_input_reference_bytes: int = 10 << 20
    max_input_reference_pixels: int = 4096 * 4096
    input_reference_aspect_tolerance: float = 0.05
    #: Video-to-video (``input_reference`` a video, ``server.input_video``): the pixels of each frame and
    #: the frames in the file, both read from the container's header before a frame is decoded (its bytes
    #: count against ``max_input_reference_bytes``, its aspect ratio against the tolerance above).
    max_input_video_pixels: int = 1920 * 1080
    max_input_video_frames: int = 1024

    def __post_init__(self) -> None:
        # A request the server accepted would fail in guidance's own check, after it was queued.
        if self.max_particles > MAX_PARTICLES:
            raise ValueError(f"max_particles (--max-particles) is {self.max_particles}; guidance runs at most "
                             f"{MAX_PARTICLES} particles (guidance.nrg.MAX_PARTICLES)")
        if not 0 <= self.input_reference_aspect_tolerance < 1:
            raise ValueError("input_reference_aspect_tolerance (--input-reference-aspect-tolerance) must be in "
                             f"[0, 1); got {self.input_reference_aspect_tolerance}")

    @property
    def max_upload_body_bytes(self) -> int:
        """The body limit of a POST /v1/videos that carries an image: ``max_body_bytes`` for its other
        fields plus the image as base64 (a data: URL; a multipart file part is smaller) and its framing."""
        return self.max_body_bytes + (self.max_input_reference_bytes + 2) // 3 * 4 + 4096


class RewardGuidance(BaseModel):
    """Flow-NRG settings of one request (see docs/guidance.md)."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, Annotated[float, NoBool]] = Field(
        default_factory=dict,
        description="Objective name -> weight lambda_k (names from GET /v1/models). Need not sum to 1.",
    )
    strength: Annotated[float | None, NoBool] = Field(
        None, ge=0, description="Guidance strength. Default: the reward model's recommended one (GET /v1/models)."
    )
    window: tuple[Annotated[float, NoBool], Annotated[float, NoBool]] | None = Field(
        None, description="Noise levels [t_lo, t_hi] in [0, 1] where guidance applies (1 = pure noise). "
                          "Default: the reward model's recommended window."
    )
    mode: Literal["relative", "sum", "unit", "best_of_n", "fk"] | None = Field(
        None, description="relative: each objective's push sized against the CFG term (the default); "
                          "sum: the paper's t/(1-t) rule on the weighted sum; "
                          "unit: that rule with unit-norm gradients; "
                          "best_of_n: run `particles` copies, keep the one the reward ranks first at mid-window; "
                          "fk: Feynman-Kac particles resampled on the reward (strength = lambda).",
    )
    particles: Annotated[int | None, NoBool] = Field(
        None, description=f"Copies run by modes best_of_n and fk (default {DEFAULT_PARTICLES}); each costs one "
                          "denoiser pass per step."
    )
    judge: str | None = Field(
        None, pattern=NAME_PATTERN,
        description="Steer by this judge (a name the operator registered with --judge) on the decoded clean "
                    "estimate instead of by the reward model; weights then name the judge's objectives. Works on "
                    "flow-matching models without a reward model. best_of_n / fk (the default mode becomes "
                    "best_of_n) rank their particles by it, with any objective; relative / sum / unit follow its "
                    "gradient through the VAE decoder and the denoiser, and may weight only the objectives the "
                    "judge differentiates (docs/judges.md): each guided step then costs a denoiser pass, a decode "
                    "and a backward through both.")

    @field_validator("window")
    @classmethod
    def _window_in_range(cls, window: tuple[float, float] | None) -> tuple[float, float] | None:
        if window is None:
            return None
        lo, hi = window
        if not (0.0 <= lo <= hi <= 1.0):
            raise ValueError(f"window must satisfy 0 <= t_lo <= t_hi <= 1; got [{lo}, {hi}]")
        return window


def build_request_model(limits: Limits) -> type[BaseModel]:
    """The POST /v1/videos body model with this server's limits baked into its fields."""

    class GuidanceWithLimits(RewardGuidance):
        strength: Annotated[float | None, NoBool] = Field(
            None, ge=0, le=limits.max_strength, allow_inf_nan=False,
            description=f"Guidance strength, 0..{limits.max_strength}. Default: the reward model's recommended one "
                        "(GET /v1/models).")

        particles: Annotated[int | None, NoBool] = Field(
            None, ge=2, le=limits.max_particles,
            description=f"Copies run by modes best_of_n and fk, 2..{limits.max_particles} (default "
                        f"{DEFAULT_PARTICLES}); each costs one denoiser pass per step.")

        @field_validator("weights")
        @classmethod
        def _weights_bounded(cls, weights: dict[str, float]) -> dict[str, float]:
            for name, value in weights.items():
                if not math.isfinite(value) or abs(value) > limits.max_weight:
                    raise ValueError(f"weights.{name} must be finite with |value| <= {limits.max_weight}; got {value}")
            return weights

    class VideoCreateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", title="VideoCreateRequest")

        model: str | None = Field(None, pattern=NAME_PATTERN, description="Registered model name; default: first.")
        prompt: str = Field(..., min_length=1, max_length=limits.max_prompt_chars, json_schema_extra={"pattern": r"\S"},
                            description="What to generate; at least one non-whitespace character.")
        negative_prompt: str | None = Field(None, max_length=limits.max_prompt_chars)
        size: str | None = Field(None, pattern=SIZE_PATTERN, description="WIDTHxHEIGHT; or width and height.")
        width: Annotated[int | None, NoBool] = Field(None, ge=1, le=8192)
        height: Annotated[int | None, NoBool] = Field(None, ge=1, le=8192)
        # At 1 fps, seconds + 1 frames: the bound keeps seconds * fps finite and is never the binding limit.
        seconds: Annotated[float | None, NoBool] = Field(
            None, gt=0, le=limits.max_frames - 1, allow_inf_nan=False,
            description="Clip length; frames = seconds * fps + 1, snapped to the model's grid.")
        num_frames: Annotated[int | None, NoBool] = Field(None, ge=1, le=limits.max_frames,
                                                          description="Exact frame count (wins over seconds).")
        fps: Annotated[int, NoBool] = Field(16, ge=1, le=limits.max_fps)
        seed: Annotated[int | None, NoBool] = Field(None, ge=0, le=2**63 - 1,
                                                    description="Default: random, reported on the job.")
        num_inference_steps: Annotated[int | None, NoBool] = Field(None, ge=1, le=limits.max_steps)
        guidance_scale: Annotated[float | None, NoBool] = Field(None, ge=0, le=limits.max_cfg, allow_inf_nan=False,
                                                                description="Classifier-free guidance scale.")
        reward_guidance: GuidanceWithLimits | None = None
        checkpoint: str | None = Field(None, pattern=NAME_PATTERN, description="Registered aligned checkpoint name.")
        checkpoint_scale: Annotated[float | None, NoBool] = Field(
            None, ge=0, le=limits.max_checkpoint_scale, allow_inf_nan=False,
            description="Strength of a LoRA checkpoint: 0 = base model, 1 = as trained (default), between and "
                        "above interpolate or extrapolate the alignment. LoRA checkpoints only.")
        judges: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(
            None, max_length=16,
            description="Held-out judges (names the operator registered with --judge) that score the finished "
                        "video; default: all of them, [] for none. Their figures are the job's judge_scores.")
        input_reference: str | None = Field(
            None,
            description="Image-to-video: the image the video starts from (its first frame), PNG, JPEG or WebP, at "
                        f"most {limits.max_input_reference_bytes} bytes and {limits.max_input_reference_pixels} "
                        "pixels, one frame. A file part of a multipart/form-data body (as the OpenAI SDK sends "
                        "it) or, in JSON, a data: URL (data:image/png;base64,...). Resized to the video's size "
                        "when its aspect ratio is within "
                        f"{limits.input_reference_aspect_tolerance:.0%} of the video's, else a 400. Only models "
                        "whose input_reference (GET /v1/models) is optional or required take one. "
                        "Video-to-video: an MP4 or WebM clip (H.264, HEVC, VP8, VP9 or AV1) instead, at most "
                        f"{limits.max_input_video_frames} frames of {limits.max_input_video_pixels} pixels, noised "
                        "to denoise_strength; its first (num_frames - 1) / fps seconds are used, resampled to fps "
                        "and resized like an image. Only models whose input_reference_video is true take one.",
            json_schema_extra={"format": "binary"})
        denoise_strength: Annotated[float | None, NoBool] = Field(
            None, gt=0, le=1, allow_inf_nan=False,
            description="Video-to-video: how much of the schedule runs, in (0, 1] (int(num_inference_steps * "
                        "denoise_strength) steps, from the noise level they start at): 1 ignores the video, lower "
                        f"keeps more of it. Default {DEFAULT_DENOISE_STRENGTH} with a video; only with one.")
        step_cache_threshold: Annotated[float | None, NoBool] = Field(
            None, ge=0, le=1, allow_inf_nan=False,
            description="First-block caching of this job's denoiser calls (Wan models on a server started with "
                        "--step-cache): a call runs only the transformer's first block when that block's residual "
                        "moved by less than this fraction since the job's last full call, reusing the rest. 0 runs "
                        "every block; default the server's --step-cache threshold. A value above 0 on a model "
                        "without a step cache is a 400.")
        compare_unguided: bool = Field(
            False,
            description="Also run this request without guidance (same prompt, seed, shape, steps, CFG scale and "
                        "checkpoint) as one more row of the job's batch, and report its figures (unguided) and "
                        "the objectives guidance pushed up whose reward rose while a held-out judge's objective "
                        "of the same name fell (reward_hacking). Costs one unguided sample (a row of --max-batch); "
                        "its video is not kept. Needs active reward_guidance.")
        webhook_url: str | None = Field(
            None, min_length=1, max_length=MAX_WEBHOOK_URL_CHARS,
            description="POSTed the job's outcome (video.completed, video.failed or video.cancelled), signed the "
                        "Standard Webhooks way, instead of polling. Only hosts the operator allows with "
                        "--webhook-allow, over https unless a rule allows http, and never a private, loopback or "
                        "link-local address the rule does not name; anything else is a 400.")

        @field_validator("seconds", mode="before")
        @classmethod
        def _seconds_from_string(cls, value: Any) -> Any:
            # OpenAI's SDK sends seconds as a string ("4").
            return value.strip() if isinstance(value, str) else value

        @field_validator("prompt")
        @classmethod
        def _prompt_not_blank(cls, value: str) -> str:
            if not value.strip():
                raise ValueError("prompt must contain a non-whitespace character; got only whitespace")
            return value

        @model_validator(mode="after")
        def _size_consistent(self) -> VideoCreateRequest:
            if self.size is not None:
                width, height = (int(v) for v in self.size.split("x"))
                if (self.width or width) != width or (self.height or height) != height:
                    raise ValueError("size disagrees with width/height")
                self.width, self.height = width, height
            if (self.width is None) != (self.height is None):
                raise ValueError("give both width and height (or size)")
            if self.width is not None and self.width * self.height > limits.max_pixels:
                raise ValueError(f"size {self.width}x{self.height} exceeds max_pixels {limits.max_pixels}")
            if self.num_frames is None and self.seconds is not None:
                frames = round(self.seconds * self.fps) + 1
                if frames > limits.max_frames:
                    raise ValueError(f"seconds * fps + 1 = {frames} frames exceeds max_frames {limits.max_frames}")
            return self

    return VideoCreateRequest


class VideoError(BaseModel):
    code: str
    message: str


class WebhookStatus(BaseModel):
    """Where the job's webhook stands: waiting (the job runs), pending (due or being retried), delivered,
    failed (attempts used up, the receiver answered 410 Gone, or the URL is no longer allowed)."""

    model_config = ConfigDict(from_attributes=True)

    status: Literal["waiting", "pending", "delivered", "failed"]
    attempts: int = Field(..., ge=0, description="Attempts made so far, the one in flight included.")
    last_error: str | None = Field(None, description="Why the last attempt did not deliver (e.g. HTTP 503).")


class InputReferenceInfo(BaseModel):
    """The image an image-to-video job started from, or the video a video-to-video job did, as the job
    recorded it (its bytes stay on the server)."""

    sha256: str
    media_type: str
    width: int
    height: int
    bytes: int
    frames: int | None = Field(None, description="A video's frame count, from its header (videos only).")
    fps: float | None = Field(None, description="A video's frame rate, from its header (videos only).")


class ObjectiveChange(BaseModel):
    """A job against its unguided twin on one objective: by the reward, and by a held-out judge's objective of
    the same name."""

    objective: str
    judge: str
    weight: float = Field(..., description="The job's weight on the objective: guidance pushed it up when > 0.")
    reward_change: float = Field(..., description="Guided minus unguided reward of the final latents.")
    judge_change: float = Field(..., description="Guided minus unguided score of the judge's objective.")
    hacked: bool = Field(..., description="Guidance pushed it up (weight > 0), the reward rose and the judge fell.")


class UnguidedTwin(BaseModel):
    """The figures of a job's unguided twin (compare_unguided) and the job's changes against it."""

    rewards: dict[str, float] | None = Field(None, description="The twin's reward of its final latents.")
    judge_scores: dict[str, dict[str, float]] | None = Field(
        None, description="The held-out judges' scores of the twin's video (the judges the job asked for).")
    changes: list[ObjectiveChange] = Field(
        default_factory=list, description="One per reward objective and judge that scores an objective of its "
                                          "name; empty when no judge does.")
    error: str | None = Field(None, description="Why the twin has no figures (its output was unusable).")


class VideoObject(BaseModel):
    """A video job, shaped like OpenAI's video object with the diffusion peers' extra fields."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled"]
    progress: int = Field(..., ge=0, le=100)
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
    checkpoint_scale: float | None = Field(None, description="The LoRA checkpoint's scale (LoRA checkpoints only).")
    reward_guidance: RewardGuidance | None = None
    compare_unguided: bool = Field(False, description="Whether the job runs and reports an unguided twin.")
    rewards: dict[str, float] | None = Field(None, description="Per-objective reward of the final latents.")
    rewards_z: dict[str, float] | None = Field(
        None, description="The same as z-scores against the model's unguided samples ((r - mean) / std; 0 is a "
                          "typical unguided clip), when the reward model is calibrated.")
    judge_scores: dict[str, dict[str, float]] | None = Field(
        None, description="Held-out scores of the finished video: {judge: {objective: score}}, higher is better, from "
                          "the operator's judges, which guidance did not optimise (unlike rewards).")
    guidance_skipped_steps: int | None = Field(None, description="Steps whose non-finite gradient was skipped.")
    unguided: UnguidedTwin | None = Field(
        None, description="With compare_unguided, once completed: the unguided twin's figures and the changes.")
    reward_hacking: list[ObjectiveChange] | None = Field(
        None, description="With compare_unguided: the objectives guidance pushed up whose reward rose while a "
                          "held-out judge's objective of the same name fell ([]: none). null: not compared, or "
                          "nothing could be judged (no judge scores an objective guidance pushed up, by name).")
    cost_vs_unguided: float | None = Field(
        None, description="Measured time of the job's rows / that of one unguided row of the same batch calls "
                          "(denoiser share per step + decode): 1 unguided, more for reward gradients and particles.")
    denoiser_passes: int | None = Field(None, description="Rows x steps the denoiser ran for the job (its particles "
                                                          "each; CFG's unconditional pass not counted).")
    guidance_decodes: int | None = Field(
        None, description="Decodes a judge added to steer this job (particle rankings and gradient steps, each with "
                          "a denoiser pass, and in a gradient mode a backward through both; one per particle that "
                          "loses at the end; the final score is of the returned video's own decode). 0 when a reward "
                          "model steers.")
    cached_denoiser_calls: int | None = Field(
        None, description="Denoiser calls of the job (CFG's halves each) whose blocks after the first the server's "
                          "step cache skipped (--step-cache): their first block had barely changed since the job's "
                          "last full call, so its later blocks' residual was reused. 0 without --step-cache.")
    batch_size: int | None = Field(None, description="Samples in the batch this job ran in.")
    queue_time_s: float | None = None
    inference_time_s: float | None = None
    encode_time_s: float | None = None
    peak_memory_mb: float | None = None
    webhook_status: WebhookStatus | None = Field(None, description="The job's webhook, if it gave a webhook_url.")
    input_reference: InputReferenceInfo | None = Field(
        None, description="Image-to-video: the image the video started from (its sha256, format and size); "
                          "video-to-video: the video (and its frame count and rate).")
    step_cache_threshold: float | None = Field(
        None, description="The job's first-block cache threshold (0: every block; null: no step cache).")
    denoise_strength: float | None = Field(
        None, description="Video-to-video: the share of the schedule that ran from the noised input video.")


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    family: str
    reward_objectives: list[str]
    checkpoints: list[dict[str, str]]
    defaults: dict[str, Any]
    #: What reward_guidance fields left out become (mode, strength, window, where they come from).
    reward_guidance_defaults: dict[str, Any] | None = None
    input_reference: Literal["none", "optional", "required"] = Field(
        "none", description="Image-to-video: whether requests may (optional), must (required) or may not (none) "
                            "give an input_reference image.")
    input_reference_video: bool = Field(
        False, description="Video-to-video: whether input_reference may be a video (MP4 or WebM), noised to "
                           "denoise_strength.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

