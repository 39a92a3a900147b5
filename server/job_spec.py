"""The typed request: what one job runs with, every default filled in, from the handler to the kernel.

The handler resolves a request body against the hosted model (``server.request_resolver``) into a
:class:`JobSpec`; the store keeps its JSON (:meth:`JobSpec.to_json`, the same keys the API reports);
the batching policy reads its :class:`BatchKey` and rows, the executor its :class:`SampleSpec`. A
request field is added here, in the schema that documents it, and where it is used, nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from guidance.nrg import SEARCH_MODES, GuidanceSpec
from guidance.sample_types import SampleSpec
from guidance.video_to_video import denoise_start

CheckpointKind = Literal["lora", "full"]
CHECKPOINT_KINDS: tuple[str, ...] = ("lora", "full")
#: Why a job without active guidance cannot ask for an unguided twin (the request's 400 says the same).
COMPARE_NEEDS_GUIDANCE = ("compare_unguided needs active reward_guidance (a nonzero weight and strength): "
                          "an unguided job has nothing to compare against its unguided twin")


@dataclass(frozen=True)
class CheckpointRef:
    """An aligned checkpoint a job runs with. A LoRA one is the job's own adapter at ``scale`` (applied
    per row, so jobs of any LoRA share the base model's batches); a full-weight one replaces the
    model's weights, so its jobs need batches of their own."""

    name: str
    kind: CheckpointKind
    #: The LoRA's strength: 0 the base model, 1 as trained; full weights have no scale (always 1).
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in CHECKPOINT_KINDS:
            raise ValueError(f"checkpoint kind must be one of {', '.join(CHECKPOINT_KINDS)}; got {self.kind!r}")
        if self.kind == "full" and self.scale != 1.0:
            raise ValueError(f"checkpoint_scale applies to LoRA checkpoints; {self.name!r} holds full weights")

    @property
    def per_row(self) -> bool:
        return self.kind == "lora"


#: The store's key of a job's ``input_reference`` image or video (one per job for now).
INPUT_REFERENCE_KEY = "input_reference"


@dataclass(frozen=True)
class InputReference:
    """The image an image-to-video job starts from, or the video a video-to-video job does, as the job
    records it: the key its bytes are stored under with the job (``server.store``), their sha256, and what
    the checks found (``server.input_reference``, ``server.input_video``). Never a path or URL from the
    client: the bytes come with the request and live in the store."""

    key: str
    sha256: str
    media_type: str
    width: int
    height: int
    size_bytes: int
    #: A video's frame count and frame rate from its header; None for an image.
    frames: int | None = None
    fps: float | None = None

    @property
    def is_video(self) -> bool:
        return self.media_type.startswith("video/")

    def to_json(self) -> dict[str, Any]:
        video = {"frames": self.frames, "fps": self.fps} if self.is_video else {}
        return {"key": self.key, "sha256": self.sha256, "media_type": self.media_type, "width": self.width,
                "height": self.height, "bytes": self.size_bytes, **video}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputReference:
        frames, fps = data.get("frames"), data.get("fps")
        return cls(key=str(data["key"]), sha256=str(data["sha256"]), media_type=str(data["media_type"]),
                   width=int(data["width"]), height=int(data["height"]), size_bytes=int(data["bytes"]),
                   frames=None if frames is None else int(frames), fps=None if fps is None else float(fps))


@dataclass(frozen=True)
class BatchKey:
    """What jobs must share to run as one batch. Prompts, seeds, CFG scales, guidance and LoRA
    adapters are per row; the model's weights, the video's shape and what scores the rows are not."""

    model: str
    #: The full-weight checkpoint the batch runs with; None for the base model (LoRA jobs included).
    weights: str | None
    width: int
    height: int
    frames: int
    #: The judge that steers the batch's rows, by search or by gradient (it stands in for the reward
    #: model); None otherwise.
    judge: str | None
    #: The step count, for batches whose samples must step together (static batching, multistep
    #: schedulers); None when samples of any step count share a batch.
    steps: int | None = None
    #: Where in that schedule they start (video-to-video starts part-way), likewise; None otherwise.
    start: int | None = None


