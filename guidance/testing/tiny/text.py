"""Tiny text components over a fixed vocabulary: no hub access, identical in any process.

The tokenizer is a Unigram model over an explicit vocabulary (never trained, since the Unigram
trainer is not deterministic across processes).
"""

from __future__ import annotations

import string

#: Words of the demo world get a piece each; single characters cover every other ASCII prompt.
WORDS = (
    "a an the red green blue yellow circle square triangle moving left right up down "
    "slowly quickly fast slow blurry noisy static"
).split()


def tiny_t5_tokenizer():
    """A T5 tokenizer over a fixed vocabulary; identical before and after save/load."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    pieces = ["▁" + w for w in WORDS] + ["▁"] + list(string.ascii_letters + string.digits + string.punctuation)
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
