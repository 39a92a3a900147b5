"""A request body to a :class:`JobSpec`: the schema's checks, then what needs the hosted model.

The request model (``server.schema``) checks each field against the server's limits; what depends on
the model (its default shape and steps, its frame grid, its checkpoints, its reward model's
objectives and guidance defaults, the registered judges and which of their objectives a gradient mode
may weight) is checked here, once, and every default is filled in, so the spec is what the job runs
with and reports; so is a ``webhook_url``, against the operator's rules
(``server.webhooks.allow_rules``). Each failure is a 400 naming the field.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from guidance.families.base import VideoShape
from guidance.nrg import GuidanceDefaults, GuidanceSpec, builtin_strength, check_gradient_objectives, defaults_for
from guidance.video_to_video import DEFAULT_DENOISE_STRENGTH, denoise_start
from server.errors import APIError
from server.hosted_model import HostedModel
from server.input_reference import FIELD as INPUT_FIELD
from server.input_reference import CheckedInput, UploadedImage, check_image, decode_data_url
from server.input_video import check_video, is_video
from server.job_spec import COMPARE_NEEDS_GUIDANCE, CheckpointRef, JobSpec
from server.schema import Limits, build_request_model
from server.webhooks.allow_rules import WebhookPolicy, WebhookRefused, WebhookUnresolved

#: How long a request waits for its webhook_url's host to resolve before the 400.
WEBHOOK_DNS_TIMEOUT_S = 2.0
#: How far from the asked frame count (seconds * fps + 1) the nearest valid one is looked for.
FRAME_SEARCH_SPAN = 64


class RequestResolver:
    """Resolves POST /v1/videos bodies against the hosted models, the limits and the registered judges."""

    def __init__(self, models: Mapping[str, HostedModel], limits: Limits, judges: Sequence[str],
                 judge_objectives: Mapping[str, tuple[str, ...]],
                 judge_differentiable: Mapping[str, frozenset[str]] | None = None,
                 webhooks: WebhookPolicy | None = None) -> None:
        self.models = models
        #: Where webhooks may go; without rules, any webhook_url is refused.
        self.webhooks = webhooks or WebhookPolicy()
        self.limits = limits
        self.request_model = build_request_model(limits)
        self.judges = tuple(judges)
        #: The objectives of the judges loaded in this process, and those each differentiates (none in
        #: an API-only process, whose workers check them).
        self.judge_objectives = judge_objectives
        self.judge_differentiable = judge_differentiable or {}
        self.default_model = next(iter(models))

    def resolve(self, body: dict[str, Any]) -> JobSpec:
        """The job a request body asks for (its ``input_reference`` image checked and recorded, its bytes
        dropped: :meth:`resolve_with_inputs` keeps them for the store)."""
        return self.resolve_with_inputs(body)[0]

    def resolve_with_inputs(self, body: dict[str, Any]) -> tuple[JobSpec, dict[str, bytes]]:
        """The job and the input files to store with it (key -> bytes: its ``input_reference`` image or
        video). Decodes a video's frames to check them: handlers call it off the event loop."""
        body = dict(body)
        given = body.pop(INPUT_FIELD, None)
        spec, strength = self._resolve(body)
        if given is None:
            if self.models[spec.model].family.image_input == "required":
                raise APIError(400, f"model {spec.model} is image-to-video: give an input_reference image (its "
                               "first frame)", param=INPUT_FIELD, code="input_reference_required")
            _no_strength(strength, "give input_reference a video")
            return spec, {}
        checked = self._input_reference(spec, given)
        if not checked.reference.is_video:
            _no_strength(strength, "input_reference is an image")
            return replace(spec, input_reference=checked.reference), {checked.reference.key: checked.data}
        strength = DEFAULT_DENOISE_STRENGTH if strength is None else strength
        try:
            denoise_start(spec.num_inference_steps, strength)
        except ValueError as exc:
            raise APIError(400, str(exc), param="denoise_strength") from None
        return (replace(spec, input_reference=checked.reference, denoise_strength=strength),
                {checked.reference.key: checked.data})

    def _input_reference(self, spec: JobSpec, given: Any) -> CheckedInput:
        """The image or video checked by its module's rules; refused for models that take neither, and a
        video for models that cannot start from one."""
        hosted = self.models[spec.model]
        family = hosted.family
        if family.image_input == "none" and not family.video_input:
            raise APIError(400, f"model {spec.model} is text-to-video only ({family.label}); it takes no "
                           "input_reference image or video", param=INPUT_FIELD, code="input_reference_not_supported")
        if not isinstance(given, str | UploadedImage):
            raise APIError(400, "input_reference must be a file part (multipart/form-data) or a data: URL string",
                           param=INPUT_FIELD)
        upload = decode_data_url(given.strip(), self.limits) if isinstance(given, str) else given
        if is_video(upload):
            if not family.video_input:
                why = ("it is image-to-video: give an image (its first frame)" if family.image_input == "required"
                       else "video-to-video needs a flow-matching model")
                raise APIError(400, f"model {spec.model} ({family.label}) takes no input_reference video: {why}",
                               param=INPUT_FIELD, code="input_reference_not_supported")
            return check_video(upload, self.limits, spec.width, spec.height, spec.num_frames, spec.fps)
        if family.image_input == "none":
            raise APIError(400, f"model {spec.model} is text-to-video only ({family.label}); it takes no "
                           "input_reference image (a video, for video-to-video, yes)", param=INPUT_FIELD,
                           code="input_reference_not_supported")
        return check_image(upload, self.limits, spec.width, spec.height)

    def _resolve(self, body: dict[str, Any]) -> tuple[JobSpec, float | None]:
        """The job without its input (filled in by :meth:`resolve_with_inputs`), and the request's
        ``denoise_strength``, which applies only to a video input."""
        try:
            req = self.request_model.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            messages = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise APIError(400, messages, param=param) from None
        name = req.model or self.default_model
        if name not in self.models:
            raise APIError(400, f"unknown model {name!r}; available: {', '.join(self.models)}", param="model",
                           code="model_not_found")
        hosted = self.models[name]
        width, height, frames = self._shape(hosted, req)
        limits = self.limits
        steps = req.num_inference_steps or min(hosted.default_steps, limits.max_steps)
        checkpoint = self._checkpoint(name, hosted, req.checkpoint, req.checkpoint_scale)
        guidance, judge = (None, None) if req.reward_guidance is None else self._guidance(name, hosted,
                                                                                           req.reward_guidance)
        judges = list(self.judges) if req.judges is None else list(dict.fromkeys(req.judges))
        unknown = [j for j in judges if j not in self.judges]
        if unknown:
            raise APIError(400, f"unknown judge(s) {unknown}; registered: {', '.join(self.judges) or 'none'}",
                           param="judges", code="judge_not_found")
        if req.compare_unguided and (guidance is None or not guidance.active):
            raise APIError(400, COMPARE_NEEDS_GUIDANCE, param="compare_unguided")
        cfg = req.guidance_scale if req.guidance_scale is not None else hosted.family.default_cfg
        return JobSpec(
            model=name, prompt=req.prompt, negative_prompt=req.negative_prompt, width=width, height=height,
            num_frames=frames, fps=req.fps, seed=req.seed if req.seed is not None else secrets.randbelow(2**63),
            num_inference_steps=steps, guidance_scale=float(cfg),
            checkpoint=checkpoint,
            guidance=guidance, judge=judge, judges=tuple(judges), webhook_url=self._webhook_url(req.webhook_url),
            compare_unguided=req.compare_unguided,
            step_cache_threshold=self._step_cache_threshold(name, hosted, req.step_cache_threshold),
        ), req.denoise_strength

    @staticmethod
    def _step_cache_threshold(model: str, hosted: HostedModel, asked: float | None) -> float | None:
        """The job's cache threshold: the request's, else the server's; a model without a step cache runs
        every block (0 asked is that, anything above is refused)."""
        if hosted.step_cache is None:
            if asked:
                raise APIError(400, f"model {model} runs without a step cache (its server was started without "
                                    f"--step-cache): step_cache_threshold must be 0 or left out",
                               param="step_cache_threshold")
            return None
        return hosted.step_cache.threshold if asked is None else float(asked)

    def _webhook_url(self, url: str | None) -> str | None:
        """The URL, once the rules allow it and its host resolves to an address they allow. The handler
        waits for the lookup, so at most ``WEBHOOK_DNS_TIMEOUT_S`` (an address or a name in /etc/hosts:
        not at all); the deliverer looks again before every attempt."""
        if url is None:
            return None
        try:
            self.webhooks.check(url, dns_timeout_s=WEBHOOK_DNS_TIMEOUT_S)
        except WebhookRefused as exc:
            raise APIError(400, f"webhook_url: {exc}", param="webhook_url", code=exc.code) from None
        except WebhookUnresolved as exc:
            raise APIError(400, f"webhook_url: {exc}", param="webhook_url", code="invalid_webhook_url") from None
        return url

    def _shape(self, hosted: HostedModel, req: Any) -> tuple[int, int, int]:
        limits = self.limits
        width = req.width or hosted.default_shape.width
        height = req.height or hosted.default_shape.height
        if width * height > limits.max_pixels:
            raise APIError(400, f"size {width}x{height} exceeds max_pixels {limits.max_pixels}", param="size")
        if req.num_frames is not None:
            frames = req.num_frames
        elif req.seconds is not None:
            frames = _snap_frames(hosted, width, height, round(req.seconds * req.fps) + 1, limits.max_frames)
        else:
            frames = hosted.default_shape.frames
        if frames > limits.max_frames:
            raise APIError(400, f"num_frames {frames} exceeds max_frames {limits.max_frames}", param="num_frames")
        try:
            hosted.family.check_shape(VideoShape(height, width, frames))
        except ValueError as exc:
            field = str(exc).split()[0]
            raise APIError(400, str(exc), param={"frames": "num_frames"}.get(field, field)) from None
        return width, height, frames

    @staticmethod
    def _checkpoint(model: str, hosted: HostedModel, name: str | None, scale: float | None) -> CheckpointRef | None:
        if name is None:
            if scale is not None:
                raise APIError(400, "checkpoint_scale needs a checkpoint", param="checkpoint_scale")
            return None
        names = hosted.checkpoints.names if hosted.checkpoints is not None else []
        if name not in names:
            raise APIError(400, f"unknown checkpoint {name!r} for model {model}; registered: "
                           f"{', '.join(names) or 'none'}", param="checkpoint", code="checkpoint_not_found")
        if hosted.checkpoints.kind(name) == "lora":
            return CheckpointRef(name, "lora", 1.0 if scale is None else float(scale))
        if scale not in (None, 1.0):
            raise APIError(400, f"checkpoint_scale applies to LoRA checkpoints; {name!r} holds full weights",
                           param="checkpoint_scale")
        return CheckpointRef(name, "full")

    def _guidance(self, model: str, hosted: HostedModel, given: Any) -> tuple[GuidanceSpec, str | None]:
        """The effective guidance (defaults filled in) and the judge that steers it, if any: by ranking
        particles (the default, ``best_of_n``, which every judge can do) or, in a gradient mode, by its
        gradient through the decoder, on its differentiable objectives only."""
        judges = ", ".join(self.judges)
        differentiable = None
        if given.judge is not None:
            if given.judge not in self.judges:
                raise APIError(400, f"unknown judge {given.judge!r}; registered: {judges or 'none'}",
                               param="reward_guidance.judge", code="judge_not_found")
            spec = GuidanceDefaults(mode="best_of_n", strength=builtin_strength("best_of_n")).complete(
                given.weights, given.strength, given.window, given.mode, given.particles)
            objectives = self.judge_objectives.get(given.judge)
            differentiable = self.judge_differentiable.get(given.judge)
        elif hosted.reward is None:
            raise APIError(400, f"model {model} has no reward model, so reward_guidance needs a judge "
                           f"(reward_guidance.judge, one of: {judges or 'none registered'})", param="reward_guidance")
        else:
            spec = defaults_for(hosted.reward).complete(given.weights, given.strength, given.window, given.mode,
                                                        given.particles)
            objectives = hosted.reward.objectives
        try:
            if objectives is not None:  # an API process without the judges loaded leaves it to the worker
                spec.validate(objectives)
        except ValueError as exc:
            raise APIError(400, str(exc), param="reward_guidance." + str(exc).split(":")[0].split()[0]) from None
        if differentiable is not None:
            try:
                check_gradient_objectives(spec, differentiable)
            except ValueError as exc:
                raise APIError(400, f"reward_guidance.{exc}", param="reward_guidance.weights") from None
        if spec.search and not hosted.family.euler_scheduler:
            raise APIError(400, f"mode {spec.mode} needs a flow-matching model (an Euler scheduler); {model} is "
                           f"{hosted.family.name}", param="reward_guidance.mode")
        if given.judge is not None and hosted.family.prediction != "flow":
            raise APIError(400, f"judge {given.judge} scores the clean estimate x0 = x_t - t v of flow-matching "
                           f"models; {model} is {hosted.family.name}, which predicts {hosted.family.prediction}",
                           param="reward_guidance.judge")
        return spec, given.judge


def _no_strength(strength: float | None, why: str) -> None:
    if strength is not None:
        raise APIError(400, f"denoise_strength applies to video-to-video; {why}", param="denoise_strength")


def _snap_frames(hosted: HostedModel, width: int, height: int, wanted: int, limit: int) -> int:
    """The valid frame count nearest to ``wanted`` (seconds * fps + 1) on the model's frame grid."""
    for delta in range(0, FRAME_SEARCH_SPAN):
        for frames in (wanted - delta, wanted + delta):
            if 1 <= frames <= limit:
                try:
                    hosted.family.check_shape(VideoShape(height, width, frames))
                    return frames
                except ValueError:
                    continue
    raise APIError(400, f"no valid frame count near {wanted} for model {hosted.name}", param="seconds")
