"""``nrg demo make-pairs``, ``nrg eval`` and ``nrg demo train`` on tiny runs; the committed demo weights load."""

import json

import pytest
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


def test_eval_tiny_run_writes_the_report(tmp_path, capsys):
    out = tmp_path / "eval.json"
    bench = tmp_path / "benchmarks.md"
    assert main(["eval", "--prompts", "2", "--seeds", "1", "--steps", "2", "--settings", "0:0:1,0.5:0.5:0",
                 "--strengths", "10,30", "--output", str(out), "--benchmarks", str(bench), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert {"command", "device", "date", "unguided", "rows", "prompts", "seeds", "steps"} <= set(report)
    assert set(report["unguided"]) == {"vq", "mq", "ta", "seconds_per_clip"}
    assert len(report["rows"]) == 4
    for row in report["rows"]:
        assert {"weights", "strength", "vq", "mq", "ta", "win_rate", "wins", "losses", "ties",
                "seconds_per_clip"} <= set(row)
        assert set(row["win_rate"]) == {"vq", "mq", "ta"}
    assert "| 0:0:1 | 10 |" in capsys.readouterr().out
    text = bench.read_text()
    assert "every figure" in text.lower() and "command: `nrg eval --prompts 2" in text


def test_eval_rejects_bad_settings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--settings", "1:1", "--prompts", "1", "--seeds", "1", "--steps", "1", "--quiet"])
    assert exit_info.value.code == 2 and "VQ:MQ:TA" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_training_is_deterministic_given_the_seed(tmp_path):
    from guidance.demo.train import TrainConfig, train_demo

    def run(out):
        cfg = TrainConfig(seed=3, vae_steps=2, dit_steps=2, vae_batch=2, vae_frames=5, latent_clips=2, dit_batch=2,
                          check_clips=0, threads=1)
        train_demo(out, cfg, progress=False)
        return {part: load_file(str(out / part / "diffusion_pytorch_model.safetensors")) for part in ("vae", "transformer")}

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    for part in first:
        assert first[part].keys() == second[part].keys()
        assert all((first[part][k] == second[part][k]).all() for k in first[part]), part
    config = json.loads((tmp_path / "a" / "demo_training.json").read_text())
    assert config["vae"]["steps"] == 2 and config["transformer"]["steps"] == 2


def test_generate_on_the_embedded_model_guides_with_the_demo_reward_by_default(tmp_path, capsys):
    assert main(["generate", "--prompt", "a red circle moving left", "--weights", "ta=1", "--strength", "3",
                 "--steps", "2", "--quiet", "--out", str(tmp_path / "g.npy")]) == 0
    out = capsys.readouterr().out
    assert "final-latent rewards: vq=" in out and "ta=" in out


def test_serve_loads_the_demo_reward_for_the_embedded_model():
    from server.config import DEMO_MODEL_NAME, ServerConfig, load_models

    hosted = load_models(ServerConfig())
    assert hosted[DEMO_MODEL_NAME].reward is not None
    assert hosted[DEMO_MODEL_NAME].reward.objectives == ("vq", "mq", "ta")
