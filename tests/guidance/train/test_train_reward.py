import json

import pytest
import torch

from guidance.families.base import VideoShape
from guidance.images import fit_image, read_image
from guidance.reward_model import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    init_reward_model,
    load_reward_model,
)
from guidance.sampler import SampleSpec, sample
from guidance.train.preference_data import load_preference_data, write_pairs
from guidance.train.reward import (
    REPORT_NAME,
    PromptCache,
    TrainConfig,
    draw_noisy_pairs,
    hold_fixed_latents,
    score_pairs,
    train_reward_model,
)
from tests.guidance.families.equivalence import test_image
from tests.guidance.train.synthetic import OBJECTIVES, clip_records, latent_records

SHAPE = VideoShape(height=32, width=32, frames=9)
WAN_LATENT = (16, 3, 4, 4)
FAST = {"num_blocks": 1, "batch_size": 8, "lr": 3e-3}


@pytest.fixture(scope="module")
def wan(tiny_family):
    return tiny_family("wan")


@pytest.fixture(scope="module")
def synthetic(wan, tmp_path_factory):
    root = write_pairs(tmp_path_factory.mktemp("synthetic"), OBJECTIVES, latent_records(WAN_LATENT, 64))
    return load_preference_data(root, wan)


@pytest.fixture(scope="module")
def trained(wan, synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("reward")
    return train_reward_model(wan, synthetic, TrainConfig(epochs=4, **FAST), out, progress=False, log=None)


@pytest.mark.parametrize("family_name", ["wan", "cogvideox"])
def test_both_clips_of_a_pair_get_the_same_noise_and_t(tiny_family, family_name):
    family = tiny_family(family_name)
    a, b = torch.randn(2, 3, 16, 4, 4), torch.randn(2, 3, 16, 4, 4)
    x_a, x_b, t, noise = draw_noisy_pairs(family, a, b, torch.Generator().manual_seed(0), 0.2, 0.6)
    assert t.shape == (2,) and bool(((t >= 0.2) & (t <= 0.6)).all()) and t[0] != t[1]
    assert not torch.allclose(noise[0], noise[1])
    # The same t and noise for A and B: noising each clip alone with them gives x_t of both.
    for i in range(2):
        for clean, noisy in ((a, x_a), (b, x_b)):
            alone = family.add_noise(clean[i : i + 1], noise[i : i + 1], t[i : i + 1])
            assert torch.allclose(alone[0], noisy[i], atol=1e-6)
    if family.prediction == "flow":  # x_t^A - x_t^B = (1 - t)(x0^A - x0^B): the shared noise cancels
        assert torch.allclose(x_a - x_b, (1 - t).view(-1, 1, 1, 1, 1) * (a - b), atol=1e-5)
    # Same seed, same draws.
    again = draw_noisy_pairs(family, a, b, torch.Generator().manual_seed(0), 0.2, 0.6)
    assert torch.equal(again[0], x_a) and torch.equal(again[2], t)


def test_training_learns_a_synthetic_preference(synthetic, trained):
    report = trained.report
    accuracy = report["accuracy"]["objectives"]
    # Opposite rules on separate outputs, both learned, at the lowest noise level and on average.
    for name in ("bright", "dark"):
        assert accuracy[name]["accuracy"][0] >= 0.75 and accuracy[name]["mean"] >= 0.8, accuracy
    assert report["loss"][-1] < 0.6 * report["loss"][0]
    assert len(report["evaluations"]) == 4 and report["data"]["test_pairs"] == 16
    # Ties are excluded from accuracy and counted apart; missing labels are masked.
    ties = int((synthetic.labels[synthetic.test][:, 0] == 2).sum())
    assert ties >= 1 and accuracy["bright"]["ties"] == ties and accuracy["bright"]["decisive"] == 16 - ties
    assert accuracy["other"]["decisive"] == 16 and report["data"]["labels"]["other"]["missing"] == 32
    # Embeddings frozen, blocks and head trained.
    assert report["parameters"]["trained"] < report["parameters"]["total"]


def test_saved_model_reloads_and_reproduces_the_scores(wan, trained):
    out = trained.out_dir
    assert (out / CONFIG_NAME).is_file() and (out / WEIGHTS_NAME).is_file()
    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved["args"]["epochs"] == 4 and saved["objectives"] == list(OBJECTIVES) and len(saved["loss"]) == 4
    loaded = load_reward_model(out, wan)
    cond, _ = wan.encode_prompts(["a blue square", "a red circle"], None)
    latents = torch.randn(2, *WAN_LATENT, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.1, 0.8])
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    torch.testing.assert_close(loaded(latents, t, cond, SHAPE), trained.model(latents, t, cond, SHAPE),
                               rtol=1e-5, atol=1e-6)


def test_training_is_deterministic_given_the_seed_and_resumes(wan, synthetic, trained, tmp_path):
    config = TrainConfig(epochs=1, freeze_trunk=True, **FAST)
    first = train_reward_model(wan, synthetic, config, progress=False, log=None)
    second = train_reward_model(wan, synthetic, config, progress=False, log=None)
    assert first.step_losses == second.step_losses
    for (name, p), q in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(p, q), name
    # freeze_trunk: the copied blocks are untouched.
    source = wan.transformer.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in first.model.trunk.state_dict().items())
    # --init resumes from the trained model (its objectives and blocks).
    resumed = train_reward_model(wan, synthetic, TrainConfig(epochs=0, init=str(trained.out_dir)), tmp_path,
                                 progress=False, log=None)
    assert resumed.report["accuracy"] == trained.report["accuracy"]
    with pytest.raises(ValueError, match="differ from the --init model"):
        train_reward_model(wan, synthetic, TrainConfig(objectives=["bright"], init=str(trained.out_dir)), log=None)


