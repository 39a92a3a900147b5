"""Reward model v2 training: prompt-contrastive pairs, the gradient-correlation penalty, input noise,
and training on the sampler's own states."""

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
    use_trajectory_states,
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
    ("trajectory_share", 1.5, "trajectory share must be between 0 and 1"),
])
def test_new_settings_are_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()


LEVELS = [0.7, 0.4]


def _trajectory_records(count: int, seed: int = 0):
    """Pairs whose final latents carry no signal at all while their sampler states do: the clip whose
    states are brighter wins. Only a model trained on the states can rank held-out states."""
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        offsets = [float(torch.rand(1, generator=generator)) * 2 - 1 for _ in range(2)]
        states = [torch.randn((len(LEVELS), *WAN_LATENT), generator=generator) * 0.5 + o for o in offsets]
        finals = [torch.randn(WAN_LATENT, generator=generator) for _ in range(2)]
        label = "A" if offsets[0] > offsets[1] else "B"
        yield {"prompt": RED, "a": finals[0], "b": finals[1], "labels": {"bright": label},
               "trajectory_a": states[0], "trajectory_b": states[1], "trajectory_t": LEVELS,
               "split": "test" if i % 2 else "train"}


def test_trajectory_states_round_trip_and_are_validated(wan, tmp_path):
    records = list(_trajectory_records(2))
    data = load_preference_data(write_pairs(tmp_path / "ok", OBJECTIVES, records), wan)
    assert data.with_trajectory([0, 1]) == [0, 1]
    assert data.trajectories_a[0].equal(records[0]["trajectory_a"]) and data.trajectory_t[1].tolist() == \
        pytest.approx(LEVELS)
    plain = load_preference_data(write_pairs(tmp_path / "plain", OBJECTIVES, [
        {k: v for k, v in records[0].items() if not k.startswith("trajectory")}]), wan)
    assert plain.with_trajectory([0]) == [] and plain.trajectory_t == [None]
    with pytest.raises(PreferenceDataError, match="record 0: trajectory_t must be noise levels in"):
        write_pairs(tmp_path / "bad", OBJECTIVES, [{**records[0], "trajectory_t": [1.0, 0.4]}])
    with pytest.raises(PreferenceDataError, match=r"record 0: trajectory_b must be \[S, \*latents\]"):
        write_pairs(tmp_path / "bad", OBJECTIVES, [{**records[0], "trajectory_b": records[0]["trajectory_b"][:1]}])
    with pytest.raises(PreferenceDataError, match="trajectory_t is given but trajectory_a is missing"):
        write_pairs(tmp_path / "bad", OBJECTIVES, [{**records[0], "trajectory_a": None}])
    mixed = write_pairs(tmp_path / "mixed", OBJECTIVES, [
        records[0], {**records[1], "a": records[0]["a"]}])  # pair 2's A is pair 1's file, with other levels
    from safetensors.torch import load_file, save_file

    path = mixed / "latents" / "000001_b.safetensors"
    save_file({**load_file(path), "trajectory_t": torch.tensor([0.6, 0.3])}, str(path))
    with pytest.raises(PreferenceDataError, match="line 2: a and b must record trajectory states at the same"):
        load_preference_data(mixed, wan)


def test_a_share_of_the_pairs_is_taken_at_a_recorded_state():

    records = list(_trajectory_records(4))
    data = synthetic_data_with_states(records)
    batch = [0, 1, 2, 3]
    x_a, x_b, t = torch.zeros(4, *WAN_LATENT), torch.zeros(4, *WAN_LATENT), torch.full((4,), 0.9)
    same = use_trajectory_states(data, batch, x_a, x_b, t, 0.0, torch.Generator().manual_seed(0))
    assert same[3] == 0 and same[0].equal(x_a) and same[2].equal(t)
    y_a, y_b, t_used, replaced = use_trajectory_states(data, batch, x_a, x_b, t, 1.0, torch.Generator().manual_seed(0))
    assert replaced == 4
    for row in batch:
        step = min(range(len(LEVELS)), key=lambda s: abs(LEVELS[s] - float(t_used[row])))
        assert float(t_used[row]) == pytest.approx(LEVELS[step])
        assert y_a[row].equal(records[row]["trajectory_a"][step]) and y_b[row].equal(records[row]["trajectory_b"][step])


def synthetic_data_with_states(records):
    from guidance.train.preference_data import PreferenceData

    n = len(records)
    return PreferenceData(objectives=("bright",), prompts=[RED] * n, latents_a=[r["a"] for r in records],
                          latents_b=[r["b"] for r in records], shapes=[SHAPE] * n,
                          labels=torch.zeros(n, 1, dtype=torch.long), test=torch.zeros(n, dtype=torch.bool),
                          lines=list(range(1, n + 1)), trajectories_a=[r["trajectory_a"] for r in records],
                          trajectories_b=[r["trajectory_b"] for r in records],
                          trajectory_t=[torch.tensor(LEVELS) for _ in records])


def test_training_on_sampler_states_ranks_them_where_forward_noising_cannot(wan, tmp_path):
    data = load_preference_data(write_pairs(tmp_path, OBJECTIVES, _trajectory_records(64)), wan)
    accuracy = {}
    for share in (0.0, 1.0):
        result = train_reward_model(wan, data, TrainConfig(epochs=6, trajectory_share=share, **FAST),
                                    progress=False, log=None)
        states = result.report["accuracy"]["trajectory"]
        assert states["pairs"] == 32 and states["t"][1:3] == pytest.approx([0.4, 0.7])
        accuracy[share] = states["objectives"]["bright"]["mean"]
        assert result.report["trajectory_state_pairs"] == (0 if share == 0 else 6 * 32)
    assert accuracy[1.0] >= 0.8 and accuracy[1.0] - accuracy[0.0] >= 0.15, accuracy


def test_a_trajectory_share_needs_pairs_with_states(wan, tmp_path):
    data = load_preference_data(write_pairs(tmp_path, OBJECTIVES, _contrastive_records(6)), wan)
    with pytest.raises(ValueError, match="trajectory share 0.5 needs training pairs that record sampler states"):
        train_reward_model(wan, data, TrainConfig(epochs=1, trajectory_share=0.5, **FAST), progress=False, log=None)
