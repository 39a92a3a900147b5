"""The ``clip`` judge on tiny random CLIP directories, loaded through the real-checkpoint path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from guidance.judges import JudgeError, load_judge, parse_named_spec
from guidance.judges.clip import AESTHETIC_HEAD, FRAMES, load_clip_judge, sample_frames
from guidance.testing.tiny.judges import make_tiny_clip

PROMPTS = ["a red circle moving left", "a blue square"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"), aesthetic=True)


@pytest.fixture(scope="module")
def judge(clip_dir):
    return load_clip_judge(clip_dir)


def _clips(batch: int = 2, frames: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, frames, 40, 48, 3, generator=torch.Generator().manual_seed(seed))


def test_objectives_shapes_and_finite(judge):
    assert judge.objectives == ("text_alignment", "aesthetic")
    assert judge.differentiable == frozenset(judge.objectives)
    scores = judge.score(_clips(), PROMPTS)
    assert scores.shape == (2, 2) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    assert (scores[:, 0].abs() <= 1).all()  # a cosine similarity


def test_deterministic_across_loads(clip_dir, judge):
    frames = _clips()
    assert torch.equal(judge.score(frames, PROMPTS), judge.score(frames, PROMPTS))
    assert torch.equal(judge.score(frames, PROMPTS), load_clip_judge(clip_dir).score(frames, PROMPTS))


def test_prompts_change_text_alignment_only(judge):
    frames = _clips(batch=1).expand(2, -1, -1, -1, -1)
    scores = judge.score(frames, ["a red circle", "green triangle moving up quickly"])
    assert abs(float(scores[0, 0] - scores[1, 0])) > 1e-4
    assert torch.allclose(scores[0, 1], scores[1, 1])  # the aesthetic head never reads the prompt


def test_text_alignment_is_the_models_cosine(judge):
    """One frame: the score is CLIPModel's own image-text cosine (logits_per_image / logit_scale)."""
    frames = _clips(batch=1, frames=1)
    tokens = judge.tokenizer(["a red circle"], return_tensors="pt")
    with torch.no_grad():
        out = judge.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                          pixel_values=judge.pixels(frames[:, 0]))
    expected = out.logits_per_image[0, 0] / judge.model.logit_scale.exp()
    assert torch.allclose(judge.score(frames, ["a red circle"])[0, 0], expected, atol=1e-5)


def test_pixels_match_the_clip_image_processor(judge):
    """The torch preprocessing (differentiable) reproduces CLIPImageProcessor's resize, crop and
    normalisation up to the resampling filters' rounding."""
    from transformers import CLIPImageProcessorPil

    image = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    reference = processor(images=image, return_tensors="pt")["pixel_values"]
    ours = judge.pixels(torch.from_numpy(image).float()[None] / 255)
    assert ours.shape == reference.shape == (1, 3, 32, 32)
    assert (ours - reference).abs().mean() < 0.01


def test_frame_sampling_is_even_and_capped():
    frames = torch.arange(20.0).view(1, 20, 1, 1, 1).expand(1, 20, 2, 2, 3)
    picked = sample_frames(frames)[0, :, 0, 0, 0]
    assert len(picked) == FRAMES and picked[0] == 0 and picked[-1] == 19
    assert torch.equal(sample_frames(frames[:, :3])[0, :, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0]))


def test_gradient_reaches_the_frames(judge):
    frames = _clips().requires_grad_(True)
    scores = judge.score(frames, PROMPTS)
    for column in range(2):
        (grad,) = torch.autograd.grad(scores[:, column].sum(), frames, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert judge.score(_clips(), PROMPTS).grad_fn is None  # no graph unless the frames ask for one


def test_without_aesthetic_head(tmp_path, judge):
    plain = load_clip_judge(make_tiny_clip(tmp_path, aesthetic=False))
    assert plain.objectives == ("text_alignment",) and plain.differentiable == {"text_alignment"}
    frames = _clips()
    scores = plain.score(frames, PROMPTS)
    assert scores.shape == (2, 1)
    assert torch.allclose(scores[:, 0], judge.score(frames, PROMPTS)[:, 0])  # same seed, same CLIP


def test_processor_config_layout(tmp_path, judge):
    """A transformers 5 processor saves its image settings in processor_config.json, not
    preprocessor_config.json; both load the same."""
    import json

    directory = make_tiny_clip(tmp_path)
    legacy = directory / "preprocessor_config.json"
    (directory / "processor_config.json").write_text(json.dumps({"image_processor": json.loads(legacy.read_text()),
                                                                 "processor_class": "CLIPProcessor"}))
    legacy.unlink()
    frames = _clips()
    assert torch.equal(load_clip_judge(directory).score(frames, PROMPTS), judge.score(frames, PROMPTS))


def test_malformed_aesthetic_head_names_the_file(tmp_path):
    directory = make_tiny_clip(tmp_path, aesthetic=False)
    save_file({"weight": torch.zeros(1, 7), "bias": torch.zeros(1)}, str(directory / AESTHETIC_HEAD))
    with pytest.raises(JudgeError, match=AESTHETIC_HEAD):
        load_clip_judge(directory)


def test_missing_files_are_named(tmp_path):
    directory = make_tiny_clip(tmp_path, aesthetic=False)
    (directory / "preprocessor_config.json").unlink()
    with pytest.raises(JudgeError, match="preprocessor_config.json"):
        load_clip_judge(directory)
    for weights in directory.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(JudgeError, match="safetensors"):
        load_clip_judge(directory)


def test_load_judge_spec(clip_dir):
    name, spec = parse_named_spec(f"ta=clip:{clip_dir}")
    judge = load_judge(spec)
    assert name == "ta" and judge.objectives == ("text_alignment", "aesthetic")
    assert judge.score(_clips(batch=1), ["a red circle"]).shape == (1, 2)
