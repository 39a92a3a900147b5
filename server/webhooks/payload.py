"""What a webhook says: the Standard Webhooks envelope around the video object.

``{"type": "video.completed" | "video.failed" | "video.cancelled", "timestamp": <when the job finished,
ISO 8601 UTC>, "data": <the video object, as GET /v1/videos/{id} answers at the attempt>}``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from server.store import Job


def message_id(job: Job) -> str:
    """The event's ``webhook-id``: one per job and outcome, so the same on every retry and restart."""
    return f"msg_{job.id}_{job.status}"


def event_type(job: Job) -> str:
    return f"video.{job.status}"


def event_body(job: Job, video: dict[str, Any]) -> bytes:
    finished = datetime.fromtimestamp(job.completed_at or 0.0, tz=timezone.utc)
    envelope = {"type": event_type(job), "timestamp": finished.isoformat().replace("+00:00", "Z"), "data": video}
    return json.dumps(envelope, separators=(",", ":")).encode()
