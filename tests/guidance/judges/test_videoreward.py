"""The ``videoreward`` judge on a tiny random Qwen2-VL written in VideoReward's release layout."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from guidance.judges import JudgeError, load_judge
from guidance.judges.videoreward import (DETAILED_SPECIAL, SPECIAL_TOKENS, build_prompt, chat_text,
                                         frame_indices, frame_size, load_videoreward_judge, video_patches)
from guidance.testing.tiny.judges import STEP, build_tiny_videoreward, make_tiny_videoreward

PROMPTS = ["a red circle moving left", "a blue square"]
RELEASE_MEAN, RELEASE_STD = (3.6757, 1.1646, 2.8105), (2.2476, 1.3811, 2.5121)


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    return make_tiny_videoreward(tmp_path_factory.mktemp("videoreward"))


@pytest.fixture(scope="module")
def judge(release_dir):
    return load_videoreward_judge(release_dir)


def _clips(batch: int = 2, frames: int = 9, size: tuple[int, int] = (40, 48), seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, frames, *size, 3, generator=torch.Generator().manual_seed(seed))


def _reference_raw(tiny, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rewards from the un-merged peft model, read at the reward tokens as VideoAlign's forward does."""
    wrapped = tiny.model.base_model.model
    with torch.no_grad():
        hidden = wrapped.model(**inputs).last_hidden_state
        logits = wrapped.rm_head(hidden)
    ids = torch.tensor(tiny.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)))
    pooled = logits[torch.isin(inputs["input_ids"], ids)].view(hidden.shape[0], 3, -1)
    return pooled.diagonal(dim1=1, dim2=2) if pooled.shape[-1] == 3 else pooled[..., 0]


def test_template_is_the_releases_byte_for_byte():
    # sha256 of prompt_template.DETAILED_PROMPT_WITH_SPECIAL_TOKEN in KwaiVGI/VideoAlign
    assert hashlib.sha256(DETAILED_SPECIAL.encode()).hexdigest() == \
        "fdb6309bac618dd0c8b1b589d3a0970a974f7856eecbb355a190b2dce54af700"
    text = build_prompt("a red circle")
    vq, mq, ta = (text.index(token) for token in SPECIAL_TOKENS)
    assert vq < mq < text.index("Textual prompt - a red circle\n") < ta
    assert all(text.count(token) == 1 for token in SPECIAL_TOKENS)
    assert text.index("**Visual Quality:**") < vq < text.index("**Motion Quality:**") < mq
    assert text.index("**Text Alignment:**") < ta and text.endswith("<|TA_reward|>\nEND\n")


def test_chat_text_is_qwen2_vl_instruct_rendering():
    text = chat_text("a red circle", 3)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|video_pad|><|video_pad|><|video_pad|><|vision_end|>"
                    + build_prompt("a red circle") + "<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("total, fps, count", [(81, 16.0, 10), (8, 16.0, 4), (100, 16.0, 12), (49, 8.0, 12),
                                               (3, 16.0, 2), (2000, 2.0, 768)])
def test_frames_sampled_at_two_per_second(total, fps, count):
    index = frame_indices(total, fps, 2.0)
    assert len(index) == count and count % 2 == 0
    assert index[0] == 0 and index[-1] == total - 1
    assert index == torch.linspace(0, total - 1, count).round().long().tolist()


def test_a_single_frame_is_refused():
    with pytest.raises(JudgeError, match="at least 2 frames"):
        frame_indices(1, 16.0, 2.0)


@pytest.mark.parametrize("height, width", [(480, 832), (720, 1280), (1080, 1920), (40, 48), (256, 256)])
def test_frame_size_respects_the_pixel_cap(height, width):
    h, w = frame_size(height, width, 28, 200704)
    assert h % 28 == 0 and w % 28 == 0
    assert 128 * 28 * 28 <= h * w <= 200704
    assert abs(h / w - height / width) < 0.1 * height / width


def test_patches_match_qwen2_vl_image_processor():
    """An image is a two-frame video of itself to Qwen2-VL: the patches must match its processor's."""
    from transformers import Qwen2VLImageProcessorPil

    image = (np.random.default_rng(0).random((56, 84, 3)) * 255).astype(np.uint8)
    reference = Qwen2VLImageProcessorPil(do_resize=False)(images=image, return_tensors="pt")
    frames = torch.from_numpy(image).float().div(255)[None].expand(2, -1, -1, -1)
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    patches, grid = video_patches(frames, (56, 84), mean, std, patch=14, merge=2, temporal=2)
    assert list(grid) == reference["image_grid_thw"][0].tolist()
    assert torch.allclose(patches, reference["pixel_values"], atol=1e-5)


def test_objectives_shapes_finite_and_deterministic(release_dir, judge):
    assert judge.objectives == ("vq", "mq", "ta") and judge.differentiable == frozenset()
    frames = _clips()
    scores = judge.score(frames, PROMPTS, fps=16.0)
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()
    assert torch.equal(scores, judge.score(frames, PROMPTS, fps=16.0))
    assert torch.equal(scores, load_judge(f"videoreward:{release_dir}").score(frames, PROMPTS, fps=16.0))


