"""``nrg demo make-pairs``, ``nrg eval`` and ``nrg demo train`` on tiny runs; the committed demo weights load."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_REWARD_DIR, DEFAULT_SHAPE
from server.cli import main


@pytest.fixture(scope="module")
def demo_family():
    from guidance.families import load_pipeline

    return load_pipeline(DEFAULT_MODEL_DIR)


def test_committed_demo_pipeline_and_reward_load_through_the_public_loaders(demo_family):
    from guidance.reward_model import load_reward_model

    assert demo_family.name == "wan"
    demo_family.check_shape(DEFAULT_SHAPE)
    reward = load_reward_model(DEFAULT_REWARD_DIR, demo_family)
    assert reward.objectives == ("vq", "mq", "ta")
    size = sum(f.stat().st_size for d in (DEFAULT_MODEL_DIR, DEFAULT_REWARD_DIR) for f in d.rglob("*") if f.is_file())
    assert size <= 20_000_000


def test_make_pairs_writes_a_valid_preference_data_set(demo_family, tmp_path):
    from guidance.train.preference_data import load_preference_data, read_pairs

    out = tmp_path / "pairs"
    assert main(["demo", "make-pairs", "--out", str(out), "--pairs", "3", "--steps", "2", "--batch", "2",
                 "--quiet"]) == 0
    info, records = read_pairs(out)
    assert info.objectives == ("vq", "mq", "ta") and len(records) == 3
    assert all(set(r.labels) == {"vq", "mq", "ta"} for r in records)
    assert all(label in ("A", "B", "tie") for r in records for label in r.labels.values())
    data = load_preference_data(out, demo_family, progress=False)
    assert len(data.prompts) == 3
    summary = json.loads((out / "make_pairs.json").read_text())
    assert summary["pairs"] == 3 and len(summary["scores"]) == 3


def test_make_pairs_pools_and_prompt_contrastive_pairs(demo_family, tmp_path):
    from demo_world.pairs import changed_prompt
    from demo_world.world import parse_prompt
    from guidance.train.preference_data import read_pairs

    out = tmp_path / "pairs"
    assert main(["demo", "make-pairs", "--out", str(out), "--pairs", "1", "--pool", "3", "--contrastive",
                 "--steps", "2", "--batch", "4", "--quiet"]) == 0
    records = read_pairs(out)[1]
    within, contrastive = records[:3], records[3:]
    assert len(within) == 3 and len(contrastive) == 3  # 3 * 2 / 2 pairs, one contrastive pair per sample
    # each of the 3 samples is written once, however many pairs it is in
    assert len({r.a for r in within} | {r.b for r in within}) == 3 and all(r.prompt_b is None for r in within)
    assert {r.a for r in contrastive} == {r.a for r in within} | {r.b for r in within}
    for r in contrastive:
        assert r.prompt_b is not None and r.prompt_b != r.prompt
        assert r.labels["vq"] == "tie" and r.labels["mq"] == "tie"
        assert load_file(r.a)["latents"].equal(load_file(r.b)["latents"])
        words = [x for x, y in zip(r.prompt.split(), r.prompt_b.split()) if x != y]
        assert len(words) == 1
    summary = json.loads((out / "make_pairs.json").read_text())
    assert summary["pairs"] == 6 and summary["pool"] == 3 and summary["contrastive"] is True
    prompt = parse_prompt("a yellow triangle moving down quickly")
    assert [changed_prompt(prompt, i).text for i in range(3)] == [
        "a red triangle moving down quickly", "a yellow circle moving down quickly", "a yellow triangle moving left quickly"]


def test_make_pairs_records_the_sampler_states_of_the_guidance_window(demo_family, tmp_path):
    from guidance.sampler import sample_with_states
    from guidance.nrg import DEFAULT_WINDOW
    from guidance.sampler import SampleSpec, sample
    from guidance.train.preference_data import load_preference_data

    specs = [SampleSpec("a red circle moving left", seed=5), SampleSpec("a blue square moving up", seed=6)]
    plain = sample(demo_family, specs, DEFAULT_SHAPE, 6)
    result, states, levels = sample_with_states(demo_family, specs, DEFAULT_SHAPE, 6, DEFAULT_WINDOW)
    assert result.latents.equal(plain.latents)  # recording the states does not change the samples
    schedule = demo_family.schedule(6, DEFAULT_SHAPE).noise_levels[:6]
    assert levels == [v for v in schedule if DEFAULT_WINDOW[0] <= v <= DEFAULT_WINDOW[1]] and len(levels) >= 2
    assert states.shape == (2, len(levels), *plain.latents.shape[1:])

    out = tmp_path / "pairs"
    assert main(["demo", "make-pairs", "--out", str(out), "--pairs", "1", "--pool", "2", "--contrastive", "--states",
                 "--steps", "6", "--batch", "2", "--quiet"]) == 0
    data = load_preference_data(out, demo_family)
    assert data.with_trajectory(range(len(data))) == [0, 1, 2]
    assert data.trajectory_t[0].tolist() == pytest.approx(levels)
    assert data.trajectories_a[1].equal(data.trajectories_b[1])  # a contrastive pair: one clip, one trajectory
    assert json.loads((out / "make_pairs.json").read_text())["state_levels"] == pytest.approx(levels)


def test_eval_oracle_guides_with_the_ground_truth_and_refuses_tuning(tmp_path):
    out = tmp_path / "oracle.json"
    assert main(["eval", "--oracle", "--prompts", "1", "--seeds", "1", "--steps", "2", "--settings", "1:0:0",
                 "--strengths", "3", "--window", "0,1", "--output", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["reward"].startswith("oracle") and report["calibration"] is None
    assert len(report["rows"]) == 1 and report["rows"][0]["skipped_steps"] == 0
    assert report["per_clip"]["1:0:0@3"] != report["per_clip"]["unguided"]  # the oracle's gradient moved the clip
    with pytest.raises(SystemExit) as refused:
        main(["eval", "--oracle", "--tune", "--strengths", "1"])
    assert refused.value.code == 2


def test_eval_tiny_run_writes_the_report_and_pictures(tmp_path, capsys):
    out = tmp_path / "eval.json"
    bench = tmp_path / "benchmarks.md"
    assert main(["eval", "--prompts", "2", "--seeds", "1", "--steps", "3", "--settings", "0:0:1,0.5:0.5:0",
                 "--strengths", "1,3", "--output", str(out), "--benchmarks", str(bench),
                 "--figures", str(tmp_path / "fig"), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert {"command", "device", "date", "unguided", "rows", "prompts", "seeds", "steps", "reward_defaults"} <= set(report)
    assert report["mode"] == "relative" and report["window"] == [0.2, 0.8]  # the reward model's defaults
    assert report["seeds"] == [1_000_000] and report["clips_per_row"] == 2
    assert set(report["unguided"]) == {"vq", "mq", "ta", "seconds_per_clip"}
    assert len(report["rows"]) == 4
    for row in report["rows"]:
        assert {"weights", "strength", "vq", "mq", "ta", "win_rate", "wins", "losses", "ties", "stats",
                "seconds_per_clip", "cost_vs_unguided"} <= set(row)
        for o in ("vq", "mq", "ta"):
            stats = row["stats"][o]
            assert stats["wins"] + stats["losses"] + stats["ties"] == 2
            assert (stats["rate"] is None) == (stats["decisive"] == 0)
    assert "| 0:0:1 | relative | 1 |" in capsys.readouterr().out
    text = bench.read_text()
    assert "every figure" in text.lower() and "command: `nrg eval --prompts 2" in text
    for name in ("contact_sheet", "tradeoff"):
        picture = Image.open(report["figures"][name])
        assert picture.format == "PNG" and picture.width > 100


def test_eval_tune_picks_on_tuning_seeds_and_writes_the_reward_defaults(tmp_path, capsys):
    import shutil

    from guidance.reward_model import read_reward_config

    reward = tmp_path / "reward"
    shutil.copytree(DEFAULT_REWARD_DIR, reward)
    out = tmp_path / "tune.json"
    assert main(["eval", "--tune", "--write-defaults", "--reward", str(reward), "--prompts", "1", "--seeds", "2",
                 "--steps", "3", "--strengths", "0.5,2", "--window", "0.1,0.9", "--output", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["settings"] == ["1:0:0", "0:1:0", "0:0:1"]
    assert all(seed >= 1_500_000 for seed in report["seeds"])  # never the report's seeds
    assert set(report["tuning_scores"]) == {"0.5", "2"}
    defaults = read_reward_config(reward)["guidance_defaults"]
    best = max(report["tuning_scores"].items(), key=lambda kv: (kv[1], -float(kv[0])))[0]
    assert defaults["strength"] == float(best) and defaults["window"] == [0.1, 0.9] and defaults["mode"] == "relative"
    assert "nrg eval --tune" in defaults["source"]
    assert f"chosen strength: {best}" in capsys.readouterr().out
    calibration = read_reward_config(reward)["calibration"]
    assert calibration["samples"] == 2 and set(calibration["mean"]) == {"vq", "mq", "ta"}


def test_eval_tune_needs_strengths_and_write_defaults_needs_tune(capsys):
    for argv, message in ((["--tune"], "--tune needs --strengths"), (["--write-defaults"], "give one of them too"),
                          (["--tune", "--calibrate"], "not both")):
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", *argv, "--quiet"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_eval_calibrate_writes_the_score_statistics_of_unguided_clips(tmp_path, capsys):
    import shutil

    from guidance.reward_model import read_reward_config

    reward = tmp_path / "reward"
    shutil.copytree(DEFAULT_REWARD_DIR, reward)
    before = read_reward_config(reward).get("guidance_defaults")
    assert main(["eval", "--calibrate", "--write-defaults", "--reward", str(reward), "--prompts", "2", "--seeds", "1",
                 "--steps", "2", "--quiet"]) == 0
    config = read_reward_config(reward)
    assert config["calibration"]["samples"] == 2 and all(v >= 0 for v in config["calibration"]["std"].values())
    assert config.get("guidance_defaults") == before  # calibrating leaves the tuned settings alone
    assert "wrote calibration to" in capsys.readouterr().out


def test_eval_rejects_bad_settings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--settings", "1:1", "--prompts", "1", "--seeds", "1", "--steps", "1", "--quiet"])
    assert exit_info.value.code == 2 and "VQ:MQ:TA" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["v1", "v2"])
def test_demo_training_is_deterministic_given_the_seed(tmp_path, recipe):
    from demo_world.train import TrainConfig, train_demo

    def run(out):
        cfg = TrainConfig.recipe(recipe, seed=3, vae_steps=2, dit_steps=2, vae_batch=2, vae_frames=5, latent_clips=2,
                                 dit_batch=2, check_clips=0, threads=1)
        train_demo(out, cfg, progress=False)
        return {part: load_file(str(out / part / "diffusion_pytorch_model.safetensors")) for part in ("vae", "transformer")}

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    for part in first:
        assert first[part].keys() == second[part].keys()
        assert all((first[part][k] == second[part][k]).all() for k in first[part]), part
    config = json.loads((tmp_path / "a" / "demo_training.json").read_text())
    assert config["vae"]["steps"] == 2 and config["transformer"]["steps"] == 2


@pytest.mark.slow
def test_training_further_starts_from_the_earlier_runs_transformer_and_vae(tmp_path):
    from demo_world.train import TrainConfig, train_demo

    def weights(out):
        return {part: load_file(str(out / part / "diffusion_pytorch_model.safetensors")) for part in ("vae", "transformer")}

    small = dict(seed=3, vae_steps=2, vae_batch=2, vae_frames=5, latent_clips=2, dit_batch=2, check_clips=0, threads=1)
    train_demo(tmp_path / "a", TrainConfig.recipe("v2", dit_steps=2, **small), progress=False)
    train_demo(tmp_path / "b", TrainConfig.recipe("v2", dit_steps=0, transformer_from=str(tmp_path / "a"), **small),
               progress=False)
    first, again = weights(tmp_path / "a"), weights(tmp_path / "b")
    for part in first:
        assert all(torch.equal(first[part][k], again[part][k]) for k in first[part]), part
    record = json.loads((tmp_path / "b" / "demo_training.json").read_text())
    assert record["transformer_from"]["steps"] == 2 and record["config"]["vae_from"] == str(tmp_path / "a")
    with pytest.raises(ValueError, match="takes the VAE of the same run"):
        train_demo(tmp_path / "c", TrainConfig.recipe("v2", transformer_from=str(tmp_path / "a"), vae_from="elsewhere",
                                                      **small), progress=False)


def test_generate_on_the_embedded_model_guides_with_the_demo_reward_by_default(tmp_path, capsys):
    assert main(["generate", "--prompt", "a red circle moving left", "--weights", "ta=1", "--strength", "3",
                 "--steps", "2", "--quiet", "--out", str(tmp_path / "g.npy")]) == 0
    out = capsys.readouterr().out
    assert "optimised reward (what guidance pushed up), final latents: vq=" in out and "ta=" in out


def test_serve_loads_the_demo_reward_for_the_embedded_model():
    from server.config import DEMO_MODEL_NAME, ServerConfig, load_models

    hosted = load_models(ServerConfig())
    assert hosted[DEMO_MODEL_NAME].reward is not None
    assert hosted[DEMO_MODEL_NAME].reward.objectives == ("vq", "mq", "ta")


def test_training_recipes_name_the_published_settings():
    from demo_world.train import TrainConfig

    v1, v2 = TrainConfig.recipe("v1"), TrainConfig.recipe("v2", seed=3)
    assert v1 == TrainConfig() and not v1.varied_quality
    assert v2.varied_quality and v2.z_dim == 16 and v2.seed == 3 and v2.resolved_steps() == (1800, 6000)
    with pytest.raises(ValueError, match="unknown recipe 'v9'"):
        TrainConfig.recipe("v9")
