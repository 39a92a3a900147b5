"""One log line per job transition: accepted, started (batch size), completed (time, rewards),
failed (why), cancelled.

Without it the log holds only access lines, and an operator cannot tell which request ran in which
batch or why one failed. It listens on the event bus, so it sees exactly what SSE subscribers see,
from whichever thread published it; each line also carries its fields as ``extra`` for
``--log-format json``.
"""

from __future__ import annotations

import logging
from typing import Any

from server.job_spec import JobSpec
from server.store import Store

log = logging.getLogger("nrg.jobs")


def _settings(spec: JobSpec) -> str:
    g = spec.guidance
    steering = "unguided" if g is None else (
        "guided " + ",".join(f"{k}={v:g}" for k, v in g.weights.items()) + f" ({g.mode}, strength {g.strength:g})")
    checkpoint = f", checkpoint {spec.checkpoint.name}" if spec.checkpoint else ""
    return (f"model {spec.model}{checkpoint}, {spec.width}x{spec.height}x{spec.num_frames}, "
            f"{spec.num_inference_steps} steps, seed {spec.seed}, {steering}")


class JobLog:
    """An :class:`server.events.EventBus` listener."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        extra: dict[str, Any] = {"job": job_id, "event": kind}
        if kind == "queued":
            job = self.store.get(job_id)
            log.info("job %s accepted: %s", job_id, _settings(job.spec) if job else "?", extra=extra)
        elif kind == "started":
            extra["batch_size"] = data["batch_size"]
            log.info("job %s started in a batch of %d", job_id, data["batch_size"], extra=extra)
        elif kind == "completed":
            rewards = data.get("rewards")
            extra.update({k: data.get(k) for k in ("inference_time_s", "queue_time_s", "batch_size", "rewards")})
            scores = ", ".join(f"{k}={v:.4f}" for k, v in rewards.items()) if rewards else "none (no reward model)"
            log.info("job %s completed in %.2f s (queued %.2f s, batch of %d); rewards: %s", job_id,
                     data["inference_time_s"], data["queue_time_s"], data["batch_size"], scores, extra=extra)
        elif kind == "failed":
            error = data.get("error") or {}
            extra["error"] = error
            log.warning("job %s failed (%s): %s", job_id, error.get("code"), error.get("message"), extra=extra)
        elif kind == "cancelled":
            log.info("job %s cancelled", job_id, extra=extra)
