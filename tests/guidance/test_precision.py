"""Default device and dtype, CUDA's matmul precision, and float16 guidance refused."""

import pytest
import torch

from guidance import precision
from guidance.batch_state import BatchState
from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.rewards import CallableReward
from guidance.sample_types import SampleSpec


def test_auto_is_bfloat16_on_cuda_and_float32_elsewhere():
    assert precision.resolve_dtype("auto", "cuda:1") == torch.bfloat16
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    assert precision.resolve_dtype("float16", "cuda") == torch.float16
    with pytest.raises(ValueError, match="dtype must be one of"):
        precision.resolve_dtype("half", "cpu")


def test_matmul_precision_is_high_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    precision.configure_matmul("cpu")
    assert calls == [] and torch.backends.cudnn.allow_tf32 is False
    precision.configure_matmul("cuda:0")
    assert calls == ["high"] and torch.backends.cudnn.allow_tf32 is True


def test_gradient_guidance_in_float16_is_refused(tiny_family):
    family = tiny_family("wan")
    reward = CallableReward(lambda x, t, e: x.flatten(1).mean(1, keepdim=True), ["a"])
    batch = BatchState(family, VideoShape(height=32, width=32, frames=5), reward)
    guided = SampleSpec(prompt="p", seed=0, guidance=GuidanceSpec(weights={"a": 1.0}))
    searched = SampleSpec(prompt="p", seed=1, guidance=GuidanceSpec(weights={"a": 1.0}, mode="best_of_n",
                                                                    particles=2))
    original = type(family).dtype
    type(family).dtype = property(lambda self: torch.float16)
    try:
        with pytest.raises(ValueError, match="bfloat16 or float32"):
            batch.add([guided], 2, ["g"])
        batch.add([searched], 2, ["s"])  # search takes no gradient: allowed
    finally:
        type(family).dtype = original
    assert batch.ids == ["s"]
