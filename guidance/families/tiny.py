"""Tiny, deterministic, randomly initialised pipelines for tests and smoke runs (``nrg make-tiny``).

They are real diffusers pipelines of each family, only with a handful of channels, so they load
through exactly the same code path as a real checkpoint. No hub access: the tokenizer is a Unigram
model over an explicit vocabulary (never trained, since the Unigram trainer is not deterministic
across processes) and every model is built from constructor arguments.
"""

from __future__ import annotations

import importlib
import string
from pathlib import Path

import torch

from guidance.families import FAMILIES

#: Words of the demo world get a piece each; single characters cover every other ASCII prompt.
_WORDS = (
    "a an the red green blue yellow circle square triangle moving left right up down "
    "slowly quickly fast slow blurry noisy static"
).split()


def tiny_t5_tokenizer():
    """A T5 tokenizer over a fixed vocabulary; identical before and after save/load."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    pieces = ["▁" + w for w in _WORDS] + ["▁"] + list(string.ascii_letters + string.digits + string.punctuation)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece, -float(rank + 1)) for rank, piece in enumerate(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return T5TokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


def tiny_t5_encoder(vocab_size: int, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32,
    )
    return T5EncoderModel(config).eval()


def build_tiny_pipeline(family: str, seed: int = 0):
    """A tiny pipeline of ``family``; the same ``seed`` gives the same weights in any process."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    module = importlib.import_module(FAMILIES[family][1].split(":")[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = module.build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_tiny(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny pipeline of ``family`` to ``out_dir`` as a diffusers directory (safetensors)."""
    out = Path(out_dir)
    build_tiny_pipeline(family, seed).save_pretrained(str(out), safe_serialization=True)
    return out
