"""A job row as the API shows it: OpenAI's video object with the diffusion fields (``server.schema.VideoObject``)."""

from __future__ import annotations

from typing import Any

from server.retention import Retention
from server.schema import VideoObject
from server.store import Job

#: Result fields copied from the finished job as they are.
RESULT_FIELDS = ("rewards", "rewards_z", "judge_scores", "unguided", "reward_hacking", "guidance_skipped_steps",
                 "cost_vs_unguided", "denoiser_passes", "guidance_decodes", "cached_denoiser_calls", "batch_size",
                 "queue_time_s", "inference_time_s", "encode_time_s", "peak_memory_mb")


def video_object(job: Job, retention: Retention) -> dict[str, Any]:
    """``job`` as JSON, with the time its files expire under ``retention``."""
    spec, r = job.spec, job.result
    expires_at = retention.expires_at(job)
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    checkpoint = spec.checkpoint
    return VideoObject(
        id=job.id, model=spec.model, status=job.status, progress=job.progress, created_at=int(job.created_at),
        completed_at=int(job.completed_at) if job.completed_at else None,
        expires_at=int(expires_at) if expires_at is not None else None, prompt=spec.prompt,
        size=f"{spec.width}x{spec.height}", seconds=spec.seconds, error=error,
        negative_prompt=spec.negative_prompt, width=spec.width, height=spec.height, num_frames=spec.num_frames,
        fps=spec.fps, seed=spec.seed, num_inference_steps=spec.num_inference_steps,
        guidance_scale=spec.guidance_scale, checkpoint=checkpoint.name if checkpoint else None,
        checkpoint_scale=spec.checkpoint_scale,
        reward_guidance=spec.reward_guidance_json(), compare_unguided=spec.compare_unguided,
        **{k: r.get(k) for k in RESULT_FIELDS},
        webhook_status=job.webhook,
        input_reference=_input_reference(spec),
        denoise_strength=spec.denoise_strength, step_cache_threshold=spec.step_cache_threshold,
    ).model_dump(mode="json")


def _input_reference(spec: Any) -> dict[str, Any] | None:
    ref = spec.input_reference
    if ref is None:
        return None
    video = {"frames": ref.frames, "fps": ref.fps} if ref.is_video else {}
    return {"sha256": ref.sha256, "media_type": ref.media_type, "width": ref.width, "height": ref.height,
            "bytes": ref.size_bytes, **video}
