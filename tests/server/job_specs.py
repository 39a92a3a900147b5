"""Typed requests for tests that need a job in a store and do not care what it asks for."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.job_spec import JobSpec

SPEC = JobSpec(model="m", prompt="p", width=64, height=64, num_frames=9, fps=8, seed=0, num_inference_steps=4,
               guidance_scale=5.0)


def spec(**fields: Any) -> JobSpec:
    """``SPEC`` with these fields changed."""
    return replace(SPEC, **fields)
