"""``clip``: text-frame alignment and an optional aesthetic score from a CLIP model in a local directory.

Objectives (higher is better):

- ``text_alignment``: the cosine similarity between each sampled frame's image embedding and the
  prompt's text embedding, averaged over up to ``FRAMES`` evenly spaced frames. This is CLIPScore
  with w = 1 and *without* its max(cos, 0) clamp: the clamp would flatten every clip below zero to the
  same score and cut its gradient, and a judge that ranks candidates needs both.
- ``aesthetic`` (only when the directory holds ``AESTHETIC_HEAD``): a linear head on the L2-normalised
  image embedding, averaged over the same frames, as the LAION aesthetic predictor's linear variant
  (about 1-10 on its rating scale for ViT-L/14).

Frames are resized, centre-cropped and normalised in torch with the directory's image-processor
settings, so both scores are differentiable with respect to the frames. The model is frozen; a graph
is built only when the frames require a gradient.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from guidance.judges.base import DEFAULT_FPS, JudgeError, check_clips, check_scores

#: The most frames a clip contributes (evenly spaced): CLIP sees single images, and more frames of a
#: short generated clip add cost faster than information.
FRAMES = 8
#: The optional aesthetic head: safetensors with ``weight`` [1, D] and ``bias`` [1] over normalised
#: image embeddings of dimension D (the CLIP projection size).
AESTHETIC_HEAD = "aesthetic_head.safetensors"
PREPROCESSOR, PROCESSOR = "preprocessor_config.json", "processor_config.json"


def _edge(value: object, *keys: str) -> int:
    """A size entry of preprocessor_config.json: an int, or a dict holding one of ``keys``."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in keys:
            if isinstance(value.get(key), int):
                return value[key]
    raise KeyError(keys[0])


def image_processor_config(directory: Path, judge: str) -> tuple[dict, Path]:
    """The image-processor settings saved with a model: ``preprocessor_config.json`` (the hub's
    layout), else the ``image_processor`` section of ``processor_config.json`` (what a transformers 5
    processor's save_pretrained writes)."""
    for name, section in ((PREPROCESSOR, None), (PROCESSOR, "image_processor")):
        path = directory / name
        if path.is_file():
            try:
                config = json.loads(path.read_text())
                return (config if section is None else config[section]), path
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise JudgeError(f"judge {judge}: cannot read the image-processor settings in {path}: {exc!r}") from exc
    raise JudgeError(f"judge {judge}: {directory / PREPROCESSOR} (or {PROCESSOR}) is missing; save the model's "
                     "processor with save_pretrained")


