"""``--attention-backend``: the denoisers run the chosen kernel through diffusers' dispatcher, a kernel
this machine cannot run is refused in one line before any model loads, and the reward trunk stays on
native (guidance differentiates it)."""

from __future__ import annotations

import pytest
import torch

from guidance.attention_backends import CPU_BACKENDS, check_attention_backend, set_attention_backend
from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.reward_model import init_reward_model
from guidance.sampler import SampleSpec, sample

SHAPE = VideoShape(32, 32, 9)
SPECS = [SampleSpec("a red circle moving left", seed=1),
         SampleSpec("a blue square moving up", seed=2, guidance=GuidanceSpec({"vq": 1.0}, 5.0, (0.0, 1.0)))]


def _backends(module: torch.nn.Module) -> set:
    return {getattr(m.processor, "_attention_backend", None) for m in module.modules() if hasattr(m, "processor")}


@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "native"])
def test_a_cpu_backend_runs_the_denoiser_and_gives_natives_frames(tiny_dir, backend):
    family = load_pipeline(tiny_dir("wan"))  # its own copy: the backend is set on its modules
    reward = init_reward_model(family, ["vq"], num_blocks=1, seed=0)
    native = sample(family, SPECS, SHAPE, 3, reward=reward)
    set_attention_backend(family, backend, reward)
    try:
        assert _backends(family.transformer) == {backend} and _backends(reward.trunk) == {"native"}
        switched = sample(family, SPECS, SHAPE, 3, reward=reward)
    finally:  # diffusers made ``backend`` the process's default for modules that name none: undo that
        family.transformer.set_attention_backend("native")
    torch.testing.assert_close(switched.frames, native.frames, rtol=0, atol=1e-4)
    assert switched.guided_steps == native.guided_steps and switched.guided_steps[1] > 0


@pytest.mark.parametrize(("name", "device", "message"), [
    ("turbo", "cpu", "--attention-backend must be one of native, "),
    ("flash_hub", "cuda", "must be one of"),  # downloads kernels: never offered
    ("flash", "cpu", "--attention-backend flash needs a CUDA device; on cpu use one of native, _native_math"),
    ("sage", "cpu", "needs a CUDA device"),
])
def test_a_backend_this_machine_cannot_run_is_refused_in_one_line(name, device, message):
    with pytest.raises(ValueError, match="^[^\n]*$") as refused:
        check_attention_backend(name, torch.device(device))
    assert message in str(refused.value)


def test_a_missing_kernel_package_is_named():
    from diffusers.utils import is_flash_attn_available

    if is_flash_attn_available():
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ValueError, match="--attention-backend flash: .*flash-attn"):
        check_attention_backend("flash", torch.device("cuda"))


def test_a_family_outside_the_dispatcher_is_refused(tiny_family):
    family = tiny_family("cogvideox")
    set_attention_backend(family, "native")
    with pytest.raises(ValueError, match="CogVideoX's attention does not go through diffusers' dispatcher"):
        set_attention_backend(family, "flex")
