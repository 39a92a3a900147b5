"""Random LoRA adapters for tests: the adapter a checkpoint test, a compile test and an image-to-video
test load, saved as diffusers saves a trained one."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def lora_model(transformer: torch.nn.Module, seed: int):
    """A copy of ``transformer`` with a random LoRA (r=4, alpha=8: scale 2, as in r=64/alpha=128), and its
    config; nonzero from the start (``init_lora_weights=False``) so that it changes what the model gives."""
    from peft import LoraConfig

    model = copy.deepcopy(transformer)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.add_adapter(config)
    return model, config


def save_random_lora(transformer: torch.nn.Module, path: Path, seed: int = 1) -> torch.nn.Module:
    """``lora_model``'s adapter written to ``path`` by ``WanPipeline.save_lora_weights`` (the Wan loader
    mixin, shared with image-to-video); returns the adapted copy."""
    from diffusers import WanPipeline
    from peft import get_peft_model_state_dict

    model, config = lora_model(transformer, seed)
    WanPipeline.save_lora_weights(str(path), transformer_lora_layers=get_peft_model_state_dict(model),
                                  transformer_lora_adapter_metadata=config.to_dict())
    return model
