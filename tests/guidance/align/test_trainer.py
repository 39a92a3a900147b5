"""``nrg align`` training on tiny pipelines: the reference, shared noise, loss falls, determinism,
resuming, and the written LoRA loading into the server's checkpoint registry."""

import math

import pytest
import torch

from guidance.align import trainer
from guidance.align.config import AlignConfig
from guidance.align.data import orient_pairs
from guidance.align.lora import adapter_disabled, attach_lora, lora_parameters
from guidance.align.noising import model_timestep, prediction_errors, training_target
from guidance.align.report import REPORT_NAME
from guidance.align.scored_clips import load_scored_clips, write_scored_clips
from guidance.align.task import DpoTask
from guidance.checkpoints import CheckpointRegistry
from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.train.preference_data import load_preference_data, write_pairs
from guidance.train.reward import PromptCache

SHAPE = VideoShape(height=16, width=16, frames=5)
PROMPT = "a red circle moving left"
FAST = dict(lora_rank=4, lora_alpha=8, lr=1e-3, batch=4, beta=2000.0)


def _latent_shape(family):
    return tuple(family.prepare_latents(SHAPE, [torch.Generator().manual_seed(0)]).shape[1:])


def _pairs(tmp_path, family, count=16, same=False):
    """Winners around +0.5, losers around -0.5 (learnable); ``same``: both clips identical."""
    generator = torch.Generator().manual_seed(1)
    shape = _latent_shape(family)
    records = []
    for i in range(count):
        a = torch.randn(shape, generator=generator) * 0.3 + 0.5
        b = a.clone() if same else torch.randn(shape, generator=generator) * 0.3 - 0.5
        records.append({"prompt": PROMPT, "a": a, "b": b, "labels": {"x": "A" if i % 3 else "B"} if same else
                        {"x": "A"}, "split": "test" if i % 4 == 0 else "train", "shape": SHAPE})
        if not same and i % 3 == 0:  # some pairs stored the other way round
            records[-1].update(a=b, b=a, labels={"x": "B"})
    write_pairs(tmp_path, ["x"], records)
    return load_preference_data(tmp_path, family)


@pytest.fixture
def fresh(tiny_dir):
    """A freshly loaded tiny Wan pipeline (the adapter is attached to it, so never the shared one)."""
    return lambda family="wan": load_pipeline(tiny_dir(family))


def _randomise_lora(family, seed=3):
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _, p in lora_parameters(family):
            p.add_(0.3 * torch.randn_like(p))


