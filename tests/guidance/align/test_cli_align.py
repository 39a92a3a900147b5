"""``nrg align`` end to end on a tiny pipeline directory, and its one-line errors."""

import json

import pytest
import torch

from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.train.preference_data import write_pairs
from server.cli import main

SHAPE = VideoShape(height=16, width=16, frames=5)


@pytest.fixture(scope="module")
def data_dir(tiny_dir, tmp_path_factory):
    family = load_pipeline(tiny_dir("wan"))
    shape = tuple(family.prepare_latents(SHAPE, [torch.Generator().manual_seed(0)]).shape[1:])
    generator = torch.Generator().manual_seed(0)
    records = [{"prompt": "a red circle moving left", "a": torch.randn(shape, generator=generator) + 0.5,
                "b": torch.randn(shape, generator=generator) - 0.5, "labels": {"mq": "A", "vq": "B"},
                "split": "test" if i % 4 == 0 else "train", "shape": SHAPE} for i in range(8)]
    root = tmp_path_factory.mktemp("align-data")
    write_pairs(root, ["vq", "mq"], records)
    return root


def test_align_cli_writes_a_servable_lora(tiny_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "dpo"
    status = main(["align", "--method", "flow-dpo", "--model", str(tiny_dir("wan")), "--data", str(data_dir),
                   "--out", str(out), "--objectives", "mq", "--lora-rank", "4", "--lora-alpha", "8",
                   "--steps", "2", "--batch", "2", "--lr", "1e-3", "--quiet"])
    assert status == 0
    report = json.loads((out / "align_report.json").read_text())
    assert report["method"] == "flow-dpo" and report["data"]["objectives"] == {"mq": 1.0}
    assert report["args"]["lora_rank"] == 4 and len(report["loss"]) == 2
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert "wrote the LoRA" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--objectives", "ta"], "--objectives: unknown objective 'ta'; the data has vq, mq"),
    (["--beta", "-1"], "--beta must be a positive number; got -1.0"),
    (["--t-min", "0.9", "--t-max", "0.1"], "need 0 <= --t-min < --t-max <= 1"),
    (["--method", "flow-rwr"], "is not a scored-clips data set"),
])
def test_align_cli_errors_are_one_line(tiny_dir, data_dir, tmp_path, capsys, extra, message):
    args = ["align", "--method", "flow-dpo", "--model", str(tiny_dir("wan")), "--data", str(data_dir),
            "--out", str(tmp_path / "o"), "--steps", "1", "--quiet", *extra]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nrg: error: ") and message in err


def test_align_cli_refuses_an_image_to_video_model(tiny_dir, data_dir, tmp_path, capsys):
    """Its clips have no image to condition on: a clear refusal, not a shape error deep in training."""
    with pytest.raises(SystemExit) as exit_info:
        main(["align", "--method", "flow-dpo", "--model", str(tiny_dir("wan-i2v")), "--data", str(data_dir),
              "--out", str(tmp_path / "o"), "--steps", "1", "--quiet"])
    assert exit_info.value.code == 2
    assert "nrg align works from prompts alone; this Wan model is image-to-video" in capsys.readouterr().err


def test_align_cli_spro_judge_demo_scores_with_the_demo_worlds_truth(tiny_dir, data_dir, tmp_path, monkeypatch):
    import demo_world.judge

    calls = []
    truth = demo_world.judge.evaluate
    monkeypatch.setattr(demo_world.judge, "evaluate", lambda frames, prompt: calls.append(prompt) or truth(frames, prompt))
    out = tmp_path / "spro"
    status = main(["align", "--method", "spro", "--judge", "demo", "--model", str(tiny_dir("wan")), "--data",
                   str(data_dir), "--out", str(out), "--objectives", "mq", "--lora-rank", "4", "--lora-alpha", "8",
                   "--steps", "1", "--batch", "2", "--rounds", "1", "--spro-samples", "2", "--online-steps", "2",
                   "--quiet"])
    assert status == 0
    assert calls == ["a red circle moving left"] * 2  # one training prompt, two self-play samples
    assert json.loads((out / "align_report.json").read_text())["args"]["judge"] == "demo"


def test_generate_with_an_aligned_checkpoint(tiny_dir, data_dir, tmp_path):
    import numpy as np

    from guidance.align.config import AlignConfig
    from guidance.align.trainer import align
    from guidance.train.preference_data import load_preference_data

    family = load_pipeline(tiny_dir("wan"))
    align(family, load_preference_data(data_dir, family), AlignConfig(objectives="mq", lora_rank=4, lora_alpha=8, steps=1, lr=1.0),
          tmp_path / "ckpt", progress=False, log=None)
    common = ["generate", "--model", str(tiny_dir("wan")), "--prompt", "a red circle moving left", "--size", "16x16",
              "--frames", "5", "--steps", "2", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "base.npy")]) == 0
    assert main([*common, "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "aligned.npy")]) == 0
    assert not np.array_equal(np.load(tmp_path / "base.npy"), np.load(tmp_path / "aligned.npy"))
    with pytest.raises(SystemExit):
        main([*common, "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "x.npy")])