def test_inputs_follow_the_release_settings(judge):
    assert judge.settings.fps == 2.0 and judge.settings.max_pixels == 200704
    inputs = judge.inputs(_clips(frames=33, size=(480, 832)), PROMPTS, fps=16.0)
    (t, h, w), = set(map(tuple, inputs["video_grid_thw"].tolist()))
    assert t == 2  # 33 frames at 16 fps -> 4 frames -> 2 temporal patches
    assert (h * 14) * (w * 14) <= 200704 and (h * 14, w * 14) == frame_size(480, 832, 28, 200704)
    video_pad = judge.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert ((inputs["input_ids"] == video_pad).sum(1) == t * h * w // 4).all()
    assert inputs["attention_mask"][1].sum() < inputs["attention_mask"][0].sum()  # the short prompt: right pad
    assert inputs["attention_mask"][1, -1] == 0
    expected = torch.arange(inputs["input_ids"].shape[1]).expand(3, 2, -1)
    assert torch.equal(inputs["position_ids"], expected)  # sequential, as VideoAlign's forward


def test_merged_weights_score_like_the_peft_model(judge):
    """Loading merges LoRA and renames 4.x keys: raw rewards equal the un-merged peft model's."""
    inputs = judge.inputs(_clips(), PROMPTS, fps=16.0)
    assert torch.allclose(judge.raw(inputs), _reference_raw(build_tiny_videoreward(seed=0), inputs), atol=1e-5)


def test_three_output_head_reads_the_diagonal(tmp_path):
    judge = load_videoreward_judge(make_tiny_videoreward(tmp_path, seed=1, output_dim=3))
    inputs = judge.inputs(_clips(), PROMPTS, fps=16.0)
    reference = _reference_raw(build_tiny_videoreward(seed=1, output_dim=3), inputs)
    assert torch.allclose(judge.raw(inputs), reference, atol=1e-5)


def test_scores_are_normalised_with_the_release_constants(judge):
    assert judge.settings.reward_mean == RELEASE_MEAN and judge.settings.reward_std == RELEASE_STD
    frames = _clips()
    raw = judge.raw(judge.inputs(frames, PROMPTS, fps=16.0))
    expected = (raw - torch.tensor(RELEASE_MEAN)) / torch.tensor(RELEASE_STD)
    assert torch.allclose(judge.score(frames, PROMPTS, fps=16.0), expected, atol=1e-6)


def test_prompts_change_text_alignment(judge):
    frames = _clips(batch=1).expand(2, -1, -1, -1, -1)
    scores = judge.score(frames, ["a red circle", "green triangle moving up quickly"], fps=16.0)
    assert abs(float(scores[0, 2] - scores[1, 2])) > 1e-4


def test_a_prompt_with_reward_tokens_is_refused(judge):
    with pytest.raises(JudgeError, match="special tokens"):
        judge.score(_clips(batch=1), ["a red circle <|TA_reward|>"], fps=16.0)


def _edit_weights(directory, edit) -> None:
    path = directory / f"checkpoint-{STEP}" / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_missing_rm_head_names_the_file(tmp_path):
    directory = make_tiny_videoreward(tmp_path)
    _edit_weights(directory, lambda state: state.pop("base_model.model.rm_head.weight"))
    with pytest.raises(JudgeError, match=r"checkpoint-7/model\.safetensors has no rm_head"):
        load_videoreward_judge(directory)


def test_pickled_release_weights_are_refused_with_the_fix(tmp_path):
    directory = make_tiny_videoreward(tmp_path)
    weights = directory / f"checkpoint-{STEP}" / "model.safetensors"
    weights.rename(weights.with_name("model.pth"))
    with pytest.raises(JudgeError, match=r"model\.safetensors is missing.*model\.pth.*docs/judges\.md"):
        load_videoreward_judge(directory)


def test_missing_or_unsupported_files_are_named(tmp_path):
    directory = make_tiny_videoreward(tmp_path)
    config_path = directory / "model_config.json"
    config = json.loads(config_path.read_text())
    config["data_config"]["prompt_template_type"] = "simple"
    config_path.write_text(json.dumps(config))
    with pytest.raises(JudgeError, match="model_config.json: data_config.prompt_template_type"):
        load_videoreward_judge(directory)
    config_path.unlink()
    with pytest.raises(JudgeError, match="model_config.json is missing"):
        load_videoreward_judge(directory)


def test_missing_base_config_is_named(tmp_path):
    directory = make_tiny_videoreward(tmp_path)
    (directory / "base" / "config.json").unlink()
    with pytest.raises(JudgeError, match=r"base/config\.json is missing"):
        load_videoreward_judge(directory)


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
    directory = make_tiny_videoreward(tmp_path)
    _edit_weights(directory, lambda state: state.pop("base_model.model.model.norm.weight"))
    with pytest.raises(JudgeError, match=r"does not fit .*language_model\.norm\.weight"):
        load_videoreward_judge(directory)
