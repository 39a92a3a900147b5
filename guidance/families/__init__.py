"""Supported pipeline families and loading a local diffusers directory into one of them.

Family modules import heavy diffusers classes, so they are imported only when a family is used.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape

#: family name -> (diffusers pipeline class, "module:adapter class")
FAMILIES: dict[str, tuple[str, str]] = {
    "wan": ("WanPipeline", "guidance.families.wan:WanFamily"),
    "ltx": ("LTXPipeline", "guidance.families.ltx:LTXFamily"),
    "hunyuan": ("HunyuanVideoPipeline", "guidance.families.hunyuan:HunyuanFamily"),
    "cogvideox": ("CogVideoXPipeline", "guidance.families.cogvideox:CogVideoXFamily"),
}
#: Image-to-video pipeline classes -> the family whose adapter serves them (its ``image_input``).
IMAGE_TO_VIDEO: dict[str, str] = {
    "WanImageToVideoPipeline": "wan",
    "LTXImageToVideoPipeline": "ltx",
    "CogVideoXImageToVideoPipeline": "cogvideox",
}

__all__ = [
    "FAMILIES",
    "IMAGE_TO_VIDEO",
    "PipelineFamily",
    "TextConditioning",
    "VideoShape",
    "adapter_class",
    "family_of_directory",
    "load_pipeline",
    "supported_families_text",
    "wrap_pipeline",
]


def supported_families_text() -> str:
    return (", ".join(f"{name} ({cls})" for name, (cls, _) in FAMILIES.items()) + "; image-to-video: "
            + ", ".join(f"{cls} ({name})" for cls, name in IMAGE_TO_VIDEO.items()))


def _family_of_class(class_name: str) -> str | None:
    for name, (cls, _) in FAMILIES.items():
        if cls == class_name:
            return name
    return IMAGE_TO_VIDEO.get(class_name)


def adapter_class(family: str) -> type[PipelineFamily]:
    """The adapter class of a family name; a clear error for anything else."""
    if family not in FAMILIES:
        raise ValueError(f"unknown pipeline family {family!r}; supported: {supported_families_text()}")
    module, cls = FAMILIES[family][1].split(":")
    return getattr(importlib.import_module(module), cls)


def family_of_directory(path: str | Path) -> str:
    """Recognise the family of a diffusers directory from its ``model_index.json``."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{path} is not a diffusers pipeline directory: {index} does not exist")
    try:
        class_name = json.loads(index.read_text())["_class_name"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{index} has no valid '_class_name': {exc}") from exc
    family = _family_of_class(class_name)
    if family is not None:
        return family
    raise ValueError(
        f"unsupported pipeline class {class_name!r} in {index}; supported families: {supported_families_text()}"
    )


def wrap_pipeline(pipe: object) -> PipelineFamily:
    """Adapter for an already constructed diffusers pipeline object."""
    class_name = type(pipe).__name__
    family = _family_of_class(class_name)
    if family is not None:
        return adapter_class(family)(pipe)
    raise ValueError(f"unsupported pipeline class {class_name!r}; supported families: {supported_families_text()}")


def load_pipeline(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> PipelineFamily:
    """Load a local diffusers directory (safetensors only, never the hub) and wrap it."""
    import diffusers
    import transformers

    family = family_of_directory(path)
    # Loading bars for a handful of components are noise next to the sampler's own progress bar.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    # The directory's own class: a family's text-to-video or image-to-video pipeline.
    pipeline_cls = getattr(diffusers, json.loads((Path(path) / "model_index.json").read_text())["_class_name"])
    pipe = pipeline_cls.from_pretrained(
        str(path), dtype=dtype, use_safetensors=True, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return adapter_class(family)(pipe.to(device))
