"""``--compile``: the compiled denoiser and reward trunk against eager, under continuous batching.

The suite's one compile-heavy module. Structure (equal frames, no graph break, no recompile after the
warm-up, the counter, the server) is checked with the ``aot_eager`` backend: it traces the same graphs
and partitions forward and backward, but generates no code, where inductor's C++ code generation takes tens of
seconds per graph on a loaded 2-core machine (84 s for the one inductor test below with an empty
cache; the structure tests compile about a dozen graphs). That test runs inductor itself, on the
fewest graphs that cover a LoRA row and a guided row. Nothing here measures time.
"""

from __future__ import annotations

import logging

import httpx
import pytest
import torch
from torch._dynamo.utils import counters

from guidance.batch_state import BatchState
from guidance.checkpoints import CheckpointRegistry
from guidance.compilation import check_backend, compile_model, compile_monitor, warm_up
from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from guidance.nrg import GuidanceSpec
from guidance.reward_model import init_reward_model
from guidance.sample_types import SampleSpec
from guidance.testing.tiny import make_tiny
from server import pipeline_defaults
from server.config import ServerConfig, load_models
from tests.guidance.random_lora import save_random_lora
from tests.server.conftest import running_server, wait_for

SHAPE = VideoShape(height=32, width=32, frames=9)
GUIDED = GuidanceSpec({"vq": 1.0}, 5.0, (0.0, 1.0))
#: Frames are in [0, 1]; inductor reorders and fuses float32 arithmetic, aot_eager does not.
INDUCTOR_TOLERANCE = {"rtol": 0, "atol": 5e-4}
EAGER_TOLERANCE = {"rtol": 0, "atol": 1e-5}


def _with_lora(family, directory):
    """``family`` with a random LoRA (r=4) registered as checkpoint ``lora``: its per-row adapters."""
    save_random_lora(family.transformer, directory)
    return CheckpointRegistry(family, {"lora": directory}).multi_lora


def _fresh(tiny_dir, tmp_path_factory):
    """A pipeline of its own (compiling changes its blocks), its LoRAs and an untrained reward model."""
    family = load_pipeline(tiny_dir("wan"))
    reward = init_reward_model(family, ["vq", "mq"], num_blocks=1, seed=0)  # copied from the base transformer
    return family, _with_lora(family, tmp_path_factory.mktemp("lora")), reward


def _continuous(family, reward, loras):
    """Rows joining and leaving between steps, at batch sizes 1, 2, 4, 3, 2, 1: a plain row with CFG, a
    guided row (a reward gradient every step), a LoRA row, and a half-scale LoRA row without CFG.
    Returns each sample's frames and the batch sizes stepped."""
    batch = BatchState(family, SHAPE, reward, loras=loras)
    frames, sizes = {}, []

    def step():
        sizes.append(batch.rows_in_use)
        batch.step()
        if batch.finished():
            done = batch.pop_finished()
            frames.update(zip(done.ids, done.frames))

    batch.add([SampleSpec("a red circle moving left", seed=1)], 3, ["plain"])
    step()
    batch.add([SampleSpec("a blue square moving up", seed=2, guidance=GUIDED)], 4, ["guided"])
    step()
    batch.add([SampleSpec("a green dot", seed=3, lora="lora")], 5, ["lora"])
    batch.add([SampleSpec("a white line", seed=4, cfg_scale=1.0, lora="lora", lora_scale=0.5)], 4, ["half"])
    while batch:
        step()
    return frames, sizes


@pytest.fixture(scope="module")
def compiled(tiny_dir, tmp_path_factory):
    """The eager run, then the same pipeline compiled with aot_eager and warmed up for batches of up to
    4 rows, and the compile counts at the end of the warm-up."""
    family, loras, reward = _fresh(tiny_dir, tmp_path_factory)
    eager, sizes = _continuous(family, reward, loras)
    assert sizes == [1, 2, 4, 3, 3, 2, 1]
    counters.clear()
    assert compile_model(family, reward, "aot_eager") == 3  # the denoiser's 2 blocks and the trunk's 1
    warmed = warm_up(family, reward, SHAPE, 4, max_rows=4, loras=loras)
    return family, loras, reward, eager, warmed, compile_monitor().counts()


def test_compiled_batches_give_eager_frames_and_compile_nothing_after_the_warm_up(compiled):
    family, loras, reward, eager, warmed, after_warm_up = compiled
    assert warmed.sizes == (1, 2, 3, 4) and warmed.compiles > 0
    frames, _ = _continuous(family, reward, loras)
    assert compile_monitor().counts().recompiles == after_warm_up.recompiles
    assert compile_monitor().counts().compiles == after_warm_up.compiles
    assert dict(counters["graph_break"]) == {}  # the LoRA hooks and the checkpointed trunk trace whole
    assert frames.keys() == eager.keys()
    for sample, video in eager.items():
        torch.testing.assert_close(frames[sample], video, **EAGER_TOLERANCE, msg=sample)
    assert not torch.equal(eager["lora"], eager["half"])


def test_a_compilation_after_the_warm_up_is_counted_and_logged(compiled, caplog):
    family, *_ = compiled
    other = VideoShape(height=16, width=16, frames=5)  # a shape the warm-up did not run
    before = compile_monitor().counts()
    latents = family.prepare_latents(other, [torch.Generator().manual_seed(0)])
    cond, _ = family.encode_prompts(["a dot"], None)
    with caplog.at_level(logging.WARNING, logger="guidance.compilation"), torch.no_grad():
        family.predict(family.transformer, latents, torch.tensor([500.0]), cond, other)
    after = compile_monitor().counts()
    assert after.recompiles > before.recompiles and after.recompile_seconds > before.recompile_seconds
    assert "compiled again after the warm-up" in caplog.text


