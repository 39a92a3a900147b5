"""The parts of ``benchmarks/gpu_check.sh``, and the markdown report it ends with.

::

    python -m benchmarks.gpu_check kernel  --work DIR [--dry-run]   # fused step vs copy / eager / torch.compile
    python -m benchmarks.gpu_check step    --work DIR [--dry-run]   # one denoising step, unguided vs guided
    python -m benchmarks.gpu_check batch   --work DIR [--dry-run]   # a guided batch step; peak memory vs estimate
    python -m benchmarks.gpu_check save-pipeline DIR [--dry-run]    # the random Wan pipeline, for bench_vs_diffusers
    python -m benchmarks.gpu_check report  --work DIR --out FILE    # gpu-check.md from what the parts wrote

The script's compile part is ``python -m benchmarks.compile_bench`` (its JSON in ``DIR/compile.json``).

``GPU_CHECK_DEVICE`` (default ``cuda``) names the device a part runs on: the script runs the batch part
again on ``cuda:1`` when the machine has two GPUs (the engine thread's device pinning, Triton launches
on a GPU other than 0). Every part's JSON records the torch / triton / diffusers versions it ran with.

Each part writes ``DIR/<part>.json`` after every measured row, so a part stopped by its time allowance
still reports the rows it finished. ``--dry-run`` runs the same code on CPU at tiny shapes (the tiny
Wan pipeline of ``guidance.testing.tiny``): its figures only show that the parts and the report work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: Latents of one sample, [channels, latent frames, height / 8, width / 8]: 81 frames at 832x480
#: (Wan2.1-1.3B's 480p) and at 1280x720 (Wan2.1-14B's 720p).
KERNEL_SHAPES = {"Wan2.1-1.3B 480p": (16, 21, 60, 104), "Wan2.1-14B 720p": (16, 21, 90, 160)}
KERNEL_BATCHES = (1, 4)
DRY_KERNEL_SHAPES = {"tiny (dry run)": (16, 5, 8, 8)}
DRY_KERNEL_BATCHES = (1, 2)
#: ``WanTransformer3DModel`` as configured in Wan-AI/Wan2.1-T2V-1.3B-Diffusers (transformer/config.json).
WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
#: UMT5-XXL's widths (the Wan text encoder), one layer instead of 24 and the tiny tokenizer's vocabulary
#: instead of 256384 entries: the real encoder has 5.7B parameters and only its output width (4096)
#: matters to the transformer.
UMT5_XXL_1_LAYER = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=1, num_heads=64,
                        relative_attention_num_buckets=32, relative_attention_max_distance=128,
                        feed_forward_proj="gated-gelu")
#: Wan's recommended flow shift at 480p (5.0 at 720p).
FLOW_SHIFT = 3.0
STEP_SHAPE = (480, 832, 81)  # height, width, frames
DRY_STEP_SHAPE = (64, 64, 17)
STEP_BATCHES = (1, 2)
#: The attention kernels the step part times the unguided step with (``--attention-backend``), each only
#: where the device runs it with what is installed; the dry run times one CPU kernel.
STEP_ATTENTION = ("_native_cudnn", "_native_flash", "_native_efficient", "flash", "_flash_3", "sage")
DRY_STEP_ATTENTION = ("_native_math",)
OBJECTIVES = ("vq", "mq", "ta")
TRUNK_BLOCKS = 4
DRY_TRUNK_BLOCKS = 1  # the tiny transformer has 2
STEPS, STEP_INDEX, CFG, STRENGTH = 50, 25, 5.0, 3.0
PROMPT = "a red circle moving left"
#: A first-block cache threshold no relative residual change reaches: every call after a row's first skips.
SKIP_EVERY_CALL = 1e9
#: Shares of skipped calls the cache part prices: the demo model's at thresholds 0.05, 0.1 and 0.2
#: (1.10x, 1.62x and 2.62x fewer full calls, docs/benchmarks.md).
CACHE_SKIP_SHARES = (0.09, 0.38, 0.62)


def _write(path: Path, data: dict[str, Any]) -> None:
    data.setdefault("versions", _versions())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _device(dry_run: bool) -> str:
    import torch

    if dry_run:
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: run with --dry-run on a machine without a GPU")
    device = os.environ.get("GPU_CHECK_DEVICE", "cuda")
    from guidance.precision import configure_matmul, pin_thread_device

    pin_thread_device(device)
    configure_matmul(device)
    return device


# --------------------------------------------------------------------------------------------- kernel


def run_kernel(work: Path, dry_run: bool) -> None:
    """benchmarks.kernel_bench's measurement (CUDA-event medians; copy, eager, torch.compile), per shape and B."""
    import torch

    from benchmarks import kernel_bench

    device = _device(dry_run)
    shapes, batches = (DRY_KERNEL_SHAPES, DRY_KERNEL_BATCHES) if dry_run else (KERNEL_SHAPES, KERNEL_BATCHES)
    iters, warmup = (3, 1) if dry_run else (50, 10)
    dtype_name, objectives, mode = "bf16", 3, "relative"
    dtype = kernel_bench.DTYPES[dtype_name]
    report: dict[str, Any] = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                              "dtype": dtype_name, "objectives": objectives, "mode": mode, "iters": iters,
                              "warmup": warmup, "dry_run": dry_run, "rows": []}
    for label, shape in shapes.items():
        numel = math.prod(shape)
        report["bytes_counting"] = kernel_bench.bytes_moved(1, objectives, numel, dtype, mode)[1]
        for batch in batches:
            args = kernel_bench.parse_args(["--batch", str(batch), "--objectives", str(objectives), "--dtype", dtype_name,
                                            "--mode", mode, "--iters", str(iters), "--warmup", str(warmup),
                                            "--shape", *map(str, shape)])
            start = time.perf_counter()
            rows = (kernel_bench.run_cpu if dry_run else kernel_bench.run_gpu)(args, shape, numel, dtype)
            for row in rows:
                row.update(model=label, shape=list(shape), wall_s=time.perf_counter() - start)
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
            _write(work / "kernel.json", report)


