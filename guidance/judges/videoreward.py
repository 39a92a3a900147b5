"""``videoreward``: VideoAlign's released VideoReward, a Qwen2-VL-2B reward model, from a local directory.

VideoReward (Liu et al. 2025, "Improving Video Generation with Human Feedback"; github.com/KwaiVGI/
VideoAlign, weights at huggingface.co/KwaiVGI/VideoReward) scores a clip and its prompt on three
objectives, each a standardised score (higher is better):

- ``vq``: visual quality (clarity, detail, aesthetics, single-frame reasonableness);
- ``mq``: motion quality (stability, naturalness, amplitude);
- ``ta``: text alignment (subject, motion, scene, style and camera against the prompt).

Everything that decides the numbers follows the release's own inference code (``inference.py``,
``vision_process.py``, ``prompt_template.py``, ``trainer.py``, ``utils.py`` of VideoAlign):

- frames: uniform sampling at ``data_config.fps`` (2) frames a second of the clip's own rate, at least
  4 and an even count, index ``linspace(0, F - 1, n).round()``; each frame quantised to 8-bit levels
  (as the decoded video files it was trained on), resized with smart_resize (sides multiples of 28,
  between 128 * 28 * 28 and ``data_config.max_frame_pixels`` (200,704) pixels, aspect kept) by
  antialiased bicubic, then Qwen2-VL's rescale, CLIP mean/std and 2 x 14 x 14 patches;
- text: the "detailed_special" template around the prompt, as the one user turn of Qwen2-VL-Instruct's
  chat template after the video, with the generation prompt; the template holds the three added
  tokens ``<|VQ_reward|>``, ``<|MQ_reward|>`` and ``<|TA_reward|>``;
- model: the decoder's last hidden state at those three tokens through ``rm_head`` (bias-free linear,
  hidden -> ``output_dim``), with *sequential* positions: VideoAlign's forward passes no position ids
  to the decoder, so the released weights were trained without Qwen2-VL's 3-D M-RoPE positions;
- scores: (raw - mean) / std with ``inference_config``'s means and stds (VQ 3.6757/2.2476,
  MQ 1.1646/1.3811, TA 2.8105/2.5121 in the release).

The directory is the Hugging Face release with one change, since pickled weights are never loaded:
``checkpoint-N/model.pth`` converted to ``checkpoint-N/model.safetensors`` (same keys; docs/judges.md
has the one-off command), plus Qwen2-VL-2B-Instruct's ``config.json`` and ``preprocessor_config.json``
under ``base/`` (the release names the base model only by its hub id)::

    DIR/model_config.json                 VideoAlign's data, model, LoRA and inference settings
    DIR/checkpoint-N/model.safetensors    the full state dict of the LoRA-wrapped reward model
    DIR/checkpoint-N/tokenizer/           Qwen2-VL's tokenizer with the three reward tokens added
    DIR/base/config.json                  the base model's architecture
    DIR/base/preprocessor_config.json     its image mean and std

The LoRA weights are merged into the base weights at load (W + alpha / r * B A), so scoring runs a
plain Qwen2-VL. Quantising frames to 8 bits has no gradient, so no objective is differentiable.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from guidance.judges.base import DEFAULT_FPS, JudgeError, check_clips, check_scores
from guidance.judges.clip import image_processor_config, mean_std

OBJECTIVES = ("vq", "mq", "ta")
#: The added tokens whose hidden states ``rm_head`` reads, in the template's (and the output's) order.
SPECIAL_TOKENS = ("<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>")
MODEL_CONFIG = "model_config.json"
WEIGHTS = "model.safetensors"
BASE = "base"
#: vision_process.py's video limits: frames are enlarged to at least this many pixels; at least
#: MIN_FRAMES frames, at most MAX_FRAMES, an even count (Qwen2-VL's temporal patch is 2 frames).
VIDEO_MIN_PIXELS = 128 * 28 * 28
MIN_FRAMES, MAX_FRAMES, FRAME_FACTOR = 4, 768, 2
MAX_ASPECT = 200
#: How peft names the wrapped model's parameters in the released state dict.
PEFT_PREFIX = "base_model.model."

#: VideoAlign's "detailed_special" template (prompt_template.py), byte for byte: trailing spaces
#: included, ``{text_prompt}`` where the prompt goes.
DETAILED_SPECIAL = (
    '\n'
    'You are tasked with evaluating a generated video based on three distinct criteria: Visual Quality, Motion Quality, and Text Alignment. Please provide a rating from 0 to 10 for each of the three categories, with 0 being the worst and 10 being the best. Each evaluation should be independent of the others.\n'
    '\n'
    '**Visual Quality:**  \n'
    'Evaluate the overall visual quality of the video, with a focus on static factors. The following sub-dimensions should be considered:\n'
    '- **Reasonableness:** The video should not contain any significant biological or logical errors, such as abnormal body structures or nonsensical environmental setups.\n'
    '- **Clarity:** Evaluate the sharpness and visibility of the video. The image should be clear and easy to interpret, with no blurring or indistinct areas.\n'
    '- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual elements (e.g., hair, clothing, shadows).\n'
    '- **Aesthetic and Creativity:** Assess the artistic aspects of the video, including the color scheme, composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a sense of harmony and balance.\n'
    '- **Safety:** The video should not contain harmful or inappropriate content, such as political, violent, or adult material. If such content is present, the image quality and satisfaction score should be the lowest possible. \n'
    '\n'
    'Please provide the ratings of Visual Quality: <|VQ_reward|>\n'
    'END\n'
    '\n'
    '**Motion Quality:**  \n'
    'Assess the dynamic aspects of the video, with a focus on dynamic factors. Consider the following sub-dimensions:\n'
    '- **Stability:** Evaluate the continuity and stability between frames. There should be no sudden, unnatural jumps, and the video should maintain stable attributes (e.g., no fluctuating colors, textures, or missing body parts).\n'
    '- **Naturalness:** The movement should align with physical laws and be realistic. For example, clothing should flow naturally with motion, and facial expressions should change appropriately (e.g., blinking, mouth movements).\n'
    '- **Aesthetic Quality:** The movement should be smooth and fluid. The transitions between different motions or camera angles should be seamless, and the overall dynamic feel should be visually pleasing.\n'
    '- **Fusion:** Ensure that elements in motion (e.g., edges of the subject, hair, clothing) blend naturally with the background, without obvious artifacts or the feeling of cut-and-paste effects.\n'
    '- **Clarity of Motion:** The video should be clear and smooth in motion. Pay attention to any areas where the video might have blurry or unsteady sections that hinder visual continuity.\n'
    '- **Amplitude:** If the video is largely static or has little movement, assign a low score for motion quality.\n'
    '\n'
    'Please provide the ratings of Motion Quality: <|MQ_reward|>\n'
    'END\n'
    '\n'
    '**Text Alignment:**  \n'
    'Assess how well the video matches the textual prompt across the following sub-dimensions:\n'
    '- **Subject Relevance** Evaluate how accurately the subject(s) in the video (e.g., person, animal, object) align with the textual description. The subject should match the description in terms of number, appearance, and behavior.\n'
    '- **Motion Relevance:** Evaluate if the dynamic actions (e.g., gestures, posture, facial expressions like talking or blinking) align with the described prompt. The motion should match the prompt in terms of type, scale, and direction.\n'
    '- **Environment Relevance:** Assess whether the background and scene fit the prompt. This includes checking if real-world locations or scenes are accurately represented, though some stylistic adaptation is acceptable.  \n'
    '- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style, evaluate how well the video adheres to this style.\n'
    '- **Camera Movement Relevance:** Check if the camera movements (e.g., following the subject, focus shifts) are consistent with the expected behavior from the prompt.\n'
    '\n'
    'Textual prompt - {text_prompt}\n'
    'Please provide the ratings of Text Alignment: <|TA_reward|>\n'
    'END\n'
)


def build_prompt(prompt: str) -> str:
    """The "detailed_special" text around ``prompt``."""
    return DETAILED_SPECIAL.replace("{text_prompt}", prompt)


def chat_text(prompt: str, video_tokens: int) -> str:
    """The whole input text of one clip: what Qwen2-VL-Instruct's chat template renders for a single
    user turn [video, text] with the generation prompt, its one video placeholder repeated once per
    merged video patch (as Qwen2VLProcessor expands it)."""
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
            + "<|video_pad|>" * video_tokens + "<|vision_end|>" + build_prompt(prompt)
            + "<|im_end|>\n<|im_start|>assistant\n")


def _round_by(x: float, k: int) -> int:
    return round(x / k) * k


def frame_indices(total: int, fps: float, target_fps: float) -> list[int]:
    """The frames VideoAlign samples from a clip of ``total`` frames at ``fps``: ``target_fps`` a
    second, clamped to [MIN_FRAMES, min(MAX_FRAMES, total)] and rounded to an even count."""
    most = math.floor(min(MAX_FRAMES, total) / FRAME_FACTOR) * FRAME_FACTOR
    least = math.ceil(MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
    count = min(_round_by(min(max(total / fps * target_fps, least), most), FRAME_FACTOR), total)
    if count < FRAME_FACTOR:
        raise JudgeError(f"judge videoreward: a clip needs at least {FRAME_FACTOR} frames; got {total}")
    return torch.linspace(0, total - 1, count).round().long().tolist()


def frame_size(height: int, width: int, factor: int, max_pixels: int,
               min_pixels: int = VIDEO_MIN_PIXELS) -> tuple[int, int]:
    """Qwen2-VL's smart_resize: sides multiples of ``factor``, area within [min_pixels, max_pixels],
    aspect ratio kept as closely as those allow."""
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise JudgeError(f"judge videoreward: aspect ratio above {MAX_ASPECT}: {height}x{width}")
    h, w = max(factor, _round_by(height, factor)), max(factor, _round_by(width, factor))
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def video_patches(frames: torch.Tensor, size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor,
                  patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Sampled frames [n, H, W, 3] in [0, 1] -> Qwen2-VL's flat video patches [t * h * w, 3 * temporal *
    patch * patch] and their grid (t, h, w). Frames pass through 8-bit levels and an antialiased bicubic
    resize with 8-bit output (what torchvision does to a decoded uint8 video), then rescale and mean/std;
    the patch order is Qwen2-VL's (merge windows contiguous)."""
    x = (frames.clamp(0, 1) * 255).round().permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 255).round()
    x = (x / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    n, c, height, width = x.shape
    t, h, w = n // temporal, height // patch, width // patch
    x = x.reshape(t, temporal, c, h // merge, merge, patch, w // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, c * temporal * patch * patch), (t, h, w)


@dataclass(frozen=True)
class Settings:
    """What model_config.json decides at scoring time."""

    fps: float
    max_pixels: int
    output_dim: int
    #: alpha / r (alpha / sqrt(r) with rsLoRA) when the checkpoint holds LoRA weights, else None.
    lora_scale: float | None
    reward_mean: tuple[float, float, float]
    reward_std: tuple[float, float, float]


def read_settings(path: Path) -> Settings:
    """model_config.json as VideoAlign's training wrote it, checked against what this judge reproduces."""
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise JudgeError(f"judge videoreward: {path} is missing (it comes with the VideoReward release)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise JudgeError(f"judge videoreward: cannot read {path}: {exc}") from exc

    def section(name: str) -> dict:
        value = payload.get(name) if isinstance(payload, dict) else None
        if not isinstance(value, dict):
            raise JudgeError(f"judge videoreward: {path} has no {name} section")
        return value

    data, model, lora, inference = (section(n) for n in
                                    ("data_config", "model_config", "peft_lora_config", "inference_config"))
    rules = {("data_config", "prompt_template_type"): (data.get("prompt_template_type"), "detailed_special"),
             ("data_config", "sample_type"): (data.get("sample_type", "uniform"), "uniform"),
             ("data_config", "eval_dim"): (data.get("eval_dim"), ["VQ", "MQ", "TA"]),
             ("data_config", "num_frames"): (data.get("num_frames"), None),
             ("model_config", "use_special_tokens"): (model.get("use_special_tokens"), True),
             ("model_config", "reward_token"): (model.get("reward_token"), "special")}
    for (where, key), (found, wanted) in rules.items():
        if found != wanted:
            raise JudgeError(f"judge videoreward: {path}: {where}.{key} is {found!r}; this judge reproduces "
                             f"the release's {wanted!r}")
    try:
        output_dim = int(model.get("output_dim", 1))
        scale = None
        if lora.get("lora_enable"):
            rank, alpha = float(lora["lora_r"]), float(lora["lora_alpha"])
            scale = alpha / (math.sqrt(rank) if lora.get("use_rslora") else rank)
        mean = tuple(float(inference[f"{d}_mean"]) for d in ("VQ", "MQ", "TA"))
        std = tuple(float(inference[f"{d}_std"]) for d in ("VQ", "MQ", "TA"))
        settings = Settings(float(data["fps"]), int(data["max_frame_pixels"]), output_dim, scale, mean, std)
    except (KeyError, TypeError, ValueError) as exc:
        raise JudgeError(f"judge videoreward: {path}: missing or malformed {exc!s}") from exc
    if output_dim not in (1, 3) or settings.fps <= 0 or min(std) <= 0:
        raise JudgeError(f"judge videoreward: {path}: output_dim must be 1 or 3, fps and stds positive")
    return settings


class VideoRewardJudge:
    """Scores clips with VideoReward (module docstring): [B, 3] standardised (vq, mq, ta)."""

    objectives = OBJECTIVES
    differentiable: frozenset[str] = frozenset()

    def __init__(self, backbone, head: torch.Tensor, tokenizer, settings: Settings, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval().requires_grad_(False)
        self.head = head.to(self.device, self.backbone.dtype)
        self.tokenizer = tokenizer
        self.settings = settings
        self.pixel_mean = torch.tensor(list(pixel_mean), device=self.device)
        self.pixel_std = torch.tensor(list(pixel_std), device=self.device)
        vision = backbone.config.vision_config
        self.patch, self.merge, self.temporal = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
        self.reward_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)), device=self.device)
        self.reserved = tuple(tokenizer.get_added_vocab())

    def inputs(self, frames: torch.Tensor, prompts: Sequence[str], fps: float) -> dict[str, torch.Tensor]:
        """The model's inputs for clips [B, F, H, W, 3] in [0, 1], as VideoAlign's processor builds them,
        with the sequential positions its forward used."""
        for prompt in prompts:
            if any(token in prompt for token in self.reserved):
                raise JudgeError("judge videoreward: a prompt may not contain the model's special tokens "
                                 f"({', '.join(t for t in self.reserved if t in prompt)})")
        index = frame_indices(frames.shape[1], fps, self.settings.fps)
        size = frame_size(frames.shape[2], frames.shape[3], self.patch * self.merge, self.settings.max_pixels)
        clips = [video_patches(clip[index].float(), size, self.pixel_mean, self.pixel_std, self.patch, self.merge,
                               self.temporal) for clip in frames.to(self.device)]
        grid = clips[0][1]
        texts = [chat_text(p, grid[0] * grid[1] * grid[2] // self.merge ** 2) for p in prompts]
        tokens = self.tokenizer(texts, padding=True, padding_side="right", return_tensors="pt").to(self.device)
        batch, length = tokens["input_ids"].shape
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
                "position_ids": torch.arange(length, device=self.device).view(1, 1, -1).expand(3, batch, -1),
                "pixel_values_videos": torch.cat([p for p, _ in clips]).to(self.backbone.dtype),
                "video_grid_thw": torch.tensor([grid] * batch, device=self.device)}

    @torch.no_grad()
    def raw(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unnormalised rewards [B, 3] (VQ, MQ, TA): ``rm_head`` at the three reward tokens."""
        hidden = self.backbone(**inputs).last_hidden_state
        ids = inputs["input_ids"]
        mask = torch.isin(ids, self.reward_ids)
        if not bool((mask.sum(1) == 3).all()) or not bool((ids[mask].view(-1, 3) == self.reward_ids).all()):
            raise JudgeError("judge videoreward: every input needs the three reward tokens once each, in order")
        logits = (hidden[mask] @ self.head.T).view(ids.shape[0], 3, -1).float()
        return logits.diagonal(dim1=1, dim2=2) if logits.shape[-1] == 3 else logits[..., 0]

    def score(self, frames: torch.Tensor, prompts: Sequence[str], fps: float = DEFAULT_FPS) -> torch.Tensor:
        check_clips("videoreward", frames, prompts)
        raw = self.raw(self.inputs(frames.detach(), prompts, fps))
        mean, std = (torch.tensor(v, device=raw.device) for v in (self.settings.reward_mean, self.settings.reward_std))
        return check_scores("videoreward", self.objectives, ((raw - mean) / std).to(frames.device), frames.shape[0])


def latest_checkpoint(directory: Path) -> Path:
    """The ``checkpoint-N`` folder with the largest N, the one VideoAlign's loader picks by default."""
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    if not found:
        raise JudgeError(f"judge videoreward: {directory} has no checkpoint-N folder (the release has "
                         "checkpoint-11352)")
    return max(found)[1]


def merged_state(state: dict[str, torch.Tensor], lora_scale: float | None,
                 path: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The released state dict (a peft-wrapped Qwen2VL reward model) -> (Qwen2VLModel's state dict with
    the LoRA updates merged, ``rm_head`` weight). Accepts transformers 4.x names (``model.layers``,
    ``visual``) as the release has, and 5.x names (``model.language_model``, ``model.visual``)."""
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()}
    if any("lora_embedding" in k for k in state):
        raise JudgeError(f"judge videoreward: {path} has LoRA on embeddings, which the release does not")
    for key in [k for k in state if ".lora_A." in k]:
        if lora_scale is None:
            raise JudgeError(f"judge videoreward: {path} holds LoRA weights but {MODEL_CONFIG} has lora_enable "
                             "false")
        module, _, adapter = key.partition(".lora_A.")
        down = state.pop(key)
        up = state.pop(f"{module}.lora_B.{adapter}", None)
        base = state.get(f"{module}.base_layer.weight")
        if up is None or base is None:
            raise JudgeError(f"judge videoreward: {path}: {module} has lora_A without lora_B or base weights")
        state[f"{module}.base_layer.weight"] = (base.float() + lora_scale * (up.float() @ down.float())).to(base.dtype)
    head = state.pop("rm_head.weight", None)
    if head is None:
        raise JudgeError(f"judge videoreward: {path} has no rm_head weights (rm_head.weight)")
    out = {}
    for key, value in state.items():
        key = key.replace(".base_layer.", ".")
        if key.startswith("lm_head."):
            continue  # the language-model head: a reward never reads the vocabulary logits
        if key.startswith(("model.visual.", "model.language_model.")):
            key = key.removeprefix("model.")
        elif key.startswith("model."):
            key = "language_model." + key.removeprefix("model.")
        out[key] = value
    return out, head


def load_videoreward_judge(directory: Path | str, device: str = "cpu") -> VideoRewardJudge:
    """VideoReward from ``directory`` (module docstring for the layout), on ``device`` (bfloat16 on CUDA
    as the release runs, float32 elsewhere)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer, Qwen2VLModel
    from transformers.initialization import no_init_weights

    directory = Path(directory)
    settings = read_settings(directory / MODEL_CONFIG)
    checkpoint = latest_checkpoint(directory)
    weights = checkpoint / WEIGHTS
    if not weights.is_file():
        pickled = " It holds model.pth, which is never loaded (pickle): convert it once as docs/judges.md shows." \
            if (checkpoint / "model.pth").exists() else ""
        raise JudgeError(f"judge videoreward: {weights} is missing.{pickled}")
    base = directory / BASE
    if not (base / "config.json").is_file():
        raise JudgeError(f"judge videoreward: {base / 'config.json'} is missing (Qwen2-VL-2B-Instruct's config)")
    mean, std = mean_std(*image_processor_config(base, "videoreward"), "videoreward")
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint / "tokenizer", local_files_only=True)
        config = AutoConfig.from_pretrained(base, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise JudgeError(f"judge videoreward: cannot load the tokenizer ({checkpoint / 'tokenizer'}) or the base "
                         f"config ({base}): {exc}") from exc
    if config.model_type != "qwen2_vl":
        raise JudgeError(f"judge videoreward: {base / 'config.json'} is a {config.model_type!r} config, not qwen2_vl")
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if tokenizer.unk_token_id in ids or None in ids or tokenizer.pad_token_id is None:
        raise JudgeError(f"judge videoreward: the tokenizer in {checkpoint / 'tokenizer'} lacks the reward tokens "
                         f"{SPECIAL_TOKENS} or a pad token")

    state, head = merged_state(load_file(str(weights)), settings.lora_scale, weights)
    embed = state.get("language_model.embed_tokens.weight")
    if embed is None or embed.shape[0] < len(tokenizer) or head.shape != (settings.output_dim, embed.shape[1]):
        raise JudgeError(f"judge videoreward: {weights}: the token embeddings must cover the tokenizer "
                         f"({len(tokenizer)} tokens) and rm_head.weight be [{settings.output_dim}, hidden]")
    config.text_config.vocab_size = embed.shape[0]
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    with no_init_weights():
        backbone = Qwen2VLModel._from_config(config, dtype=dtype)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise JudgeError(f"judge videoreward: {weights} does not fit {base / 'config.json'}: missing "
                         f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return VideoRewardJudge(backbone, head, tokenizer, settings, mean, std, device)
