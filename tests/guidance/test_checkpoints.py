"""Named aligned checkpoints (LoRA and full weights) on the tiny Wan pipeline, switched in place."""

import copy

import pytest
import torch

from guidance.checkpoints import (
    CheckpointError,
    CheckpointRegistry,
    UnknownCheckpointError,
)
from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.sampler import SampleSpec, sample
from tests.guidance.random_lora import TARGETS, save_random_lora

SHAPE = VideoShape(height=16, width=16, frames=5)
STEPS = 2


def _frames(family):
    return sample(family, [SampleSpec("a red circle moving left", seed=5, cfg_scale=1.0)], SHAPE, STEPS).frames


def _save_peft_lora(transformer, path):
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        peft_model = get_peft_model(
            copy.deepcopy(transformer), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
        )
    peft_model.save_pretrained(str(path))
    return peft_model


def _save_full(transformer, path, seed, **save_kwargs):
    model = copy.deepcopy(transformer)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(str(path), safe_serialization=True, **save_kwargs)


@pytest.fixture(scope="module")
def setup(tiny_dir, tmp_path_factory):
    """A fresh pipeline (not the shared cached one), its base output, and a registry of four checkpoints."""
    family = load_pipeline(tiny_dir("wan"))
    base = _frames(family)
    root = tmp_path_factory.mktemp("checkpoints")
    references = {
        "lora": save_random_lora(family.transformer, root / "lora"),
        "peft.v2": _save_peft_lora(family.transformer, root / "peft"),
    }
    _save_full(family.transformer, root / "full", seed=3)
    _save_full(family.transformer, root / "full-b", seed=4, max_shard_size="20KB")
    assert (root / "full-b" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    registry = CheckpointRegistry(family, {
        "lora": root / "lora", "full": root / "full", "peft.v2": str(root / "peft"), "full-b": root / "full-b",
    })
    return family, registry, base, references


@pytest.fixture(scope="module")
def spare(tiny_dir):
    """Another fresh pipeline for registrations that must fail (and leave it untouched)."""
    return load_pipeline(tiny_dir("wan"))


def test_kinds_and_listing(setup):
    _, registry, _, _ = setup
    assert registry.names == ["lora", "full", "peft.v2", "full-b"]
    assert registry.describe() == [
        {"name": "lora", "kind": "lora"}, {"name": "full", "kind": "full"},
        {"name": "peft.v2", "kind": "lora"}, {"name": "full-b", "kind": "full"},
    ]
    assert registry.active is None


def test_switching_in_any_order_reproduces_each_output(setup):
    family, registry, base, _ = setup
    outputs = {None: base}
    # Covers A -> B -> A for lora/lora, full/full and lora/full pairs, and None after each kind.
    for name in ["lora", None, "full", None, "peft.v2", "full", "lora", "full-b", "full", "peft.v2", "lora",
                 "full-b", None]:
        registry.activate(name)
        assert registry.active == name
        frames = _frames(family)
        if name not in outputs:
            assert (frames - base).abs().max() > 1e-3, name
            outputs[name] = frames
        assert torch.equal(frames, outputs[name]), name
    distinct = [outputs[n] for n in registry.names]
    assert all((a - b).abs().max() > 1e-3 for i, a in enumerate(distinct) for b in distinct[i + 1:])


@pytest.mark.parametrize("name", ["lora", "peft.v2"])
def test_lora_acts_like_the_adapter_it_was_trained_as(setup, name):
    """Same denoiser output as the PEFT model that wrote the file, so alpha/r (2) was honoured."""
    family, registry, _, references = setup
    registry.activate(name)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 2, 4, 4, generator=gen)
    text = torch.randn(1, 8, 32, generator=gen)
    t = torch.tensor([700])
    with torch.no_grad():
        ours = family.transformer(latents, t, text, return_dict=False)[0]
        theirs = references[name](latents, t, text, return_dict=False)[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in family.transformer.parameters())


def test_activating_the_active_checkpoint_does_nothing(setup, monkeypatch):
    family, registry, _, _ = setup
    registry.activate("full")
    weight = family.transformer.blocks[0].attn1.to_q.base_layer.weight
    version = weight._version
    registry.activate("full")
    assert weight._version == version

    registry.activate("lora")
    calls = []
    monkeypatch.setattr(family.pipe, "set_adapters", lambda *a, **k: calls.append(a))
    registry.activate("lora")
    assert calls == []


def test_unknown_name_lists_registered_names_and_changes_nothing(setup):
    _, registry, _, _ = setup
    registry.activate("full")
    with pytest.raises(KeyError) as info:
        registry.activate("dpo")
    assert isinstance(info.value, UnknownCheckpointError)
    assert "'dpo'" in str(info.value) and "lora, full, peft.v2, full-b" in str(info.value)
    assert registry.active == "full"
    with pytest.raises(UnknownCheckpointError):
        registry.kind("dpo")


def test_mismatched_config_is_an_error(spare, tmp_path):
    transformer = spare.transformer
    other = type(transformer).from_config({**transformer.config, "num_layers": 1})
    other.save_pretrained(str(tmp_path / "small"), safe_serialization=True)
    with pytest.raises(CheckpointError, match=r"'small'.*small.*num_layers: 1 \(served: 2\)"):
        CheckpointRegistry(spare, {"small": tmp_path / "small"})