@dataclass(frozen=True)
class JobSpec:
    """One job's effective settings (defaults resolved, seed drawn), as it runs and as it is reported."""

    model: str
    prompt: str
    width: int
    height: int
    num_frames: int
    fps: int
    seed: int
    num_inference_steps: int
    guidance_scale: float
    negative_prompt: str | None = None
    checkpoint: CheckpointRef | None = None
    guidance: GuidanceSpec | None = None
    #: Steers ``guidance`` instead of the reward model: ranks its particles in a search mode, or gives
    #: the gradient of its differentiable objectives in a gradient mode.
    judge: str | None = None
    #: Held-out judges that score the finished video.
    judges: tuple[str, ...] = field(default_factory=tuple)
    #: Where the job's outcome is POSTed (``server.webhooks``), checked against the operator's rules.
    webhook_url: str | None = None
    #: Image-to-video: the image the video starts from; video-to-video: the video it starts from (its
    #: bytes are stored with the job); None for text-to-video.
    input_reference: InputReference | None = None
    #: Video-to-video: the share of the schedule run from the noised video (``guidance.video_to_video``);
    #: None without a video.
    denoise_strength: float | None = None
    #: Also run the same request unguided in the job's batch and report the changes (``server.unguided_twin``).
    compare_unguided: bool = False
    #: First-block caching of the job's rows (``guidance.step_cache``): the request's threshold or its
    #: server's ``--step-cache``; None where the model has no step cache.
    step_cache_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.judge is not None and self.guidance is None:
            raise ValueError("reward_guidance.judge steers reward_guidance, which this job lacks")
        if self.compare_unguided and (self.guidance is None or not self.guidance.active):
            raise ValueError(COMPARE_NEEDS_GUIDANCE)
        if self.denoise_strength is not None and not (self.input_reference and self.input_reference.is_video):
            raise ValueError("denoise_strength applies to video-to-video: the job needs an input_reference video")

    @property
    def start_step(self) -> int:
        """The step of its schedule the job starts at: 0, or part-way for video-to-video."""
        return 0 if self.denoise_strength is None else denoise_start(self.num_inference_steps, self.denoise_strength)

    @property
    def denoise_steps(self) -> int:
        """The denoising steps the job runs: ``num_inference_steps``, fewer for video-to-video."""
        return self.num_inference_steps - self.start_step

    @property
    def seconds(self) -> str:
        """The clip's length as the API reports it (OpenAI's video object has it as a string)."""
        return f"{(self.num_frames - 1) / self.fps:g}"

    @property
    def rows(self) -> int:
        """Rows the job takes in every denoiser call: one per particle in the search modes, else one; and
        one more for its unguided twin (``compare_unguided``)."""
        own = self.guidance.particles if self.guidance is not None and self.guidance.search else 1
        return own + int(self.compare_unguided)

    @property
    def lora(self) -> CheckpointRef | None:
        """The job's own adapter: its checkpoint when that is a LoRA (applied per row), else None."""
        return self.checkpoint if self.checkpoint is not None and self.checkpoint.per_row else None

    @property
    def checkpoint_scale(self) -> float | None:
        """The LoRA's scale as the API reports it; None without a LoRA checkpoint."""
        return self.lora.scale if self.lora is not None else None

    @property
    def batch_weights(self) -> str | None:
        """The checkpoint the job's batch must have active: a full-weight one, else the base model."""
        return self.checkpoint.name if self.checkpoint is not None and self.lora is None else None

    def batch_key(self, step_together: bool = False) -> BatchKey:
        """``step_together``: the batch's samples take their steps together (static batching, or a
        scheduler that keeps batched history), so they must share a step count; otherwise each row
        carries its own schedule and samples of any step count share a batch."""
        steps = self.num_inference_steps if step_together else None
        start = self.start_step if step_together else None
        return BatchKey(self.model, self.batch_weights, self.width, self.height, self.num_frames, self.judge, steps,
                        start)

    def to_sample_spec(self) -> SampleSpec:
        lora = self.lora
        return SampleSpec(prompt=self.prompt, negative_prompt=self.negative_prompt, seed=self.seed,
                          cfg_scale=self.guidance_scale, guidance=self.guidance,
                          lora=lora.name if lora else None, lora_scale=lora.scale if lora else 1.0,
                          denoise_strength=self.denoise_strength, cache_threshold=self.step_cache_threshold or 0.0)

    def reward_guidance_json(self) -> dict[str, Any] | None:
        """The effective ``reward_guidance``, as the job reports it."""
        g = self.guidance
        if g is None:
            return None
        return {"weights": dict(g.weights), "strength": g.strength, "window": list(g.window), "mode": g.mode,
                "particles": g.particles if g.mode in SEARCH_MODES else None, "judge": self.judge}

    def to_json(self) -> dict[str, Any]:
        """The store's record: the API's request fields, effective values."""
        ref = self.checkpoint
        return {
            "model": self.model, "prompt": self.prompt, "negative_prompt": self.negative_prompt,
            "width": self.width, "height": self.height, "num_frames": self.num_frames, "fps": self.fps,
            "seconds": self.seconds, "seed": self.seed, "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale, "checkpoint": ref.name if ref else None,
            "checkpoint_kind": ref.kind if ref else None,
            "checkpoint_scale": self.checkpoint_scale,
            "reward_guidance": self.reward_guidance_json(), "judges": list(self.judges),
            "webhook_url": self.webhook_url, "compare_unguided": self.compare_unguided,
            "input_reference": self.input_reference.to_json() if self.input_reference else None,
            "denoise_strength": self.denoise_strength,
            "step_cache_threshold": self.step_cache_threshold,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSpec:
        """Read :meth:`to_json`'s record. Records written before ``checkpoint_kind`` was stored name a
        LoRA by having a ``checkpoint_scale``; those written before webhooks have no ``webhook_url``, those
        before image-to-video no ``input_reference``, those before unguided twins no ``compare_unguided``,
        those before video-to-video no ``denoise_strength``, and those before step caching no
        ``step_cache_threshold``."""
        name = data.get("checkpoint")
        ref = None
        if name is not None:
            scale = data.get("checkpoint_scale")
            kind = data.get("checkpoint_kind") or ("full" if scale is None else "lora")
            ref = CheckpointRef(name, kind, 1.0 if scale is None else float(scale))
        given = data.get("reward_guidance")
        guidance = None
        if given is not None:
            guidance = GuidanceSpec(dict(given["weights"]), float(given["strength"]),
                                    tuple(float(v) for v in given["window"]),
                                    given["mode"], **({"particles": given["particles"]} if given.get("particles")
                                                      else {}))
        return cls(model=data["model"], prompt=data["prompt"], width=data["width"], height=data["height"],
                   num_frames=data["num_frames"], fps=data["fps"], seed=data["seed"],
                   num_inference_steps=data["num_inference_steps"], guidance_scale=float(data["guidance_scale"]),
                   negative_prompt=data.get("negative_prompt"), checkpoint=ref, guidance=guidance,
                   judge=(given or {}).get("judge"), judges=tuple(data.get("judges") or ()),
                   webhook_url=data.get("webhook_url"), compare_unguided=bool(data.get("compare_unguided")),
                   input_reference=InputReference.from_json(data["input_reference"]) if data.get("input_reference")
                   else None,
                   denoise_strength=data.get("denoise_strength"),
                   step_cache_threshold=data.get("step_cache_threshold"))