@pytest.mark.parametrize(("family_name", "shape", "first_frames"), [
    ("cogvideox", VideoShape(height=32, width=32, frames=9), False),
    ("ltx", VideoShape(height=32, width=64, frames=9), False),
    ("hunyuan", VideoShape(height=32, width=32, frames=9), False),
    ("ltx-i2v", VideoShape(height=32, width=64, frames=9), True),
    ("cogvideox-i2v", VideoShape(height=32, width=32, frames=9), True),
    ("wan-ti2v-5b", VideoShape(height=32, width=32, frames=9), True),
])
def test_training_runs_for_other_families_from_clips(tiny_family, tmp_path, family_name, shape, first_frames):
    """Text-to-video models from clips, and image-to-video ones from clips with the first frame of each pair."""
    family = tiny_family(family_name)
    records = clip_records(shape.frames, shape.height, shape.width, 4)
    if first_frames:
        records = [{**record, "image": test_image(i, shape.width, shape.height)} for i, record in enumerate(records)]
    write_pairs(tmp_path / "data", ["bright"], records, kind="clips")
    data = load_preference_data(tmp_path / "data", family)
    result = train_reward_model(family, data, TrainConfig(epochs=1, num_blocks=1, batch_size=2), tmp_path / "out",
                                progress=False, log=None)
    assert result.report["steps"] == 1 and result.report["family"] == family.name
    assert result.report["accuracy"]["objectives"]["bright"]["decisive"] == 2
    loaded = load_reward_model(tmp_path / "out", family)
    assert loaded.objectives == ("bright",)
    cond = PromptCache(family)(data.prompts[:1], images=data.images[:1] if first_frames else None, shape=shape)
    a = data.latents_a[0][None]
    t = torch.tensor([0.5])
    assert float(score_pairs(loaded, a, a, t, cond, shape).abs().max()) < 1e-5  # same clip, same noise
    assert torch.allclose(loaded(a, t, cond, shape), result.model(a, t, cond, shape))


def test_a_reward_trains_on_image_to_video_pairs_and_scores_under_their_image(tiny_family, tmp_path):
    i2v = tiny_family("wan-i2v")
    images = [test_image(seed, 48, 48) for seed in range(2)]
    records = [{**record, "image": images[i % 2]} for i, record in enumerate(latent_records(WAN_LATENT, 8))]
    data = load_preference_data(write_pairs(tmp_path / "data", OBJECTIVES, records), i2v)
    result = train_reward_model(i2v, data, TrainConfig(epochs=1, num_blocks=1, batch_size=4), tmp_path / "out",
                                progress=False, log=None)
    assert result.report["steps"] == 2 and result.report["accuracy"]["pairs"] == 2
    trained = load_reward_model(tmp_path / "out", i2v)
    untrained = init_reward_model(i2v, OBJECTIVES, num_blocks=1)
    assert any(not torch.equal(p, q) for p, q in zip(trained.head.parameters(), untrained.head.parameters()))
    latents = data.latents_a[0][None].expand(2, *WAN_LATENT)
    cond = PromptCache(i2v)([data.prompts[0]] * 2, data.images[:2], SHAPE)
    scores = trained(latents, torch.tensor([0.3, 0.3]), cond, SHAPE)
    assert (scores[0] - scores[1]).abs().max() > 1e-4  # same latents, other image


def test_training_conditions_on_the_image_as_a_served_job_does(tiny_family, tmp_path):
    """The conditioning a pair's image file gets in training is the one a sample of that image gets: the
    final reward the sampler reports equals the reward of its latents under the training conditioning."""
    i2v = tiny_family("wan-i2v")
    reward = init_reward_model(i2v, ["a"], num_blocks=1)
    path = tmp_path / "first.png"
    test_image(3, 48, 48).save(path)
    image = fit_image(read_image(path), SHAPE.width, SHAPE.height)
    result = sample(i2v, [SampleSpec("a red ball", seed=1, image=image)], SHAPE, 2, reward)
    cond = PromptCache(i2v)(["a red ball"], [path], SHAPE)
    torch.testing.assert_close(reward(result.latents, torch.zeros(1), cond, SHAPE).float(), result.rewards.float())


def test_the_latents_an_image_holds_fixed_stay_clean_in_training(tiny_family, tmp_path):
    ltx = tiny_family("ltx")
    shape = VideoShape(height=32, width=64, frames=9)
    path = tmp_path / "first.png"
    test_image(0, 64, 32).save(path)
    cond = PromptCache(ltx)(["p", "p"], [path, None], shape)
    clean = ltx.prepare_latents(shape, [torch.Generator().manual_seed(s) for s in range(2)])
    noisy = ltx.add_noise(clean, torch.randn_like(clean), torch.tensor([0.7, 0.7]))
    held = hold_fixed_latents(ltx, noisy, clean, cond)
    first = cond.image["mask"][0] > 0  # the first latent frame's tokens, which the image holds
    assert 0 < int(first.sum()) < len(first)
    assert torch.equal(held[0, first], clean[0, first]) and torch.equal(held[0, ~first], noisy[0, ~first])
    assert torch.equal(held[1], noisy[1])  # a row without an image holds nothing


