import json

import pytest
import torch

from guidance.families.base import VideoShape
from guidance.nrg import BUILTIN_DEFAULTS, GuidanceDefaults, GuidanceSpec
from guidance.reward_model import (
    CONFIG_NAME,
    LatentRewardModel,
    init_reward_model,
    load_reward_model,
    RewardCalibration,
    write_calibration,
    write_guidance_defaults,
)
from guidance.sampler import SampleSpec, sample

SHAPE = VideoShape(height=32, width=32, frames=9)
OBJECTIVES = ("vq", "mq", "ta")


@pytest.fixture(scope="module")
def wan(tiny_family):
    return tiny_family("wan")


@pytest.fixture(scope="module")
def reward(wan):
    return init_reward_model(wan, OBJECTIVES, num_blocks=1, seed=0)


def _inputs(wan, batch=2):
    cond, _ = wan.encode_prompts(["a red circle moving left", "a blue square"][:batch], None)
    latents = wan.prepare_latents(SHAPE, [torch.Generator().manual_seed(i) for i in range(batch)])
    return latents, cond


def test_scores_every_objective_and_depends_on_t(wan, reward):
    latents, cond = _inputs(wan)
    early = reward(latents, torch.full((2,), 0.9), cond, SHAPE)
    late = reward(latents, torch.full((2,), 0.1), cond, SHAPE)
    assert early.shape == (2, len(OBJECTIVES))
    assert not torch.allclose(early, late)


def test_trunk_is_copied_from_the_pipeline_transformer(wan, reward):
    assert len(reward.trunk.blocks) == 1
    source = wan.transformer.state_dict()
    for name, tensor in reward.trunk.state_dict().items():
        assert torch.equal(tensor, source[name]), name


def test_gradient_reaches_the_latents(wan, reward):
    latents, cond = _inputs(wan)
    x = latents.clone().requires_grad_(True)
    reward(x, torch.full((2,), 0.5), cond, SHAPE)[:, 0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_save_load_round_trip(wan, reward, tmp_path):
    reward.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["objectives"] == list(OBJECTIVES) and config["family"] == "wan" and config["num_blocks"] == 1
    loaded = load_reward_model(tmp_path, wan)
    # The weights round-trip bit for bit; that is what saving promises.
    saved, restored = reward.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    for name, tensor in saved.items():
        assert torch.equal(restored[name], tensor), name
    # Both come back in one mode, so the outputs agree; a tolerance, since kernels may reorder sums.
    assert (loaded.training, reward.training) == (False, False)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert not any(p.requires_grad for p in reward.parameters())
    latents, cond = _inputs(wan)
    t = torch.tensor([0.3, 0.7])
    torch.testing.assert_close(loaded(latents, t, cond, SHAPE), reward(latents, t, cond, SHAPE), rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))


def test_recommended_guidance_defaults_are_stored_and_loaded(wan, reward, tmp_path):
    reward.save(tmp_path)
    assert load_reward_model(tmp_path, wan).guidance_defaults == BUILTIN_DEFAULTS
    tuned = GuidanceDefaults("relative", 2.5, (0.25, 0.75), "nrg eval --tune (test)")
    write_guidance_defaults(tmp_path, tuned)
    assert load_reward_model(tmp_path, wan).guidance_defaults == tuned
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    config["guidance_defaults"]["window"] = [0.9, 0.1]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="reward_config.json: guidance_defaults.window must satisfy"):
        load_reward_model(tmp_path, wan)


def test_calibration_turns_scores_into_z_scores_and_round_trips(wan, reward, tmp_path):
    scores = torch.tensor([[1.0, 10.0, 0.0], [3.0, 10.0, 0.0], [5.0, 10.0, 0.0]])
    calibration = RewardCalibration.from_scores(OBJECTIVES, scores, "test")
    assert calibration.mean == {"vq": 3.0, "mq": 10.0, "ta": 0.0} and calibration.std["vq"] == pytest.approx(2.0)
    # A constant objective has no spread: no z-score rather than a division by zero.
    assert calibration.z_scores({"vq": 7.0, "mq": 11.0, "ta": 0.5}) == {"vq": pytest.approx(2.0)}
    with pytest.raises(ValueError, match="calibration needs scores"):
        RewardCalibration.from_scores(OBJECTIVES, scores[:1], "test")
    reward.save(tmp_path)
    assert load_reward_model(tmp_path, wan).calibration is None
    write_calibration(tmp_path, calibration)
    assert load_reward_model(tmp_path, wan).calibration == calibration
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    del config["calibration"]["std"]["ta"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="calibration needs mean and std"):
        load_reward_model(tmp_path, wan)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("family", "ltx", "built for the ltx family"), ("fingerprint", "0" * 16, "another wan transformer configuration"),
     ("format_version", 99, "unsupported format_version")],
)
def test_loading_onto_a_mismatched_pipeline_is_a_clear_error(wan, reward, tmp_path, field, value, message):
    reward.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    config[field] = value
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_reward_model(tmp_path, wan)


def test_missing_directory_is_a_clear_error(wan, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a reward model directory"):
        load_reward_model(tmp_path, wan)


@pytest.mark.parametrize(
    ("objectives", "blocks", "message"),
    [((), 1, "objectives"), (("vq", "vq"), 1, "objectives"), (("v q",), 1, "objectives"), (("vq",), 0, "blocks"),
     (("vq",), 3, "blocks must be between 1 and 2")],
)
def test_bad_construction_arguments(wan, objectives, blocks, message):
    with pytest.raises(ValueError, match=message):
        LatentRewardModel(wan, objectives, blocks)


def test_guides_the_sampler(wan, reward):
    reward.requires_grad_(False)
    spec = SampleSpec("a red circle moving left", seed=2)
    plain = sample(wan, [spec], SHAPE, 4, reward)
    guided = sample(wan, [SampleSpec(spec.prompt, seed=2, guidance=GuidanceSpec({"vq": 1.0}, strength=50.0, window=(0.0, 1.0)))],
                    SHAPE, 4, reward)
    assert guided.guided_steps == [3] and guided.skipped_steps == [0]
    assert torch.isfinite(guided.latents).all()
    assert not torch.equal(plain.latents, guided.latents)


def test_trunk_keeps_the_source_dtypes_in_a_bf16_pipeline(tiny_dir):
    from guidance.families import load_pipeline

    family = load_pipeline(tiny_dir("wan"), dtype=torch.bfloat16)
    model = init_reward_model(family, ["vq"], num_blocks=1)
    source = family.transformer.state_dict()
    dtypes = {name: tensor.dtype for name, tensor in model.trunk.state_dict().items()}
    assert dtypes == {name: source[name].dtype for name in dtypes}
    assert {torch.bfloat16, torch.float32} <= set(dtypes.values())
