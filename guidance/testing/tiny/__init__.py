"""Tiny, deterministic, randomly initialised pipelines for tests and smoke runs (``nrg make-tiny``).

They are real diffusers pipelines of each family, only with a handful of channels, so they load
through exactly the same code path as a real checkpoint. No hub access: the tokenizers are built over
explicit vocabularies (``text.py``; the HunyuanVideo ones in ``hunyuan.py``) and every model is built
from constructor arguments. One module per family (``wan.py``, ``ltx.py``, ``hunyuan.py``,
``cogvideox.py``), each with ``build()``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from guidance.families import FAMILIES
from guidance.testing.tiny.text import tiny_t5_encoder, tiny_t5_tokenizer

__all__ = ["I2V_FAMILIES", "I2V_VARIANTS", "build_tiny_pipeline", "make_tiny", "tiny_t5_encoder", "tiny_t5_tokenizer"]


#: Families with a tiny image-to-video pipeline (``build_i2v`` in their module).
I2V_FAMILIES = ("wan", "ltx", "cogvideox")
#: Other tiny image-to-video pipelines of a family than its ``build_i2v`` one, by variant name (the
#: builders are ``I2V_VARIANTS`` in the family's module): Wan 2.2's I2V-A14B and TI2V-5B beside Wan 2.1's.
I2V_VARIANTS = {"wan": ("i2v-a14b", "ti2v-5b")}


def build_tiny_pipeline(family: str, seed: int = 0, i2v: bool = False, variant: str | None = None):
    """A tiny pipeline of ``family`` (its image-to-video pipeline with ``i2v``, or the image-to-video
    ``variant`` named, one of ``I2V_VARIANTS[family]``); the same ``seed`` gives the same weights in any
    process."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    if variant is not None and variant not in I2V_VARIANTS.get(family, ()):
        variants = ", ".join(f"{name} ({fam})" for fam, names in I2V_VARIANTS.items() for name in names)
        raise ValueError(f"no image-to-video variant {variant!r} for family {family!r}; there are: {variants}")
    if i2v and family not in I2V_FAMILIES:
        raise ValueError(f"no image-to-video pipeline for family {family!r}; choose from {', '.join(I2V_FAMILIES)}")
    module = importlib.import_module(f"{__name__}.{family}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if variant is not None:
            pipe = module.I2V_VARIANTS[variant]()
        else:
            pipe = module.build_i2v() if i2v else module.build()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_tiny(family: str, out_dir: str | Path, seed: int = 0, i2v: bool = False, variant: str | None = None) -> Path:
    """Write a tiny pipeline of ``family`` (image-to-video with ``i2v``; the image-to-video ``variant``
    named, see :func:`build_tiny_pipeline`) to ``out_dir`` as a diffusers directory (safetensors)."""
    out = Path(out_dir)
    build_tiny_pipeline(family, seed, i2v, variant).save_pretrained(str(out), safe_serialization=True)
    return out
