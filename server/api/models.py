"""``/v1/models``: the hosted models with their defaults, reward objectives, checkpoints and guidance defaults."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from guidance.nrg import defaults_for
from server.api.dependencies import Runtime
from server.schema import ModelList

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(runtime: Runtime) -> dict[str, Any]:
    data = []
    for name, hosted in runtime.models.items():
        shape = hosted.default_shape
        data.append({
            "id": name, "object": "model", "family": hosted.family.name,
            "reward_objectives": list(hosted.reward.objectives) if hosted.reward else [],
            "checkpoints": hosted.checkpoints.describe() if hosted.checkpoints else [],
            "defaults": {"width": shape.width, "height": shape.height, "num_frames": shape.frames,
                         "num_inference_steps": hosted.default_steps,
                         "guidance_scale": hosted.family.default_cfg},
            "reward_guidance_defaults": defaults_for(hosted.reward).to_json() if hosted.reward else None,
            "input_reference": hosted.family.image_input,
            "input_reference_video": hosted.family.video_input,
        })
    return {"object": "list", "data": data}