def _inputs(family, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn((batch, *_latent_shape(family)), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([0.3, 0.8])[:batch]
    return x0, noise, t, PromptCache(family)([PROMPT] * batch)


@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_adapter_disabled_is_the_base_model_exactly(fresh, name):
    family = fresh(name)
    shape = SHAPE if name == "wan" else VideoShape(32, 32, 5)
    generator = torch.Generator().manual_seed(0)
    x0 = family.prepare_latents(shape, [generator, generator])
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([0.3, 0.8])
    cond = PromptCache(family)([PROMPT] * 2)
    with torch.no_grad():
        base = prediction_errors(family, family.transformer, x0, noise, t, cond, shape)
    attach_lora(family, 4, 8, ["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    with torch.no_grad():
        assert torch.equal(prediction_errors(family, family.transformer, x0, noise, t, cond, shape), base)  # B = 0
    _randomise_lora(family)
    with torch.no_grad():
        assert not torch.allclose(prediction_errors(family, family.transformer, x0, noise, t, cond, shape), base)
    with adapter_disabled(family):
        assert torch.equal(prediction_errors(family, family.transformer, x0, noise, t, cond, shape), base)
    assert all(p.requires_grad for _, p in lora_parameters(family))  # still trainable afterwards


def test_targets_follow_the_family_parameterisation(tiny_family):
    wan = tiny_family("wan")
    x0, noise = torch.randn(2, 3), torch.randn(2, 3)
    t = torch.tensor([0.2, 0.9])
    assert torch.equal(training_target(wan, x0, noise, t), noise - x0)
    assert model_timestep(wan, t).tolist() == pytest.approx([200.0, 900.0])
    cog = tiny_family("cogvideox")
    assert cog.prediction == "v"
    steps = model_timestep(cog, t)
    assert steps.dtype == torch.long and steps.tolist() == [200, 899]  # round(t * 999)
    expected = cog.pipe.scheduler.get_velocity(x0, noise, steps)
    assert torch.allclose(training_target(cog, x0, noise, t), expected, atol=1e-6)


def test_shared_noise_makes_identical_clips_cancel(fresh, tmp_path):
    """Winner == loser with shared noise and t: D(w) = D(l), so the loss is log 2 for any adapter. With
    independent noise draws the same clips would give a non-zero margin."""
    family = fresh()
    data = _pairs(tmp_path, family, count=8, same=True)
    config = AlignConfig(**FAST)
    attach_lora(family, 4, 8, config.targets, seed=0)
    _randomise_lora(family)
    pairs = orient_pairs(data, {"x": 1.0}, data.indices("train"))
    task = DpoTask(family, data, pairs, config, PromptCache(family))
    loss, accuracy = task.loss(0, list(range(len(pairs.index))))
    loss = loss.detach()
    assert float(loss) == pytest.approx(math.log(2), abs=1e-6) and accuracy == 0.0
    # The negative control: the same clips with their own noise tensors do not cancel.
    x0, noise, t, cond = _inputs(family)
    x0 = x0[:1].expand(2, *x0.shape[1:])
    with torch.no_grad():
        err = prediction_errors(family, family.transformer, x0, noise, t[:1].expand(2), cond, SHAPE)
        with adapter_disabled(family):
            ref = prediction_errors(family, family.transformer, x0, noise, t[:1].expand(2), cond, SHAPE)
    assert abs(float((err[0] - ref[0]) - (err[1] - ref[1]))) > 1e-6


def test_first_step_loss_is_log2_and_loss_falls(fresh, tmp_path):
    family = fresh()
    data = _pairs(tmp_path / "data", family)
    result = trainer.align(family, data, AlignConfig(**FAST, steps=24, eval_every=12), tmp_path / "out",
                           progress=False, log=None)
    losses = result.step_losses
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # B = 0: policy == reference
    assert sum(losses[-6:]) / 6 < 0.5 * math.log(2)
    report = result.report
    assert report["implicit_accuracy"]["accuracy"] > 0.9
    assert report["evaluations"][0]["step"] == 12 and report["steps"] == 24
    assert report["base_model"]["fingerprint"] and report["args"]["beta"] == 2000.0
    assert (tmp_path / "out" / REPORT_NAME).is_file()


def test_rwr_loss_falls_and_reports_held_out_pairs(fresh, tmp_path):
    family = fresh()
    generator = torch.Generator().manual_seed(2)
    shape = _latent_shape(family)
    records = [{"prompt": PROMPT, "clip": torch.randn(shape, generator=generator) * 0.3 + (i % 2),
                "rewards": {"x": float(i % 2)}, "split": "test" if i < 4 else "train", "shape": SHAPE}
               for i in range(16)]
    write_scored_clips(tmp_path / "data", ["x"], records)
    clips = load_scored_clips(tmp_path / "data", family, ["x"])
    result = trainer.align(family, clips, AlignConfig(method="flow-rwr", tau=0.5, steps=40, eval_every=40, **{**FAST, "lr": 1e-2}), tmp_path / "out",
                           progress=False, log=None)
    # The loss of one step is noisy (its t and noise are random); the error on the high-reward
    # training clips at fixed noise and t is not.
    good = torch.stack([clips.latents[i] for i in clips.indices("train") if float(clips.rewards[i, 0]) == 1.0])
    noise = torch.randn(good.shape, generator=torch.Generator().manual_seed(9))
    t = torch.linspace(0.1, 0.9, good.shape[0])
    cond = PromptCache(family)([PROMPT] * good.shape[0])
    with torch.no_grad():
        trained = prediction_errors(family, family.transformer, good, noise, t, cond, SHAPE).mean()
        with adapter_disabled(family):
            base = prediction_errors(family, family.transformer, good, noise, t, cond, SHAPE).mean()
    assert float(trained) < 0.8 * float(base), (float(trained), float(base))
    assert result.report["data"]["test_pairs"] == 2 and result.report["implicit_accuracy"]["pairs"] == 2
    assert result.report["data"]["weight_max"] == pytest.approx(2 * math.exp(2) / (1 + math.exp(2)), rel=1e-4)


def _lora_state(family):
    return {n: p.detach().clone() for n, p in lora_parameters(family)}


def test_deterministic_and_resume_equivalent(fresh, tmp_path):
    config = dict(**FAST, steps=10, eval_every=5, save_every=3)
    runs = []
    for name in ("a", "b"):
        family = fresh()
        data = _pairs(tmp_path / f"data-{name}", family)
        result = trainer.align(family, data, AlignConfig(**config), tmp_path / name, progress=False, log=None)
        runs.append((result, _lora_state(family)))
    assert runs[0][0].step_losses == runs[1][0].step_losses
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])

    family = fresh()
    data = _pairs(tmp_path / "data-c", family)
    stopped = trainer.align(family, data, AlignConfig(**config), tmp_path / "c", progress=False, log=None, stop_after=4)
    assert len(stopped.step_losses) == 4 and not (tmp_path / "c" / "pytorch_lora_weights.safetensors").exists()
    family = fresh()  # a new process would start from a fresh pipeline too
    resumed = trainer.align(family, data, AlignConfig(**config), tmp_path / "c", resume=True, progress=False, log=None)
    assert resumed.step_losses == runs[0][0].step_losses
    assert resumed.report["resumed_at"] == [4]
    assert resumed.report["evaluations"] == runs[0][0].report["evaluations"]
    state = _lora_state(family)
    assert all(torch.equal(state[k], runs[0][1][k]) for k in state)


def test_resume_refuses_other_settings(fresh, tmp_path):
    family = fresh()
    data = _pairs(tmp_path / "data", family, count=8)
    trainer.align(family, data, AlignConfig(**FAST, steps=2), tmp_path / "out", progress=False, log=None)
    with pytest.raises(ValueError, match=r"other settings: beta: 2000.0 \(now 10.0\)"):
        trainer.align(fresh(), data, AlignConfig(**{**FAST, "beta": 10.0}, steps=4), tmp_path / "out", resume=True,
                      progress=False, log=None)
    with pytest.raises(FileNotFoundError, match="has no saved state"):
        trainer.align(fresh(), data, AlignConfig(**FAST, steps=4), tmp_path / "none", resume=True, progress=False,
                      log=None)


def test_written_lora_loads_into_the_checkpoint_registry(fresh, tmp_path):
    family = fresh()
    data = _pairs(tmp_path / "data", family, count=8)
    trainer.align(family, data, AlignConfig(**FAST, steps=3), tmp_path / "ckpt", progress=False, log=None)
    _randomise_lora(family)  # make the adapter's effect large enough to see; then save it as trained
    from guidance.align.lora import save_lora

    save_lora(family, tmp_path / "ckpt")
    x0, noise, t, cond = _inputs(family)
    with torch.no_grad():
        trained = prediction_errors(family, family.transformer, x0, noise, t, cond, SHAPE)
        with adapter_disabled(family):
            base = prediction_errors(family, family.transformer, x0, noise, t, cond, SHAPE)
    served = fresh()
    registry = CheckpointRegistry(served, {"dpo": tmp_path / "ckpt"})
    assert registry.describe() == [{"name": "dpo", "kind": "lora"}]
    with torch.no_grad():
        registry.activate("dpo")
        assert torch.allclose(prediction_errors(served, served.transformer, x0, noise, t, cond, SHAPE), trained,
                              rtol=1e-5, atol=1e-7)
        registry.activate(None)
        assert torch.equal(prediction_errors(served, served.transformer, x0, noise, t, cond, SHAPE), base)
    assert not torch.allclose(trained, base)


def test_method_and_data_must_match(fresh, tmp_path):
    family = fresh()
    data = _pairs(tmp_path / "data", family, count=8)
    with pytest.raises(ValueError, match="flow-rwr trains on scored clips"):
        trainer.align(family, data, AlignConfig(method="flow-rwr", **FAST, steps=1), tmp_path / "o", progress=False,
                      log=None)
    with pytest.raises(ValueError, match="--lora-rank must be >= 1; got 0"):
        AlignConfig(lora_rank=0).validate()
    with pytest.raises(ValueError, match="give --steps or --epochs, not both"):
        AlignConfig(steps=1, epochs=1).validate()


def test_snapshots_are_the_lora_part_way(fresh, tmp_path):
    """``--snapshot-every 2`` of a 4-step run leaves step 2's LoRA, equal to a 2-step run's, beside the final one."""
    from safetensors.torch import load_file

    lora_file = "pytorch_lora_weights.safetensors"
    family = fresh()
    data = _pairs(tmp_path / "data", family, count=8)
    trainer.align(family, data, AlignConfig(**FAST, steps=2), tmp_path / "two", progress=False, log=None)
    family = fresh()
    result = trainer.align(family, data, AlignConfig(**FAST, steps=4, snapshot_every=2), tmp_path / "four",
                           progress=False, log=None)
    assert result.report["args"]["snapshots"] == ["step_000002"]
    part_way = load_file(trainer.snapshot_dir(tmp_path / "four", 2) / lora_file)
    two = load_file(tmp_path / "two" / lora_file)
    assert part_way.keys() == two.keys() and all(torch.equal(part_way[k], two[k]) for k in two)
    final = load_file(tmp_path / "four" / lora_file)
    assert any(not torch.equal(final[k], two[k]) for k in two)
    registry = CheckpointRegistry(fresh(), {"step2": trainer.snapshot_dir(tmp_path / "four", 2)})
    registry.activate("step2")


def test_a_cpu_budget_ends_the_run_early_with_its_lora_written(fresh, tmp_path):
    """A budget below one step's CPU time trains one step (never none) and writes it as the result."""
    family = fresh()
    data = _pairs(tmp_path / "data", family, count=8)
    result = trainer.align(family, data, AlignConfig(**FAST, steps=50, cpu_budget_s=1e-6), tmp_path / "out",
                           progress=False, log=None)
    assert result.report["steps"] == len(result.step_losses) == 1 and result.report["cpu_seconds"] > 0
    assert result.report["implicit_accuracy"] is not None
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()
    with pytest.raises(ValueError, match="--cpu-budget"):
        AlignConfig(**FAST, cpu_budget_s=0.0).validate()