def test_inductor_matches_eager_with_a_lora_row_and_a_guided_row(tiny_dir, tmp_path_factory):
    family, loras, reward = _fresh(tiny_dir, tmp_path_factory)
    specs = [SampleSpec("a blue square moving up", seed=2, cfg_scale=1.0, guidance=GUIDED),
             SampleSpec("a green dot", seed=3, cfg_scale=1.0, lora="lora")]

    def run():
        batch = BatchState(family, SHAPE, reward, loras=loras)
        batch.add(specs, 2, [0, 1])
        batch.step()
        batch.step()
        return batch.pop_finished()

    eager = run()
    compile_model(family, reward, "inductor")
    compiled = run()
    torch.testing.assert_close(compiled.frames, eager.frames, **INDUCTOR_TOLERANCE)
    torch.testing.assert_close(compiled.rewards, eager.rewards, rtol=0, atol=1e-4)
    assert compiled.guided_steps == eager.guided_steps and compiled.guided_steps[0] > 0


@pytest.mark.parametrize("variant", ["wan-i2v", "ltx"])
def test_image_rows_compile_nothing_after_the_warm_up(tiny_dir, variant):
    """An image-to-video model's rows (and an optional image's, beside text rows) reach the blocks with
    image tokens or condition channels: the warm-up runs those too, so serving them compiles nothing."""
    from tests.guidance.families.equivalence import test_image

    family = load_pipeline(tiny_dir(variant))
    reward = init_reward_model(family, ["vq"], num_blocks=1, seed=0)
    compile_model(family, reward, "aot_eager")
    warm_up(family, reward, SHAPE, 2, max_rows=2)
    after_warm_up = compile_monitor().counts()
    guided = GuidanceSpec({"vq": 1.0}, 5.0, (0.0, 1.0))
    specs = [SampleSpec("a red circle moving left", seed=1, image=test_image(1, 32, 32), guidance=guided),
             SampleSpec("a blue square moving up", seed=2, image=test_image(2, 32, 32))]
    if family.image_input == "optional":
        specs[1] = SampleSpec("a blue square moving up", seed=2)
    batch = BatchState(family, SHAPE, reward)
    batch.add(specs, 2, [0, 1])
    while batch:
        batch.step()
        if batch.finished():
            batch.pop_finished()
    assert compile_monitor().counts().recompiles == after_warm_up.recompiles


def test_the_server_warms_up_before_serving_and_exports_the_counter(tmp_path):
    directory = make_tiny("wan", tmp_path / "tiny")
    pipeline_defaults.write(directory, "wan")
    config = ServerConfig(models={"tiny": directory}, compile_backend="aot_eager", max_batch=2)
    models = load_models(config)
    blocks = models["tiny"].family.transformer.blocks
    assert all(hasattr(block.forward, "_torchdynamo_orig_callable") for block in blocks)

    def recompiles(client):
        line = next(line for line in client.get("/metrics").text.splitlines()
                    if line.startswith('nrg_recompiles_total{worker="local"}'))
        return float(line.split()[-1])

    with running_server(tmp_path, models, compile_backend="aot_eager", max_batch=2) as (url, _), \
            httpx.Client(base_url=url, timeout=60) as client:
        before = recompiles(client)
        jobs = [client.post("/v1/videos", json={"prompt": p, "num_inference_steps": 2, "seed": 1}).json()["id"]
                for p in ("a red circle moving left", "a blue square moving up")]
        assert [wait_for(client, job)["status"] for job in jobs] == ["completed", "completed"]
        assert recompiles(client) == before
        assert 'nrg_compile_seconds_total{phase="warmup",worker="local"}' in client.get("/metrics").text


@pytest.mark.parametrize(("backend", "device", "message"), [
    ("turbo", "cpu", "unknown torch.compile backend 'turbo'"),
    ("inductor", "meta", "supported on cpu and cuda"),
])
def test_a_backend_the_device_cannot_run_is_refused(backend, device, message):
    with pytest.raises(ValueError, match=message):
        check_backend(backend, torch.device(device))


def test_inductor_without_a_cpp_compiler_is_refused(monkeypatch):
    from torch._inductor import config

    monkeypatch.setattr(config.cpp, "cxx", ("no-such-c++-compiler",))
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
        check_backend("inductor", torch.device("cpu"))
    check_backend("aot_eager", torch.device("cpu"))


def test_generate_compiles_and_makes_the_eager_video(tiny_dir, tmp_path, monkeypatch, capsys):
    import numpy as np

    from guidance import compilation
    from server.cli import main

    compiled = []
    real = compilation.compile_model
    monkeypatch.setattr(compilation, "compile_model", lambda *a: compiled.append(a[2]) or real(*a))
    argv = ["generate", "--model", str(tiny_dir("wan")), "--prompt", "a red circle moving left", "--frames", "9",
            "--size", "32x32", "--steps", "2", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "eager.npy")]) == 0
    assert main([*argv, "--compile", "aot_eager", "--out", str(tmp_path / "compiled.npy")]) == 0
    assert compiled == ["aot_eager"]
    np.testing.assert_allclose(np.load(tmp_path / "compiled.npy"), np.load(tmp_path / "eager.npy"), rtol=0, atol=1e-5)
    with pytest.raises(SystemExit):
        main([*argv, "--compile", "turbo", "--out", str(tmp_path / "x.npy")])
    assert "argument --compile: invalid choice: 'turbo'" in capsys.readouterr().err