def test_pickle_only_and_missing_directories_are_errors(spare, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_lora_weights.bin").write_bytes(b"never read")
    (pickled / "diffusion_pytorch_model.ckpt").write_bytes(b"never read")
    with pytest.raises(CheckpointError, match=r"'old'.*pickled.*pickle files .*never loaded") as info:
        CheckpointRegistry(spare, {"old": pickled})
    assert "pytorch_lora_weights.safetensors" in str(info.value)  # says what is expected
    with pytest.raises(CheckpointError, match=r"'gone'.*nowhere does not exist"):
        CheckpointRegistry(spare, {"gone": tmp_path / "nowhere"})
    peft_only_weights = tmp_path / "peft"
    peft_only_weights.mkdir()
    (peft_only_weights / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="adapter_config.json"):
        CheckpointRegistry(spare, {"p": peft_only_weights})


@pytest.mark.parametrize("name", ["", "-dpo", ".dpo", "a b", "a/b", "x" * 65, "dpö"])
def test_bad_names_are_errors(spare, tmp_path, name):
    with pytest.raises(CheckpointError, match="invalid checkpoint name"):
        CheckpointRegistry(spare, {name: tmp_path})


@pytest.mark.parametrize("keys", [
    ["transformer.other_net.proj.lora_A.weight", "transformer.other_net.proj.lora_B.weight"],  # no such layer
    ["text_encoder.proj.lora_A.weight", "text_encoder.proj.lora_B.weight"],  # nothing for the transformer
])
def test_a_lora_for_another_model_is_an_error_and_leaves_the_pipeline_clean(spare, tmp_path, keys):
    from safetensors.torch import save_file

    good = tmp_path / "good"
    save_random_lora(spare.transformer, good)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    save_file({keys[0]: torch.ones(4, 24), keys[1]: torch.ones(24, 4)}, str(foreign / "pytorch_lora_weights.safetensors"))
    with pytest.raises(CheckpointError, match=r"'alien'.*foreign"):
        CheckpointRegistry(spare, {"good": good, "alien": foreign})
    assert not getattr(spare.transformer, "peft_config", None)


def test_no_checkpoints_is_a_registry_of_the_base_model(spare):
    registry = CheckpointRegistry(spare, {})
    assert registry.names == [] and registry.describe() == []
    registry.activate(None)
    with pytest.raises(UnknownCheckpointError, match="registered checkpoints: none"):
        registry.activate("dpo")


def _mixed_frames(family, registry, specs):
    return sample(family, specs, SHAPE, STEPS, loras=registry.multi_lora).frames


def test_a_batch_mixes_base_two_loras_and_scales_and_each_sample_is_as_alone(setup):
    """Per-sample adapters (guidance.multi_lora): base, two LoRAs, scales 0.5 / 1 / 2, in one batch."""
    family, registry, base, _ = setup
    registry.activate(None)
    specs = [SampleSpec("a red circle moving left", seed=5, cfg_scale=1.0, lora=lora, lora_scale=scale)
             for lora, scale in ((None, 1.0), ("lora", 1.0), ("peft.v2", 0.5), ("lora", 2.0), ("peft.v2", 1.0))]
    together = _mixed_frames(family, registry, specs)
    for row, spec in enumerate(specs):
        alone = _mixed_frames(family, registry, [spec])[0]
        assert (together[row] - alone).abs().max().item() <= 1e-4, spec
    assert torch.equal(_mixed_frames(family, registry, specs[:1])[0], base[0])  # no adapter: the base model
    # Scale 1 is the adapter as diffusers loads it (activated for the whole batch).
    for name, row in (("lora", 1), ("peft.v2", 4)):
        registry.activate(name)
        assert (together[row] - _frames(family)[0]).abs().max().item() <= 1e-4, name
    registry.activate(None)
    # The scales really scale: 0.5, 1 and 2 give three different outputs.
    assert (together[1] - together[3]).abs().max() > 1e-3 and (together[2] - together[4]).abs().max() > 1e-3


def test_lora_scale_zero_is_the_base_model_exactly(setup):
    family, registry, base, _ = setup
    registry.activate(None)
    spec = SampleSpec("a red circle moving left", seed=5, cfg_scale=1.0, lora="lora", lora_scale=0.0)
    assert torch.equal(_mixed_frames(family, registry, [spec]), base)


def test_per_sample_lora_needs_the_base_model_active_and_a_known_name(setup):
    family, registry, _, _ = setup
    spec = SampleSpec("a red circle moving left", seed=5, cfg_scale=1.0, lora="lora")
    registry.activate("lora")
    try:
        with pytest.raises(RuntimeError, match="PEFT's adapters disabled"):
            _mixed_frames(family, registry, [spec])
    finally:
        registry.activate(None)
    with pytest.raises(ValueError, match="sample 0: unknown LoRA checkpoint 'nope'; loaded: lora, peft.v2"):
        _mixed_frames(family, registry, [SampleSpec("a red circle", lora="nope")])
    with pytest.raises(ValueError, match="sample 0: LoRA 'lora' was requested but the batch has no adapters"):
        sample(family, [spec], SHAPE, STEPS)