def mean_std(config: dict, path: Path, judge: str) -> tuple[list[float], list[float]]:
    """``image_mean`` and ``image_std`` of an image-processor config, three values each."""
    try:
        mean, std = [float(v) for v in config["image_mean"]], [float(v) for v in config["image_std"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise JudgeError(f"judge {judge}: {path} needs image_mean and image_std: {exc!r}") from exc
    if len(mean) != 3 or len(std) != 3:
        raise JudgeError(f"judge {judge}: {path}: image_mean and image_std need 3 values each")
    return mean, std


def read_preprocessing(directory: Path) -> tuple[int, tuple[int, int], list[float], list[float]]:
    """(shortest edge, (crop height, crop width), mean, std): the numbers CLIPImageProcessor would use,
    read directly so that the pipeline can run in torch."""
    config, path = image_processor_config(directory, "clip")
    try:
        size = _edge(config["size"], "shortest_edge", "height")
        crop = config.get("crop_size", size)
        crop_hw = (_edge(crop, "height", "shortest_edge"), _edge(crop, "width", "shortest_edge"))
    except (KeyError, TypeError) as exc:
        raise JudgeError(f"judge clip: {path} needs size (and crop_size): {exc!r}") from exc
    return (size, crop_hw, *mean_std(config, path, "clip"))


def sample_frames(frames: torch.Tensor, count: int = FRAMES) -> torch.Tensor:
    """Up to ``count`` evenly spaced frames of [B, F, H, W, 3], first and last included."""
    total = frames.shape[1]
    index = torch.linspace(0, total - 1, min(total, count)).round().long().to(frames.device)
    return frames.index_select(1, index)


class ClipJudge:
    """Scores clips with a frozen CLIP model (module docstring)."""

    def __init__(self, model, tokenizer, shortest_edge: int, crop: tuple[int, int], mean: Sequence[float],
                 std: Sequence[float], aesthetic: tuple[torch.Tensor, torch.Tensor] | None = None,
                 device: str = "cpu") -> None:
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.shortest_edge, self.crop = shortest_edge, crop
        self.mean = torch.tensor(list(mean), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), device=self.device).view(1, 3, 1, 1)
        self.aesthetic = None if aesthetic is None else tuple(t.to(self.device).float() for t in aesthetic)
        self.objectives: tuple[str, ...] = ("text_alignment",) + (("aesthetic",) if aesthetic is not None else ())
        self.differentiable = frozenset(self.objectives)
        self.max_length = int(getattr(model.config.text_config, "max_position_embeddings", 77))

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """[N, H, W, 3] in [0, 1] -> CLIP's normalised [N, 3, crop_h, crop_w]: shortest edge resized
        (bicubic, antialiased), centre crop, mean/std, as CLIPImageProcessor does, but in torch."""
        x = images.permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        edge = self.shortest_edge
        short_h = (edge, int(edge * w / h)) if h <= w else (int(edge * h / w), edge)
        size = (max(self.crop[0], short_h[0]), max(self.crop[1], short_h[1]))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        top, left = (size[0] - self.crop[0]) // 2, (size[1] - self.crop[1]) // 2
        x = x[..., top:top + self.crop[0], left:left + self.crop[1]]
        return (x - self.mean) / self.std

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings [B, D] (prompts past CLIP's context are truncated, as CLIP must)."""
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return F.normalize(out.pooler_output.float(), dim=-1)

    def score(self, frames: torch.Tensor, prompts: Sequence[str], fps: float = DEFAULT_FPS) -> torch.Tensor:
        check_clips("clip", frames, prompts)
        with torch.set_grad_enabled(frames.requires_grad):
            sampled = sample_frames(frames.to(self.device).float())  # [B, S, H, W, 3]
            b, s = sampled.shape[:2]
            pixels = self.pixels(sampled.flatten(0, 1)).to(self.model.dtype)
            images = self.model.get_image_features(pixel_values=pixels).pooler_output.float()
            images = F.normalize(images, dim=-1).view(b, s, -1)
            with torch.no_grad():
                texts = self.text_embeddings(prompts)
            columns = [(images * texts[:, None]).sum(-1).mean(1)]
            if self.aesthetic is not None:
                weight, bias = self.aesthetic
                columns.append((images @ weight.T + bias).squeeze(-1).mean(1))
            scores = torch.stack(columns, dim=-1).to(frames.device)
        return check_scores("clip", self.objectives, scores, b)


def _aesthetic_head(directory: Path, dim: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The head in ``AESTHETIC_HEAD``, checked against the embedding size, or None when absent."""
    from safetensors.torch import load_file

    path = directory / AESTHETIC_HEAD
    if not path.is_file():
        return None
    tensors = load_file(str(path))
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if weight is None or bias is None or tuple(weight.shape) != (1, dim) or tuple(bias.shape) != (1,):
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        raise JudgeError(f"judge clip: {path} must hold weight [1, {dim}] and bias [1] (a linear head on the "
                         f"normalised image embedding); found {found}")
    return weight, bias


def load_clip_judge(directory: Path | str, device: str = "cpu") -> ClipJudge:
    """A CLIP judge from a local transformers directory (CLIPModel saved with save_pretrained in
    safetensors, its tokenizer and image-processor settings; optionally ``AESTHETIC_HEAD``)."""
    from transformers import AutoTokenizer, CLIPModel

    directory = Path(directory)
    weights = sorted(p.name for p in directory.glob("*.safetensors") if p.name != AESTHETIC_HEAD)
    if not (directory / "config.json").is_file() or not weights:
        raise JudgeError(f"judge clip: {directory} needs config.json and the model's *.safetensors (pickled "
                         "weights are never loaded; save the model with save_pretrained)")
    shortest_edge, crop, mean, std = read_preprocessing(directory)
    try:
        model = CLIPModel.from_pretrained(directory, use_safetensors=True, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise JudgeError(f"judge clip: cannot load the CLIP model or tokenizer from {directory}: {exc}") from exc
    aesthetic = _aesthetic_head(directory, int(model.config.projection_dim))
    return ClipJudge(model, tokenizer, shortest_edge, crop, mean, std, aesthetic, device)
