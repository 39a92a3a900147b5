"""``nrg eval --checkpoint``: aligned checkpoints against the base model on the embedded demo model."""

import json

import pytest
import torch

from demo_world.compare import comparisons, run_checkpoint_eval
from guidance.demo import DEFAULT_MODEL_DIR
from server.cli import main


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    """A random rank-2 LoRA for the demo transformer, written as nrg align writes one."""
    from guidance.align.lora import attach_lora, lora_parameters, save_lora
    from guidance.families import load_pipeline

    family = load_pipeline(DEFAULT_MODEL_DIR)
    attach_lora(family, 2, 4, ["to_q", "to_v"], seed=0)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _, p in lora_parameters(family):
            p.add_(0.5 * torch.randn_like(p))
    return save_lora(family, tmp_path_factory.mktemp("lora"))


def test_comparisons_cover_alignment_and_guidance():
    assert comparisons(["dpo"], guided=False) == [("dpo", "base")]
    assert comparisons(["dpo"], guided=True) == [
        ("dpo", "base"), ("dpo + guidance", "dpo"), ("dpo + guidance", "base + guidance"), ("base + guidance", "base")]


def test_checkpoint_eval_pairs_configs_on_the_same_items(lora_dir):
    report = run_checkpoint_eval({"dpo": lora_dir}, setting="0:1:0", strength=1.0, prompts=1, seeds=2, steps=2,
                                 device="cpu", progress=False)
    assert list(report["per_clip"]) == ["base", "dpo", "base + guidance", "dpo + guidance"]
    assert report["clips_per_config"] == 2 and report["seeds"] == [1_000_000, 1_000_001]
    row = report["rows"][0]
    assert (row["config"], row["against"]) == ("dpo", "base")
    stats = row["stats"]["vq"]
    assert stats["wins"] + stats["losses"] + stats["ties"] == 2
    # The LoRA changes the samples; the base configuration is the base model's.
    assert report["per_clip"]["dpo"] != report["per_clip"]["base"]


def test_eval_cli_checkpoint_mode(lora_dir, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    bench = tmp_path / "bench.md"
    assert main(["eval", "--checkpoint", f"dpo={lora_dir}", "--checkpoint-guidance", "none", "--prompts", "1",
                 "--seeds", "1", "--steps", "2", "--device", "cpu", "--output", str(out), "--benchmarks", str(bench),
                 "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["guidance"] is None and [r["config"] for r in report["rows"]] == ["dpo"]
    assert "| dpo | base |" in capsys.readouterr().out
    assert "Aligned checkpoints on the demo world" in bench.read_text()
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", "base=" + str(lora_dir), "--quiet"])


def test_serve_registers_the_embedded_checkpoints_for_the_demo_model(monkeypatch, lora_dir, tmp_path):
    from guidance import demo
    from server.config import DEMO_MODEL_NAME, ServerConfig, load_models

    committed = demo.embedded_checkpoints()
    assert all((path / "pytorch_lora_weights.safetensors").is_file() for path in committed.values())
    root = tmp_path / "checkpoints"
    (root / "dpo-test").mkdir(parents=True)
    for file in lora_dir.iterdir():
        (root / "dpo-test" / file.name).write_bytes(file.read_bytes())
    monkeypatch.setattr(demo, "DEFAULT_CHECKPOINTS_DIR", root)
    hosted = load_models(ServerConfig())
    assert hosted[DEMO_MODEL_NAME].checkpoints.describe() == [{"name": "dpo-test", "kind": "lora"}]
    # A model given with --model gets only the checkpoints given for it.
    assert load_models(ServerConfig(models={"m": demo.DEFAULT_MODEL_DIR}))["m"].checkpoints is None
