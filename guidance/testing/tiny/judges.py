"""Tiny random judges' model directories, written in the layouts the real checkpoints use.

``make_tiny_clip`` writes a CLIP directory as ``CLIPModel.save_pretrained`` and a tokenizer would
(plus, optionally, an aesthetic head); ``make_tiny_videoreward`` writes VideoReward's release layout
(model_config.json, checkpoint-N/model.safetensors holding the peft-wrapped state dict under
transformers 4.x names, checkpoint-N/tokenizer, base/ configs). The judges load them through exactly
the code that loads the real weights. Tokenizers are Unigram models over explicit vocabularies, so
nothing is downloaded and every process builds the same files.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from guidance.testing.tiny.text import WORDS

CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>", "<unk>")
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>", "<unk>")
#: The CLIP mean and std (OpenAI's), which Qwen2-VL's processor uses too.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
#: Checkpoint step of the tiny release (any N works; the real one is 11352).
STEP = 7
LORA_RANK, LORA_ALPHA = 4, 8


def _unigram(specials: tuple[str, ...], words: list[str]):
    """A Unigram tokenizer: ``specials`` first (ids 0..), then each word with and without the word-start
    marker, then single characters (so any ASCII text, newlines included, tokenizes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pieces: list[str] = []
    for word in words:
        for piece in ("▁" + word, word):
            if piece not in pieces:
                pieces.append(piece)
    pieces += [c for c in ["▁", "\n"] + list(string.ascii_letters + string.digits + string.punctuation)
               if c not in pieces]
    vocab = [(s, 0.0) for s in specials] + [(p, -float(rank + 1)) for rank, p in enumerate(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=specials.index("<unk>")))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return tok


def tiny_clip_tokenizer():
    """CLIP-style: ``<|startoftext|> text <|endoftext|>``, padded with ``<|endoftext|>``."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _unigram(CLIP_SPECIALS, WORDS)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>")


def make_tiny_clip(out_dir: str | Path, aesthetic: bool = True, seed: int = 0, image_size: int = 32) -> Path:
    """A tiny CLIP directory (config, safetensors, tokenizer, preprocessor_config.json, and an
    aesthetic head when ``aesthetic``) that ``clip:DIR`` loads."""
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    out = Path(out_dir)
    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4),
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
        head = {"weight": torch.randn(1, config.projection_dim), "bias": torch.randn(1)}
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": image_size},
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size}, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD}, indent=2))
    if aesthetic:
        save_file(head, str(out / "aesthetic_head.safetensors"))
    return out


def tiny_qwen_tokenizer():
    """A Qwen2-VL-like tokenizer (its chat and vision tokens; ``<|endoftext|>`` pads) whose vocabulary
    covers the words of VideoReward's template, with the three reward tokens added as the release adds
    them (additional special tokens)."""
    from transformers import PreTrainedTokenizerFast

    from guidance.judges.videoreward import DETAILED_SPECIAL, SPECIAL_TOKENS

    words = list(dict.fromkeys(WORDS + re.findall(r"\w+", DETAILED_SPECIAL)))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_unigram(QWEN_SPECIALS, words), pad_token="<|endoftext|>",
                                        eos_token="<|im_end|>", unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS[1:7])})
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer


@dataclass
class TinyVideoReward:
    """The in-memory tiny reward model the directory is written from (a reference for tests)."""

    model: nn.Module  # peft-wrapped Qwen2VLForConditionalGeneration with an ``rm_head``
    tokenizer: object
    config: object


def build_tiny_videoreward(seed: int = 0, output_dim: int = 1) -> TinyVideoReward:
    """A tiny VideoReward as VideoAlign's training builds it: Qwen2-VL with its embeddings resized to the
    tokenizer (reward tokens added), a bias-free ``rm_head``, LoRA on every language-model linear layer
    (random B, so the merge matters)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer = tiny_qwen_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer) + 5, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0},
                         bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=1, embed_dim=16, num_heads=2, mlp_ratio=2, hidden_size=32, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config).eval()
        model.resize_token_embeddings(len(tokenizer))
        model.rm_head = nn.Linear(config.text_config.hidden_size, output_dim, bias=False)
        excluded = ("lm_head", "rm_head", "embed_tokens", "visual")
        targets = [name for name, module in model.named_modules()
                   if isinstance(module, (nn.Linear, nn.Embedding)) and not any(e in name for e in excluded)]
        model = get_peft_model(model, LoraConfig(target_modules=targets, r=LORA_RANK, lora_alpha=LORA_ALPHA,
                                                 lora_dropout=0.0, bias="none"))
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0.0, 0.2)
    return TinyVideoReward(model.eval(), tokenizer, config)


def _release_name(key: str) -> str:
    """transformers 5.x Qwen2-VL parameter names -> the 4.x names of VideoAlign's release."""
    key = key.replace("base_model.model.model.visual.", "base_model.model.visual.")
    return key.replace("base_model.model.model.language_model.", "base_model.model.model.")


def make_tiny_videoreward(out_dir: str | Path, seed: int = 0, output_dim: int = 1,
                          reward_mean: tuple[float, float, float] = (3.6757, 1.1646, 2.8105),
                          reward_std: tuple[float, float, float] = (2.2476, 1.3811, 2.5121),
                          max_frame_pixels: int = 200704) -> Path:
    """A tiny VideoReward directory in the release layout (with model.pth as model.safetensors)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    tiny = build_tiny_videoreward(seed, output_dim)
    checkpoint = out / f"checkpoint-{STEP}"
    checkpoint.mkdir(parents=True, exist_ok=True)
    state = {_release_name(k): v.detach().clone().contiguous() for k, v in tiny.model.state_dict().items()}
    save_file(state, str(checkpoint / "model.safetensors"))
    tiny.tokenizer.save_pretrained(checkpoint / "tokenizer")
    tiny.config.save_pretrained(out / "base")
    (out / "base" / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor"}, indent=2))
    (out / "model_config.json").write_text(json.dumps({
        "data_config": {"max_frame_pixels": max_frame_pixels, "num_frames": None, "fps": 2.0,
                        "eval_dim": ["VQ", "MQ", "TA"], "prompt_template_type": "detailed_special",
                        "sample_type": "uniform"},
        "model_config": {"model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct", "output_dim": output_dim,
                         "use_special_tokens": True, "reward_token": "special", "torch_dtype": "bfloat16"},
        "peft_lora_config": {"lora_enable": True, "vision_lora": False, "lora_r": LORA_RANK, "lora_alpha": LORA_ALPHA,
                             "lora_dropout": 0.05, "lora_namespan_exclude": ["lm_head", "rm_head", "embed_tokens",
                                                                             "visual"],
                             "lora_task_type": "CAUSAL_LM", "use_rslora": False, "num_lora_modules": -1},
        "inference_config": {f"{d}_{stat}": value for stat, values in (("mean", reward_mean), ("std", reward_std))
                             for d, value in zip(("VQ", "MQ", "TA"), values)}}, indent=2))
    return out