# ----------------------------------------------------------------------------------------------- step


def build_random_wan(dry_run: bool, device: str, dtype: Any):
    """A WanPipeline with random weights: the Wan2.1-T2V-1.3B transformer and VAE configurations and a
    one-layer UMT5 of UMT5-XXL's width (or, dry run, the tiny pipeline), built on ``device``."""
    import torch

    from guidance.testing.tiny import build_tiny_pipeline, tiny_t5_tokenizer

    if dry_run:
        return build_tiny_pipeline("wan").to(device=device, dtype=dtype)
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: seconds, not minutes on the CPU
        transformer = WanTransformer3DModel(**WAN_1_3B).eval()
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **UMT5_XXL_1_LAYER)).eval()
        vae = AutoencoderKLWan().eval()  # the defaults are Wan2.1's VAE
    transformer.to(dtype)
    # As from_pretrained(dtype=bf16) leaves it: the modules diffusers keeps in float32 stay float32.
    keep = transformer._keep_in_fp32_modules or []
    for name, param in transformer.named_parameters():
        if any(k in name.split(".") for k in keep):
            param.data = param.data.float()
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder.to(dtype), vae=vae.to(dtype),
                       transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _timer(device: str) -> Callable[[Callable[[], object], int, int], list[float]]:
    import torch

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def measure(fn: Callable[[], object], iters: int, warmup: int) -> list[float]:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
        return times

    return measure


