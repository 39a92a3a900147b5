"""``PipelineFamily.offload_encoders`` (``nrg serve --offload-encoders``): diffusers' group offloading of the
text and image encoders, with the same videos, guided or not, and weights the admission estimate no longer
counts on the device."""

from __future__ import annotations

import pytest
import torch

from guidance import memory
from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.reward_model import init_reward_model
from guidance.sampler import SampleSpec, sample
from server.config import ServerConfig, load_models

SHAPE = VideoShape(height=16, width=16, frames=5)


def _has_offload_hook(module: torch.nn.Module) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and registry.get_hook("group_offloading") is not None


@pytest.mark.parametrize("name, encoders", [("wan", {"text_encoder"}), ("hunyuan", {"text_encoder", "text_encoder_2"}),
                                            ("wan-i2v", {"text_encoder", "image_encoder"})])
def test_every_encoder_is_offloaded_and_nothing_else(tiny_dir, name, encoders):
    family = load_pipeline(tiny_dir(name))
    assert set(family.encoders()) == encoders and not family.offloaded
    family.offload_encoders()
    assert family.offloaded == encoders
    for component, module in family.pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        leaves = [m for m in module.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
        hooked = [_has_offload_hook(m) for m in leaves]
        assert all(hooked) if component in encoders else not any(hooked), component


def test_offloaded_encoders_give_the_same_videos_guided_or_not(tiny_dir):
    plain, offloaded = load_pipeline(tiny_dir("wan")), load_pipeline(tiny_dir("wan"))
    offloaded.offload_encoders()
    reward = init_reward_model(plain, ["a"], num_blocks=1)
    guided = GuidanceSpec(weights={"a": 1.0}, strength=2.0)
    specs = [SampleSpec("a red circle", seed=1), SampleSpec("a blue square", seed=2, guidance=guided)]
    first = sample(plain, specs, SHAPE, 3, reward).frames
    second = sample(offloaded, specs, SHAPE, 3, reward).frames
    assert torch.equal(first, second)


def test_the_admission_estimate_counts_an_offloaded_encoder_by_its_two_largest_layers(tiny_dir):
    family = load_pipeline(tiny_dir("wan"))
    before = memory.batch_estimate(family, None, SHAPE)
    encoder = family.pipe.text_encoder
    family.offload_encoders()
    after = memory.batch_estimate(family, None, SHAPE)
    leaves = sorted((memory.module_bytes([m]) for m in encoder.modules() if not list(m.children())), reverse=True)
    assert before.weights - after.weights == memory.module_bytes([encoder]) - leaves[0] - leaves[1] > 0
    assert (after.reward, after.per_row) == (before.reward, before.per_row)


def test_the_server_flag_offloads_every_hosted_models_encoders(tiny_dir):
    hosted = load_models(ServerConfig(models={"mine": tiny_dir("wan")}, device="cpu", offload_encoders=True))
    assert hosted["mine"].family.offloaded == {"text_encoder"}
    plain = load_models(ServerConfig(models={"mine": tiny_dir("wan")}, device="cpu"))
    assert not plain["mine"].family.offloaded
