"""Reward model v2 training: prompt-contrastive pairs, the gradient-correlation penalty, input noise."""

import json

import pytest
import torch

from guidance.train.preference_data import PreferenceDataError, load_preference_data, read_pairs, write_pairs
from guidance.train.reward import (
    PromptCache,
    TrainConfig,
    augment_pair,
    build_model,
    gradient_correlation_penalty,
    score_pairs,
    train_reward_model,
)
from tests.guidance.train.synthetic import OBJECTIVES
from tests.guidance.train.test_train_reward import FAST, SHAPE, WAN_LATENT

RED, BLUE = "a red circle moving left", "a blue square"


@pytest.fixture(scope="module")
def wan(tiny_family):
    return tiny_family("wan")


def _contrastive_records(count: int, seed: int = 0):
    """The clip under the prompt its latents' sign says it shows (A) vs under the other prompt (B).
    Both kinds are held out, so only a model that reads the latents and the prompt together ranks
    the held-out pairs (a prompt bias alone gets half of them)."""
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        x = torch.randn(WAN_LATENT, generator=generator) * 0.3 + (1.0 if i % 2 else -1.0)
        own, other = (RED, BLUE) if i % 2 else (BLUE, RED)
        yield {"prompt": own, "prompt_b": other, "a": x, "b": x, "labels": {"bright": "A", "dark": "tie"},
               "split": "test" if i % 6 in (0, 3) else "train"}


def test_prompt_b_round_trips_and_is_validated(wan, tmp_path):
    write_pairs(tmp_path, OBJECTIVES, _contrastive_records(4))
    records = read_pairs(tmp_path)[1]
    assert [r.prompt_b for r in records] == [RED, BLUE, RED, BLUE] and records[0].split == "test"
    data = load_preference_data(tmp_path, wan)
    assert data.prompts_b == [RED, BLUE, RED, BLUE] and data.prompts == [BLUE, RED, BLUE, RED]
    lines = (tmp_path / "pairs.jsonl").read_text().splitlines()
    row = {**json.loads(lines[0]), "prompt_b": ""}
    (tmp_path / "pairs.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(PreferenceDataError, match="line 1: prompt_b must be a non-empty string"):
        read_pairs(tmp_path)
    with pytest.raises(PreferenceDataError, match="record 0: prompt_b must be a non-empty string"):
        write_pairs(tmp_path / "w", OBJECTIVES, [{**next(_contrastive_records(1)), "prompt_b": 3}])


def test_without_prompt_b_pairs_score_under_one_prompt(wan, tmp_path):
    data = load_preference_data(write_pairs(tmp_path, OBJECTIVES, [
        {"prompt": RED, "a": torch.zeros(WAN_LATENT), "b": torch.ones(WAN_LATENT), "labels": {"bright": "B"}}]), wan)
    assert data.prompts_b == [RED]


def test_the_same_clip_under_two_prompts_differs_only_through_the_text(wan):
    model = build_model(wan, OBJECTIVES, TrainConfig(**FAST))
    cache = PromptCache(wan)
    x = torch.randn((2, *WAN_LATENT), generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 0.4)
    same = score_pairs(model, x, x, t, cache([RED, BLUE]), SHAPE)
    assert torch.equal(same, torch.zeros_like(same))
    contrast = score_pairs(model, x, x, t, cache([RED, BLUE]), SHAPE, cache([BLUE, RED]))
    assert contrast.abs().min() > 0


def test_contrastive_pairs_teach_the_model_to_read_the_prompt(wan, tmp_path):
    data = load_preference_data(write_pairs(tmp_path, OBJECTIVES, _contrastive_records(48)), wan)
    result = train_reward_model(wan, data, TrainConfig(epochs=8, **FAST), progress=False, log=None)
    accuracy = result.report["accuracy"]["objectives"]["bright"]
    assert accuracy["decisive"] == 16 and accuracy["mean"] >= 0.75


def test_the_gradient_correlation_penalty_is_a_squared_cosine_that_training_can_lower(wan):
    torch.manual_seed(0)
    model = build_model(wan, OBJECTIVES, TrainConfig(**FAST))
    cond = PromptCache(wan)([RED, BLUE, RED, BLUE])
    x = torch.randn((4, *WAN_LATENT), generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), 0.5)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    model.train()
    values = []
    for _ in range(25):
        with torch.enable_grad():
            penalty = gradient_correlation_penalty(model, x, t, cond, SHAPE)
            optimizer.zero_grad()
            penalty.backward()
        values.append(float(penalty))
        optimizer.step()
    assert 0.0 <= min(values) and max(values) <= 1.0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert values[-1] < 0.5 * values[0]


def test_input_noise_is_shared_by_the_clips_of_a_pair():
    x_a, x_b = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    y_a, y_b = augment_pair(x_a, x_b, 0.1, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y_a - y_b, x_a - x_b)
    rms = torch.cat([x_a, x_b], 1).pow(2).flatten(1).mean(1).sqrt()
    ratio = (y_a - x_a).flatten(1).std(1) / rms
    assert bool(((ratio > 0.05) & (ratio < 0.2)).all())


@pytest.mark.parametrize(("field", "value", "message"), [
    ("decorrelation", -1.0, "decorrelation must be a number >= 0"),
    ("input_noise", 2.0, "input noise must be between 0 and 1"),
])
def test_new_settings_are_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()