def run_step(work: Path, dry_run: bool) -> None:
    """One denoising step (CFG on: two transformer passes, then the fused step) unguided, and guided:
    reward scores and their gradients through a trunk of the transformer's first blocks, then the fused
    step. Mode relative (the server's default; one backward pass per objective) and mode sum (one). Then
    the unguided step again on each attention kernel the device runs (``STEP_ATTENTION``)."""
    import torch

    from guidance.attention_backends import set_attention_backend
    from guidance.families.base import VideoShape
    from guidance.families.wan import WanFamily
    from guidance.reward_model import init_reward_model
    from guidance.rewards import reward_and_gradients
    from kernels.guided_step import guided_step, guided_step_backend

    device = _device(dry_run)
    dtype = torch.bfloat16
    height, width, frames = DRY_STEP_SHAPE if dry_run else STEP_SHAPE
    blocks = DRY_TRUNK_BLOCKS if dry_run else TRUNK_BLOCKS
    iters, warmup = (2, 1) if dry_run else (3, 1)
    shape = VideoShape(height=height, width=width, frames=frames)
    start = time.perf_counter()
    pipe = build_random_wan(dry_run, device, dtype)
    family = WanFamily(pipe)
    with torch.device(device):
        reward = init_reward_model(family, OBJECTIVES, num_blocks=blocks)
    if device == "cuda":
        torch.cuda.synchronize()
    config = dict(pipe.transformer.config)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dry_run": dry_run,
        "dtype": "bfloat16", "height": height, "width": width, "frames": frames,
        "transformer": {k: config[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim",
                                               "text_dim")},
        "transformer_params": sum(p.numel() for p in pipe.transformer.parameters()),
        "text_encoder_params": sum(p.numel() for p in pipe.text_encoder.parameters()),
        "trunk_blocks": blocks, "trunk_params": sum(p.numel() for p in reward.parameters()),
        "objectives": list(OBJECTIVES), "steps": STEPS, "step_index": STEP_INDEX, "cfg": CFG, "strength": STRENGTH,
        "iters": iters, "warmup": warmup, "build_s": time.perf_counter() - start, "rows": [],
    }
    timesteps = family.set_timesteps(STEPS, shape)
    timestep = timesteps[STEP_INDEX]
    level = family.noise_level(STEP_INDEX, timestep)
    coef_value = STRENGTH * min(family.guidance_ratio(STEP_INDEX, timestep), 10.0)
    dt_value = family.euler_dt(STEP_INDEX)
    measure = _timer(device)
    attention = _runnable_attention(device, dry_run)
    _write(work / "step.json", report)

    for batch in STEP_BATCHES:
        with torch.no_grad():
            cond, uncond = family.encode_prompts([PROMPT] * batch, [""] * batch)
            generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
            latents = family.prepare_latents(shape, generators)
        report["latent_shape"] = list(latents.shape[1:])
        report["kernel_backend"] = guided_step_backend(latents)
        model = family.denoiser(timestep)
        weights = torch.full((batch, len(OBJECTIVES)), 1.0 / len(OBJECTIVES), device=device)
        ones = torch.ones(batch, 1, device=device)
        t_vec = torch.full((batch,), level, dtype=torch.float32, device=device)
        per_sample = {"cfg_scale": torch.full((batch,), CFG, device=device),
                      "dt": torch.full((batch,), dt_value, device=device)}
        coef = torch.full((batch,), coef_value, device=device)

        @torch.no_grad()
        def denoise():
            pred_cond = family.predict(model, latents, timestep, cond, shape)
            pred_uncond = family.predict(model, latents, timestep, uncond, shape)
            return pred_cond, pred_uncond

        @torch.no_grad()
        def unguided():
            pred_cond, pred_uncond = denoise()
            return guided_step(pred_cond, None, None, None, pred_uncond=pred_uncond, x=latents, **per_sample)[0]

        def guided(mode: str) -> Callable[[], object]:
            @torch.no_grad()
            def step():
                pred_cond, pred_uncond = denoise()
                _, grads = reward_and_gradients(reward, latents, t_vec, cond, shape, weights,
                                                "sum" if mode == "sum" else "unit")
                step_weights = ones if mode == "sum" else weights
                return guided_step(pred_cond, grads, step_weights, coef, pred_uncond=pred_uncond, x=latents,
                                   mode=mode, **per_sample)[0]
            return step

        variants = [
            ("unguided", "2 transformer passes (CFG) + fused step", unguided),
            ("guided, mode relative",
             f"+ reward and {len(OBJECTIVES)} backward passes (one per objective) through the {blocks}-block trunk",
             guided("relative")),
            ("guided, mode sum", f"+ reward and 1 backward pass through the {blocks}-block trunk", guided("sum")),
        ]
        for name, what, fn in variants:
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            times = measure(fn, iters, warmup)
            row = {"batch": batch, "variant": name, "what": what, "ms": statistics.median(times), "times_ms": times,
                   "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
            base = next((r["ms"] for r in report["rows"] if r["batch"] == batch and r["variant"] == "unguided"), None)
            row["x_unguided"] = row["ms"] / base if base else 1.0
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
            _write(work / "step.json", report)
        native = next(r["ms"] for r in report["rows"] if r["batch"] == batch and r["variant"] == "unguided")
        for backend in attention:
            set_attention_backend(family, backend, reward)
            try:
                times = measure(unguided, iters, warmup)
            except Exception as exc:  # noqa: BLE001 - a kernel that refuses this shape is reported, not fatal
                print(f"attention {backend}: failed at B={batch}: {type(exc).__name__}: {exc}", flush=True)
                continue
            finally:  # diffusers made ``backend`` the process's default: back to native for the next rows
                family.transformer.set_attention_backend("native")
            row = {"batch": batch, "variant": f"unguided, attention {backend}",
                   "what": f"the unguided step with the denoiser's attention on {backend} (--attention-backend)",
                   "ms": statistics.median(times), "times_ms": times, "peak_gib": None}
            row["x_unguided"] = row["ms"] / native
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
            _write(work / "step.json", report)
        del latents, cond, uncond


def _runnable_attention(device: str, dry_run: bool) -> list[str]:
    """The step part's attention kernels that ``device`` runs with what is installed; the others are
    named in the log with the reason."""
    import torch

    from guidance.attention_backends import check_attention_backend

    runnable = []
    for name in DRY_STEP_ATTENTION if dry_run else STEP_ATTENTION:
        try:
            check_attention_backend(name, torch.device(device))
            runnable.append(name)
        except ValueError as exc:
            print(f"attention {name}: skipped ({exc})", flush=True)
    return runnable


# ---------------------------------------------------------------------------------------------- batch


def run_batch(work: Path, dry_run: bool, name: str = "batch") -> None:
    """One step of a server batch (``BatchState``, as the engine runs it) of the step part's random
    Wan2.1-1.3B at 480p x 81 frames: a row guided in mode relative, a ``best_of_n`` search row of
    2 particles and an unguided row of a per-row LoRA (rank 16 on the attention projections, random
    weights) (4 denoiser rows), CFG on, reward trunk of 4 blocks. Its peak device memory is set
    against the admission estimate of ``guidance.memory`` for those rows."""
    import torch
    from peft import LoraConfig

    from guidance.batch_state import BatchState
    from guidance.families.base import VideoShape
    from guidance.families.wan import WanFamily
    from guidance.memory import batch_estimate
    from guidance.multi_lora import MultiLora
    from guidance.nrg import GuidanceSpec
    from guidance.reward_model import init_reward_model
    from guidance.sample_types import SampleSpec

    device = _device(dry_run)
    dtype = torch.float32 if dry_run else torch.bfloat16
    height, width, frames = DRY_STEP_SHAPE if dry_run else STEP_SHAPE
    shape = VideoShape(height=height, width=width, frames=frames)
    start = time.perf_counter()
    pipe = build_random_wan(dry_run, device, dtype)
    family = WanFamily(pipe)
    with torch.device(device):
        reward = init_reward_model(family, OBJECTIVES, num_blocks=DRY_TRUNK_BLOCKS if dry_run else TRUNK_BLOCKS)
    # After the reward: its trunk copies the base transformer, as in the server.
    pipe.transformer.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian",
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="lora")
    pipe.transformer.disable_adapters()
    loras = MultiLora(pipe.transformer, {"lora": "lora"})
    weights = {OBJECTIVES[0]: 1.0}
    specs = [SampleSpec(PROMPT, seed=0, cfg_scale=CFG,
                        guidance=GuidanceSpec(weights, strength=STRENGTH, window=(0.0, 1.0), mode="relative")),
             SampleSpec(PROMPT, seed=1, cfg_scale=CFG,
                        guidance=GuidanceSpec(weights, window=(0.0, 1.0), mode="best_of_n", particles=2)),
             SampleSpec(PROMPT, seed=2, cfg_scale=CFG, lora="lora")]
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device != "cpu" else "cpu",
                              "device_name": device, "dry_run": dry_run, "dtype": str(dtype).removeprefix("torch."),
                              "height": height, "width": width, "frames": frames, "rows": []}
    batch = BatchState(family, shape, reward, loras=loras)
    batch.add(specs, STEPS, ["guided", "search", "lora"])
    report["build_s"] = time.perf_counter() - start
    _write(work / f"{name}.json", report)
    batch.step()  # step 0 is at t = 1, where guidance is skipped: a warm-up
    for step in (1, 2):
        if device != "cpu":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        began = time.perf_counter()
        progress = batch.step()
        if device != "cpu":
            torch.cuda.synchronize(device)
        estimate = batch_estimate(family, reward, shape)
        rows = batch.rows_in_use
        row = {"step": step, "rows": rows, "ms": (time.perf_counter() - began) * 1e3,
               "guided_reward": progress[0].rewards is not None,
               "estimate_gib": estimate.total(rows) / 2**30, "weights_gib": estimate.weights / 2**30,
               "reward_chunk_gib": estimate.reward / 2**30, "per_row_gib": estimate.per_row / 2**30,
               "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device != "cpu" else None}
        if row["peak_gib"]:
            row["estimate_over_peak"] = row["estimate_gib"] / row["peak_gib"]
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        _write(work / f"{name}.json", report)


def run_cache(work: Path, dry_run: bool) -> None:
    """What a skipped denoiser call costs (``--step-cache``): one unguided row of the step part's random
    Wan2.1-1.3B at 480p x 81 frames, CFG on, stepped with every call full (threshold 0) and with every call
    after its first skipped (a threshold no residual change reaches), ``BatchState`` steps as the engine runs
    them. The ratio bounds what caching saves: at a share ``s`` of calls skipped, a step takes
    ``1 - s + s x ratio`` of its time (``cost_at``). Random weights say nothing about how often a real model's
    first block stays still: that share comes from ``benchmarks.step_cache_bench`` on a trained model."""
    import torch

    from guidance.batch_state import BatchState
    from guidance.families.base import VideoShape
    from guidance.families.wan import WanFamily
    from guidance.sample_types import SampleSpec
    from guidance.step_cache import StepCache

    device = _device(dry_run)
    dtype = torch.float32 if dry_run else torch.bfloat16
    height, width, frames = DRY_STEP_SHAPE if dry_run else STEP_SHAPE
    shape = VideoShape(height=height, width=width, frames=frames)
    iters = 2 if dry_run else 3
    family = WanFamily(build_random_wan(dry_run, device, dtype))
    cache = StepCache(family)
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device != "cpu" else "cpu",
                              "dry_run": dry_run, "dtype": str(dtype).removeprefix("torch."), "height": height,
                              "width": width, "frames": frames, "cfg": CFG, "iters": iters, "rows": [],
                              "versions": _versions()}
    timer = _timer(device)
    for name, threshold in (("full", 0.0), ("skipped", SKIP_EVERY_CALL)):
        batch = BatchState(family, shape, step_cache=cache)
        batch.add([SampleSpec(PROMPT, seed=0, cfg_scale=CFG, cache_threshold=threshold)], STEPS, [name])
        batch.step()  # the row's first call always runs every block: its cache starts empty
        times = timer(batch.step, iters, 0)
        row = {"calls": name, "threshold": threshold, "ms": statistics.median(times), "times_ms": times,
               "cached_calls": batch.cached_calls[name]}
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        batch.remove([name])
        _write(work / "cache.json", report)
    full, skipped = (r["ms"] for r in report["rows"])
    report["skipped_over_full"] = skipped / full
    report["cost_at"] = {f"{share:g}": 1 - share + share * skipped / full for share in CACHE_SKIP_SHARES}
    _write(work / "cache.json", report)


# -------------------------------------------------------------------------------------- save-pipeline


def save_pipeline(out_dir: Path, dry_run: bool) -> None:
    """The step part's random pipeline, written as a diffusers directory (safetensors)."""
    import torch

    start = time.perf_counter()
    if dry_run:
        from guidance.testing.tiny import make_tiny

        make_tiny("wan", out_dir)
    else:
        # Built on the GPU (fast), saved in bfloat16: what the server and diffusers then load.
        pipe = build_random_wan(False, _device(False), torch.bfloat16)
        pipe.save_pretrained(str(out_dir), safe_serialization=True)
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    print(f"saved {out_dir} ({size / 2**30:.2f} GiB) in {time.perf_counter() - start:.1f} s", flush=True)


# --------------------------------------------------------------------------------------------- report


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("torch", "triton", "diffusers", "transformers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import torch

        versions["cuda"] = str(torch.version.cuda)
    except ImportError:
        pass
    return versions


def _gpu() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        return out or "nvidia-smi printed nothing"
    except (OSError, subprocess.SubprocessError) as error:
        return f"no GPU (nvidia-smi: {type(error).__name__})"


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _status(work: Path) -> dict[str, dict[str, Any]]:
    """``parts.tsv``: one line per part, name, exit status, seconds taken, seconds allowed."""
    parts: dict[str, dict[str, Any]] = {}
    try:
        lines = (work / "parts.tsv").read_text().splitlines()
    except OSError:
        return parts
    for line in lines:
        name, rc, took, allowed = line.split("\t")[:4]
        parts[name] = {"rc": int(rc), "took_s": float(took), "allowed_s": float(allowed)}
    return parts


def _failure(name: str, part: dict[str, Any] | None, work: Path) -> list[str]:
    """The lines of a part that failed or did not finish: why, and the end of its log."""
    if part is None:
        return [f"**Not run** (no status for part `{name}`).", ""]
    rc = part["rc"]
    why = (f"timed out after its {part['allowed_s']:.0f} s allowance" if rc in (124, 137)
           else f"exit status {rc}")
    return [f"**Failed** ({why}); the rows above, if any, are those it finished. End of its log:", "", "```",
            _tail(work / f"{name}.log"), "```", ""]


def _kernel_section(work: Path, part: dict[str, Any] | None, dry_run: bool) -> list[str]:
    lines = ["### Fused guided step vs a device copy, eager and `torch.compile` (`benchmarks.kernel_bench`)", ""]
    data = _read(work / "kernel.json")
    if data:
        lines += [f"bf16, K = {data['objectives']} objectives, mode {data['mode']}, CFG on, x given; median of "
                  f"{data['iters']} timed calls after {data['warmup']} warm-up calls "
                  + ("(host clock, PyTorch reference on CPU only)." if dry_run else "(CUDA events)."),
                  f"{data.get('bytes_counting', '')}.", ""]
        if dry_run:
            lines += ["| latents | B | reference (CPU) ms | GB/s |", "|---|---|---|---|"]
            for r in data["rows"]:
                lines.append(f"| {r['model']} {r['shape']} | {r['batch']} | {r['cpu_reference_ms']:.3f} | "
                             f"{r['cpu_reference_gbps']:.3f} |")
        else:
            lines += ["| latents | B | fused ms | fused GB/s | % of copy | copy GB/s | eager ms | compiled ms | "
                      "x eager | x compiled | max abs err |", "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in data["rows"]:
                compiled = r.get("compiled_ms")
                lines.append(
                    f"| {r['model']} {r['shape']} | {r['batch']} | {r['fused_ms']:.3f} | {r['fused_gbps']:.0f} | "
                    f"{100 * r['fused_gbps'] / r['copy_gbps']:.1f} | {r['copy_gbps']:.0f} | {r['eager_ms']:.3f} | "
                    + (f"{compiled:.3f}" if compiled else "failed") + f" | {r['eager_ms'] / r['fused_ms']:.2f} | "
                    + (f"{compiled / r['fused_ms']:.2f}" if compiled else "-")
                    + f" | {r['max_abs_err_vs_eager']:.3g} |")
        lines.append("")
    if part is None or part["rc"] != 0:
        lines += _failure("kernel", part, work)
    return lines


def _batch_section(work: Path, name: str, part: dict[str, Any] | None, dry_run: bool) -> list[str]:
    data = _read(work / f"{name}.json")
    where = data["device_name"] if data else name
    lines = [f"### A guided server batch step ({where}): peak memory vs the admission estimate", ""]
    if data:
        lines += [f"`BatchState` of the random Wan2.1-1.3B-config pipeline, {data['dtype']}, {data['width']}x"
                  f"{data['height']}, {data['frames']} frames: a row guided in mode relative and a best_of_n row of "
                  "2 particles, CFG on. Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items())
                  + ".", "", "| step | rows | ms | estimate GiB | peak GiB | estimate / peak |", "|---|---|---|---|---|---|"]
        for r in data["rows"]:
            peak = r["peak_gib"]
            lines.append(f"| {r['step']} | {r['rows']} | {r['ms']:.1f} | {r['estimate_gib']:.3f} | "
                         + (f"{peak:.3f} | {r['estimate_over_peak']:.2f} |" if peak else "- (CPU) | - |"))
        lines.append("")
    if part is None or part["rc"] != 0:
        lines += _failure(name, part, work)
    return lines


def _step_section(work: Path, part: dict[str, Any] | None, dry_run: bool) -> list[str]:
    lines = ["### One denoising step, random-weight Wan2.1-T2V-1.3B-config transformer, unguided vs guided", ""]
    data = _read(work / "step.json")
    if data:
        t = data["transformer"]
        lines += [
            f"{'Tiny 2-layer Wan (dry run)' if dry_run else 'WanTransformer3DModel'}: {t['num_layers']} layers, "
            f"{t['num_attention_heads']} heads of {t['attention_head_dim']}, ffn {t['ffn_dim']}, "
            f"{_millions(data['transformer_params'])} parameters, bf16, random weights; "
            f"{data['width']}x{data['height']}, {data['frames']} frames (latents {data.get('latent_shape')}); "
            f"CFG {data['cfg']} (two transformer passes per step), step {data['step_index']} of {data['steps']}, "
            f"fused step backend `{data.get('kernel_backend')}`. Reward: a {data['trunk_blocks']}-block trunk of the "
            f"transformer + query-pooling head ({_millions(data['trunk_params'])} parameters), "
            f"{len(data['objectives'])} objectives, equal weights. Text encoder: "
            + ("the tiny pipeline's." if dry_run else
               f"a random one-layer UMT5 of UMT5-XXL's width 4096 ({_millions(data['text_encoder_params'])} "
               "parameters; the real UMT5-XXL encoder has 5.7B); prompt encoding is not timed.")
            + f" Median of {data['iters']} steps after {data['warmup']} warm-up; build {data['build_s']:.1f} s.",
            "", "| B | step | ms / step | x unguided | peak GiB |", "|---|---|---|---|---|"]
        for r in data["rows"]:
            peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
            lines.append(f"| {r['batch']} | {r['variant']}: {r['what']} | {r['ms']:.1f} | {r['x_unguided']:.2f} | "
                         f"{peak} |")
        lines.append("")
    if part is None or part["rc"] != 0:
        lines += _failure("step", part, work)
    return lines


def _serve_section(work: Path, part: dict[str, Any] | None, dry_run: bool, serve_args: str) -> list[str]:
    lines = ["### nrg-serve vs plain diffusers on that random pipeline (`benchmarks.bench_vs_diffusers`)", ""]
    data = _read(work / "serve.json")
    if data:
        w = data["workload"]
        lines += [f"Command: `{data['command']}`.", "",
                  f"{w['num_prompts']} unguided requests per round, {w['size']} x {w['num_frames']} frames, "
                  f"{w['steps']} steps, CFG {w['guidance_scale']}, server max batch {w['max_batch']}; "
                  f"{w['warmup_requests']} untimed warm-up request(s) on each side; diffusers' frames written with "
                  f"{data.get('diffusers_export', 'export_to_video')}. Machine: {data['machine']}.", "",
                  "| round | side | requests/s | frames/s | time (s) | ratio |", "|---|---|---|---|---|---|"]
        for r in data["rounds"]:
            s, d = r["server"], r["diffusers"]
            mean_batch = s["batch_size"]["metrics"]["mean"]
            lines.append(f"| {r['round']} | nrg-serve (HTTP, batched, mean batch {mean_batch}) | "
                         f"{s['request_throughput']:.4f} | {s['frame_throughput']:.3f} | {s['duration_s']:.2f} | "
                         f"{r['throughput_ratio']:.2f} |")
            lines.append(f"| {r['round']} | diffusers `pipe()`, one by one | {d['request_throughput']:.4f} | "
                         f"{d['frame_throughput']:.3f} | {d['duration_s']:.2f} | 1.00 |")
        v = data.get("verify")
        lines += ["", f"Throughput ratio (server / diffusers, median of {len(data['rounds'])} round(s)): "
                  f"{data['throughput_ratio']:.2f}x."
                  + ("" if not v else f" Same first video as diffusers: {'yes' if v['same'] else 'NO'} "
                     f"(mean |diff| {v.get('mean_abs_diff_uint8')} vs codec error "
                     f"{v.get('codec_mean_abs_error_uint8')}, 0-255)."), ""]
    else:
        lines += [f"Command: `python -m benchmarks.bench_vs_diffusers {serve_args}`.", ""]
    if part is None or part["rc"] != 0:
        lines += _failure("serve", part, work)
    return lines


def _compile_section(work: Path, part: dict[str, Any] | None) -> list[str]:
    from benchmarks import compile_bench

    lines = ["### `--compile`: a server batch step eager vs compiled (`benchmarks.compile_bench`)", ""]
    data = _read(work / "compile.json")
    if data:
        model = ("the random-weight Wan2.1-T2V-1.3B-config pipeline, 4-block reward trunk" if data["model"] == "wan1.3b"
                 else "the tiny Wan pipeline (dry run)")
        lines += [f"Model: {model}. " + "\n".join(compile_bench.table(data)), ""]
    if part is None or part["rc"] != 0:
        lines += _failure("compile", part, work)
    return lines


def _cache_section(work: Path, part: dict[str, Any] | None) -> list[str]:
    lines = ["### `--step-cache`: a skipped denoiser call against a full one", ""]
    data = _read(work / "cache.json")
    if data:
        lines += [(f"One unguided row of the random Wan2.1-1.3B-config pipeline, {data['dtype']}, {data['width']}x"
                   f"{data['height']}, {data['frames']} frames, CFG {data['cfg']}: a `BatchState` step with every "
                   f"call full, and with every call after the row's first skipped; median of {data['iters']} steps."),
                  "", "| calls | ms / step | cached calls | x full |", "|---|---|---|---|"]
        full = data["rows"][0]["ms"]
        lines += [f"| {r['calls']} | {r['ms']:.1f} | {r['cached_calls']} | {r['ms'] / full:.3f} |" for r in data["rows"]]
        if "cost_at" in data:
            lines += ["", "A step's time at the demo model's shares of skipped calls (thresholds 0.05, 0.1, 0.2): "
                      + ", ".join(f"{share} skipped: {cost:.2f}x" for share, cost in data["cost_at"].items()) + "."]
        lines.append("")
    if part is None or part["rc"] != 0:
        lines += _failure("cache", part, work)
    return lines


def report(work: Path, out: Path, dry_run: bool, command: str, serve_args: str, commit: str) -> str:
    parts = _status(work)
    versions = _versions()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "GPU check" + (" (CPU dry run: tiny shapes, figures say nothing about a GPU)" if dry_run else "")
    lines = [f"## {title}, {now}", "",
             f"- command: `{command}`",
             f"- device: {_gpu()}; {os.cpu_count()} CPU cores; {platform.platform()}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
             f"- code: {commit}", ""]
    lines += ["| part | exit status | took (s) | allowance (s) |", "|---|---|---|---|"]
    for name, p in parts.items():
        lines.append(f"| {name} | {p['rc']} | {p['took_s']:.1f} | {p['allowed_s']:.0f} |")
    lines.append("")
    if "install" in parts and parts["install"]["rc"] != 0:
        lines += ["The install part failed; the parts below ran with whatever the machine had.", "", "```",
                  _tail(work / "install.log"), "```", ""]
    lines += _kernel_section(work, parts.get("kernel"), dry_run)
    lines += _step_section(work, parts.get("step"), dry_run)
    for name in [n for n in parts if n.startswith("batch")] or ["batch"]:
        lines += _batch_section(work, name, parts.get(name), dry_run)
    lines += _cache_section(work, parts.get("cache"))
    lines += _serve_section(work, parts.get("serve"), dry_run, serve_args)
    lines += _compile_section(work, parts.get("compile"))
    text = "\n".join(lines).rstrip() + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    names = ("kernel", "step", *[n for n in parts if n.startswith("batch")], "cache", "serve", "compile")
    combined = {"date": now, "command": command, "device": _gpu(), "versions": versions, "code": commit,
                "parts": parts, **{name: _read(work / f"{name}.json") for name in names}}
    _write(out.with_suffix(".json"), combined)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    for name in ("kernel", "step", "batch", "cache"):
        p = sub.add_parser(name)
        p.add_argument("--work", type=Path, required=True, help="folder for <part>.json")
        p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes")
    p = sub.add_parser("save-pipeline")
    p.add_argument("dir", type=Path)
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("report")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the markdown file (its .json beside it)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--command", default="bash benchmarks/gpu_check.sh")
    p.add_argument("--serve-args", default="")
    p.add_argument("--commit", default="unknown")
    args = parser.parse_args(argv)
    if args.part == "kernel":
        run_kernel(args.work, args.dry_run)
    elif args.part == "step":
        run_step(args.work, args.dry_run)
    elif args.part == "batch":
        run_batch(args.work, args.dry_run, os.environ.get("GPU_CHECK_PART", "batch"))
    elif args.part == "cache":
        run_cache(args.work, args.dry_run)
    elif args.part == "save-pipeline":
        save_pipeline(args.dir, args.dry_run)
    else:
        print(report(args.work, args.out, args.dry_run, args.command, args.serve_args, args.commit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
